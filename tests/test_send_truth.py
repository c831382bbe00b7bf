"""Sending never lies: recorded before it leaves, a 250 is a delivery, an attempt that
stops between handing the message over and reading the answer is in doubt and asks.

A real SMTP server (aiosmtpd) on loopback that keeps the message and holds its
answer until the test lets it go; the tests synchronise on what the server saw,
never on time. ``eventpile send`` runs as a process of its own, to be interrupted
(Ctrl-C, TERM) or killed (-9) while the answer is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from eventpile.commands.operations import answer, retry
from eventpile.commands.worker import Worker
from eventpile.domain.events import utcnow
from eventpile.domain.operation import Operation, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.send import IN_DOUBT, SendMail
from eventpile.projections.operations import recent
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE, cli
from tests.test_send import free_port

WAIT_S = 60
"""The longest a test waits for the server or a process (a bound, not a pause)."""


class HoldingInbox:
    """Keeps each message as it arrives, then holds its answer until released."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.saw_data = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(message_from_bytes(envelope.content))
        self.saw_data.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, WAIT_S)
        return "250 OK"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Controller, HoldingInbox]]:
    inbox = HoldingInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{controller.port}")
    yield controller, inbox
    inbox.release.set()
    with contextlib.suppress(AssertionError):  # a test may have stopped it (aiosmtpd asserts)
        controller.stop()


@pytest.fixture
def home_ready(cli_env: Home, keyring: Any) -> Home:
    return cli_env


def eventpile(home: Home, *argv: str) -> subprocess.Popen[str]:
    """``eventpile ARGV`` as a process of its own on ``home``."""
    return subprocess.Popen(
        [sys.executable, "-c", "from eventpile.mail.cli import run; run()", *argv],
        env={**os.environ, "EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_send(home: Home, tmp_path: Path) -> subprocess.Popen[str]:
    body = tmp_path / "body.txt"
    body.write_text("Hello, Bob.\n")
    return eventpile(
        home,
        "--json",
        "send",
        "--to",
        "bob@example.org",
        "--subject",
        "Hi",
        "--body-file",
        str(body),
        "--from",
        "alice@example.org",
    )


def the_send(home: Home, **options: Any) -> tuple[MailApplication, Operation]:
    app = MailApplication(home, home.unlock(PASSPHRASE), **options)
    [record] = [r for r in recent(app.current("operations"), 10) if r["command"] == "SendMail"]
    state = app.load(Operation, uuid.UUID(record["id"]))
    assert state is not None
    return app, state


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_an_interrupt_while_the_answer_is_held_leaves_the_send_in_doubt(
    home_ready: Home, held: tuple[Controller, HoldingInbox], tmp_path: Path, stop: int
) -> None:
    _, inbox = held
    process = start_send(home_ready, tmp_path)
    assert inbox.saw_data.wait(WAIT_S), process.communicate()
    process.send_signal(stop)
    _out, err = process.communicate(timeout=WAIT_S)
    inbox.release.set()
    assert process.returncode == 130
    assert err.strip().splitlines() == [
        "eventpile: interrupted (what was written before stays written)"
    ]
    app, state = the_send(home_ready)
    try:
        assert state.status is Status.WAITING, state
        assert state.question is not None and state.question.prompt == IN_DOUBT
        assert list(state.question.choices) == ["send-again", "mark-sent"]
        assert "refused" not in state.message and state.result.get("delivered") is not False
        assert len(inbox.received) == 1
        # sending again keeps the Message-ID and the Date: receivers can tell the copies apart
        _answered, again = answer(app, state.id, "send-again")
        assert again is not None and again.status is Status.COMPLETE
        assert len(inbox.received) == 2
        first, second = inbox.received
        assert (first["Message-ID"], first["Date"]) == (second["Message-ID"], second["Date"])
    finally:
        app.close()


def test_a_send_killed_while_the_answer_is_held_is_recorded_and_asks_when_taken_up(
    home_ready: Home, held: tuple[Controller, HoldingInbox], tmp_path: Path
) -> None:
    _, inbox = held
    process = start_send(home_ready, tmp_path)
    assert inbox.saw_data.wait(WAIT_S), process.communicate()
    process.kill()
    process.communicate(timeout=WAIT_S)
    inbox.release.set()
    app, state = the_send(home_ready)
    try:  # recorded before a byte left, and in doubt since it handed the message over
        assert state.status is Status.RUNNING and state.in_doubt is not None
        assert state.lease_until is not None and state.lease_until > utcnow()
    finally:
        app.close()
    later = MailApplication(
        home_ready,
        home_ready.unlock(PASSPHRASE),
        clock=lambda: utcnow() + timedelta(seconds=later.lease_s + 60),
    )
    try:  # taken up after its lease: it asks, it does not send again
        taken = later.run(state.id)
        assert taken.status is Status.WAITING and taken.question is not None
        assert taken.question.prompt == IN_DOUBT
        assert len(inbox.received) == 1
        answered, marked = answer(later, state.id, "mark-sent")
        assert answered.status is Status.COMPLETE
        assert marked is not None and marked.message == "Marked sent, as you said"
        assert len(inbox.received) == 1
    finally:
        later.close()


def test_a_connection_lost_after_the_message_was_handed_over_is_in_doubt(
    home_ready: Home, held: tuple[Controller, HoldingInbox]
) -> None:
    controller, inbox = held
    app = MailApplication(home_ready, home_ready.unlock(PASSPHRASE))

    def drop_the_connection() -> None:
        assert inbox.saw_data.wait(WAIT_S)
        controller.stop()
        inbox.release.set()

    dropper = threading.Thread(target=drop_the_connection)
    dropper.start()
    try:
        state = app.execute(
            SendMail.compose("alice@example.org", ["bob@example.org"], "Hi", "Hello.\n")
        )
        dropper.join(WAIT_S)
        assert state.status is Status.WAITING
        assert state.question is not None and state.question.prompt == IN_DOUBT
        assert state.result == {"delivered": None}
        assert len(inbox.received) == 1
    finally:
        app.close()


def test_the_send_command_prints_its_operation_as_one_json_document(
    home_ready: Home, held: tuple[Controller, HoldingInbox], tmp_path: Path
) -> None:
    _, inbox = held
    inbox.release.set()
    process = start_send(home_ready, tmp_path)
    out, err = process.communicate(timeout=WAIT_S)
    assert (process.returncode, err) == (0, "")
    assert json.loads(out)["operation"]["status"] == "complete"
    assert len(inbox.received) == 1


def test_retry_answers_a_refusal_question_and_the_entry_names_what_it_started(
    home_ready: Home, held: tuple[Controller, HoldingInbox]
) -> None:
    controller, inbox = held
    inbox.release.set()
    refusing = Refusing()
    controller.handler = refusing
    app = MailApplication(home_ready, home_ready.unlock(PASSPHRASE))
    try:
        state = app.execute(
            SendMail.compose("alice@example.org", ["bob@example.org"], "Hi", "Hello.\n")
        )
        assert state.status is Status.WAITING and state.result == {"delivered": False, "code": 554}
        refusing.code = 250
        again = retry(app, state.id)  # what the question means
        assert again.status is Status.COMPLETE and again.message == "Sent"
        answered = app.require(Operation, state.id)
        assert answered.message.endswith(f"answered retry: operation {again.id.hex}")
        assert [m["Subject"] for m in refusing.received] == ["Hi"]
    finally:
        app.close()


def test_an_answer_whose_follow_up_a_worker_took_first_reports_it_and_succeeds(
    home_ready: Home, held: tuple[Controller, HoldingInbox]
) -> None:
    """The answer is recorded; a worker claims the follow-up before this process runs
    it: the answer does not fail, it reports the worker's attempt."""
    controller, inbox = held
    inbox.release.set()
    refusing = Refusing()
    controller.handler = refusing
    keyring = home_ready.unlock(PASSPHRASE)
    worker = MailApplication(home_ready, keyring)

    class Racing(MailApplication):
        def run(self, operation_id: uuid.UUID, **options: Any) -> Operation:
            state = worker.require(Operation, operation_id)
            worker.claim([state])  # the worker is first
            return super().run(operation_id, **options)

    app = Racing(home_ready, keyring)
    try:
        state = app.execute(
            SendMail.compose("alice@example.org", ["bob@example.org"], "Hi", "Hello.\n")
        )
        refusing.code = 250
        answered, follow_up = answer(app, state.id, "retry")
        assert answered.status is Status.COMPLETE
        assert follow_up is not None and follow_up.status is Status.RUNNING
        assert follow_up.worker == worker.worker and not refusing.received
    finally:
        app.close()
        worker.close()


class Refusing:
    """Answers DATA with ``code`` (554 first), keeping what it accepts."""

    def __init__(self) -> None:
        self.code = 554
        self.received: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.code == 250:
            self.received.append(message_from_bytes(envelope.content))
            return "250 OK"
        return f"{self.code} 5.7.1 not now"


def test_ops_shows_an_operation_whose_worker_stopped_as_stale(
    home_ready: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = home_ready.unlock(PASSPHRASE)
    app = MailApplication(home_ready, keyring)
    an_hour_ago = MailApplication(home_ready, keyring, clock=lambda: utcnow() - timedelta(hours=1))
    try:
        waiting = app.submit(SendMail.compose("a@example.org", ["b@example.org"], "Hi", "."))
        fresh = app.submit(SendMail.compose("a@example.org", ["c@example.org"], "Hi", "."))
        an_hour_ago.claim([waiting])  # its lease ended 55 minutes ago
        app.claim([app.require(Operation, fresh.id)])
    finally:
        app.close()
        an_hour_ago.close()
    code, queue, _ = cli(["ops"], capsys)
    assert code == 0
    assert {op["id"]: (op["status"], op["stale"]) for op in queue["operations"]} == {
        waiting.id.hex: ("running", True),
        fresh.id.hex: ("running", False),
    }


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_a_worker_stopped_while_the_answer_is_held_releases_the_send_in_doubt(
    home_ready: Home, held: tuple[Controller, HoldingInbox], stop: int
) -> None:
    _, inbox = held
    app = MailApplication(home_ready, home_ready.unlock(PASSPHRASE))
    try:
        queued = app.submit(SendMail.compose("alice@example.org", ["bob@example.org"], "Hi", "."))
    finally:
        app.close()
    worker = eventpile(home_ready, "worker")
    assert inbox.saw_data.wait(WAIT_S), worker.communicate()
    worker.send_signal(stop)
    worker.communicate(timeout=WAIT_S)
    inbox.release.set()
    app = MailApplication(home_ready, home_ready.unlock(PASSPHRASE))
    try:  # the attempt ended at once (no lease to wait out), asking
        state = app.require(Operation, queued.id)
        assert state.status is Status.WAITING and state.lease_until is None
        assert state.question is not None and state.question.prompt == IN_DOUBT
        assert len(inbox.received) == 1
    finally:
        app.close()


def test_several_workers_send_each_mail_once(
    home_ready: Home, held: tuple[Controller, HoldingInbox]
) -> None:
    """Workers in threads of their own, each with its application (its connections),
    drain one queue together: every mail is delivered once and recorded as sent."""
    _, inbox = held
    inbox.release.set()
    keyring = home_ready.unlock(PASSPHRASE)
    app = MailApplication(home_ready, keyring)
    try:
        queued = [
            app.submit(SendMail.compose("a@example.org", ["b@example.org"], f"n{n}", "."))
            for n in range(12)
        ]
    finally:
        app.close()
    ran: list[list[Any]] = []
    failures: list[BaseException] = []

    def work() -> None:
        mine = MailApplication(home_ready, keyring)
        try:
            ran.append(Worker(mine).drain())
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)
        finally:
            mine.close()

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_S)
    assert not failures
    subjects = sorted(str(m["Subject"]) for m in inbox.received)
    assert subjects == sorted(f"n{n}" for n in range(12))
    assert sum(len(done) for done in ran) == 12
    app = MailApplication(home_ready, keyring)
    try:
        states = [app.require(Operation, op.id) for op in queued]
        assert {(s.status, s.message, s.attempts) for s in states} == {(Status.COMPLETE, "Sent", 1)}
    finally:
        app.close()
