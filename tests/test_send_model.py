"""Sending under random programs: send, send later, workers, answers, cancels and
retries, against a real SMTP server that accepts, defers (4xx), refuses (5xx), is
down, or keeps the message and holds its answer while the process is interrupted
(Ctrl-C) or dies (as kill -9: nothing more is written), on SQLite and PostgreSQL.

After every step: no mail is delivered twice except through an in-doubt question
answered ``send-again``; no mail is delivered after it was cancelled; an operation
recorded as sent was delivered. After a final healthy phase (the server accepts,
refusal questions answered ``retry``, workers run until nothing is due) every mail
that was neither cancelled nor left in doubt was delivered; the operation log, the
queue and the feed equal their rebuilds.

Ctrl-C and the death are signals sent to the main thread by the server's thread
once it holds the message: the send is inside ``DATA``, waiting for the answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections import Counter
from email import message_from_bytes
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import hypothesis
from aiosmtpd.controller import Controller
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventpile.commands.dispatcher import CommandFailed
from eventpile.commands.operations import answer, cancel, retry
from eventpile.commands.worker import Worker
from eventpile.domain.aggregate import DomainError
from eventpile.domain.operation import Operation, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.send import IN_DOUBT, SendMail
from eventpile.projections.feed import all_entries
from eventpile.projections.operations import recent
from eventpile.store.home import Home
from eventpile.store.postgres import connect
from eventpile.testing.postgres import on_postgres
from tests.test_operations import Clock
from tests.test_send import free_port

MODES = ("accept", "defer", "refuse", "down", "interrupt", "die")
HOLD_S = 30
"""The longest the server holds an answer (a bound: the test releases it at once)."""
PASSPHRASE = "send model passphrase"
LONG = settings.default.max_examples > 100  # the ``long`` profile


class Died(BaseException):
    """The process died here (kill -9): nothing below the handler records anything."""


def _die(signum: int, frame: object) -> None:
    raise Died


class Mailroom:
    """The server's side: answers by mode, counts what it kept by Message-ID."""

    def __init__(self) -> None:
        self.mode = "accept"
        self.kept: Counter[str] = Counter()
        self.release = threading.Event()
        self.main = threading.main_thread().ident

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.mode == "defer":
            return "451 4.3.0 try again later"
        if self.mode == "refuse":
            return "554 5.7.1 not accepted"
        self.kept[message_from_bytes(envelope.content)["Message-ID"]] += 1
        if self.mode in ("interrupt", "die"):
            assert self.main is not None
            signal.pthread_kill(
                self.main, signal.SIGINT if self.mode == "interrupt" else signal.SIGUSR1
            )
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, HOLD_S)
        return "250 OK"


class SendingModel(RuleBasedStateMachine):
    """The machine; the home is SQLite, or a database of ``database_server``."""

    database_server: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventpile-send-model-"))
        url = None
        if self.database_server is not None:
            url = _new_database(self.database_server)
        self.home = Home(self.directory / "home", url)
        self.keyring = self.home.init(PASSPHRASE)
        self.clock = Clock()
        self.app = MailApplication(self.home, self.keyring, clock=self.clock)
        self.mailroom = Mailroom()
        self.controller = Controller(self.mailroom, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.down = free_port()  # nothing listens there
        self.mails: dict[str, uuid.UUID] = {}
        """Message-ID: the operation that sends it first."""
        self.send_again: Counter[str] = Counter()
        self.cancelled_at: dict[str, int] = {}
        """Message-ID: what the server had kept when its sending was cancelled."""
        self.sequence = 0
        self.previous_handler = signal.signal(signal.SIGUSR1, _die)
        self.previous_smtp = os.environ.get("EVENTPILE_SMTP")

    # the world ---------------------------------------------------------------------------

    def _server(self, mode: str) -> None:
        self.mailroom.mode = mode
        self.mailroom.release.clear()
        port = self.down if mode == "down" else self.controller.port
        os.environ["EVENTPILE_SMTP"] = f"127.0.0.1:{port}"

    def _attempt(self, action: Any) -> Any:
        """Run an action that may deliver: an interrupt or a death in the held answer ends
        it as it would end the process; what the server holds is released after."""
        try:
            return action()
        except (KeyboardInterrupt, Died):
            return None
        except (DomainError, CommandFailed):
            return None
        finally:
            self.mailroom.release.set()

    def _compose(self) -> SendMail:
        self.sequence += 1
        mail = SendMail.compose(
            "alice@example.org", ["bob@example.org"], f"note {self.sequence}", "Hello.\n"
        )
        return mail

    # rules -------------------------------------------------------------------------------

    @rule(mode=st.sampled_from(MODES))
    def send(self, mode: str) -> None:
        """``eventpile send``: recorded before it leaves."""
        self._server(mode)
        mail = self._compose()
        before = self.app.max_position()
        self._attempt(lambda: self.app.execute(mail))
        assert self.app.max_position() > before, "a send left no record"
        self.mails[mail.message_id] = self._first_operation(mail.message_id)
        state = self.app.require(Operation, self.mails[mail.message_id])
        hypothesis.event(f"send, server {mode}: {state.status}")

    @rule()
    def send_later(self) -> None:
        """``eventpile send --after``: the worker sends it."""
        mail = self._compose()
        state = self.app.submit(mail, run_after=self.clock())
        self.mails[mail.message_id] = state.id

    @rule(mode=st.sampled_from(MODES))
    def work(self, mode: str) -> None:
        """Time passes (past leases and retry times), then a worker drains the queue."""
        self._server(mode)
        self.clock.advance(hours=3)
        self._attempt(lambda: Worker(self.app).drain())
        self.app.catch_up()

    @precondition(lambda self: self.mails)
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def answer_one(self, data: st.DataObject, mode: str) -> None:
        waiting = [op for op in self._operations() if op.status is Status.WAITING]
        if not waiting:
            return
        op = data.draw(st.sampled_from(waiting), "operation")
        assert op.question is not None
        choice = data.draw(st.sampled_from(sorted(op.question.choices)), "choice")
        self._server(mode)
        message_id = self._message_id(op)
        if choice == "send-again":
            self.send_again[message_id] += 1
        elif op.question.choices[choice] is None:  # an answer that cancels
            self.cancelled_at.setdefault(message_id, self.mailroom.kept[message_id])
        self._attempt(lambda: answer(self.app, op.id, choice))
        self.app.catch_up()
        hypothesis.event(f"answer {choice}, server {mode}")

    @precondition(lambda self: self.mails)
    @rule(data=st.data())
    def cancel_one(self, data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(self._operations()), "operation")
        try:
            cancel(self.app, op.id)
        except DomainError:
            return
        message_id = self._message_id(op)
        self.cancelled_at.setdefault(message_id, self.mailroom.kept[message_id])

    @precondition(lambda self: self.mails)
    @rule(data=st.data(), mode=st.sampled_from(MODES))
    def retry_one(self, data: st.DataObject, mode: str) -> None:
        op = data.draw(st.sampled_from(self._operations()), "operation")
        self._server(mode)
        if op.status is Status.WAITING and op.question and op.question.prompt == IN_DOUBT:
            return  # retry answers only a question that offers retry
        self._attempt(lambda: retry(self.app, op.id))
        self.app.catch_up()

    # laws --------------------------------------------------------------------------------

    @invariant()
    def never_twice_nor_after_a_cancel(self) -> None:
        for message_id, kept in self.mailroom.kept.items():
            assert kept <= 1 + self.send_again[message_id], f"{message_id} delivered {kept}x"
        for message_id, kept_then in self.cancelled_at.items():
            deliveries_since = self.mailroom.kept[message_id] - kept_then
            assert deliveries_since <= self.send_again[message_id], "delivered after a cancel"

    @invariant()
    def recorded_as_sent_means_delivered(self) -> None:
        for op in self._operations():
            sent = op.status is Status.COMPLETE and op.result.get("delivered") is True
            if sent and not op.result.get("marked"):
                assert self.mailroom.kept[self._message_id(op)] >= 1, op

    def teardown(self) -> None:
        try:
            self._healthy_phase()
        finally:
            signal.signal(signal.SIGUSR1, self.previous_handler)
            if self.previous_smtp is None:
                os.environ.pop("EVENTPILE_SMTP", None)
            else:
                os.environ["EVENTPILE_SMTP"] = self.previous_smtp
            self.mailroom.release.set()
            self.controller.stop()
            self.app.close()
            _remove(self.home, self.database_server)

    def _healthy_phase(self) -> None:
        """The server accepts; the user answers ``retry`` to refusals and retries the
        sends that failed for good (of mails the server never had); workers run."""
        self._server("accept")
        for _ in range(12):
            for op in self._operations():
                question = op.question
                if op.status is Status.WAITING and question and "retry" in question.choices:
                    self._attempt(lambda op=op: answer(self.app, op.id, "retry"))
                gave_up = op.status is Status.FAILED and op.command == "SendMail"
                if gave_up and not self.mailroom.kept[self._message_id(op)]:
                    self._attempt(lambda op=op: retry(self.app, op.id))
            self.clock.advance(hours=3)
            self._attempt(lambda: Worker(self.app).drain())
        self.never_twice_nor_after_a_cancel()
        in_doubt = {
            self._message_id(op)
            for op in self._operations()
            if op.status is Status.WAITING and op.question and op.question.prompt == IN_DOUBT
        }
        for message_id in self.mails:
            if message_id not in self.cancelled_at and message_id not in in_doubt:
                assert self.mailroom.kept[message_id] >= 1, f"{message_id} never delivered"
        for view in self.app.views.values():
            assert view.verify(self.app), f"{view.name} differs from its rebuild"
        feed = {e["id"]: e["status"] for e in all_entries(self.app.current("feed"))}
        assert feed == {op.id.hex: op.status.value for op in self._operations()}

    # helpers -----------------------------------------------------------------------------

    def _operations(self) -> list[Operation]:
        rows = recent(self.app.current("operations"), 10_000)
        found = [self.app.require(Operation, uuid.UUID(r["id"])) for r in rows]
        return [op for op in found if op.command in ("SendMail", "MarkSent")]

    def _first_operation(self, message_id: str) -> uuid.UUID:
        for op in self._operations():
            if op.command == "SendMail" and op.private_args.get("message_id") == message_id:
                return op.id
        raise AssertionError(f"no operation sends {message_id}")

    def _message_id(self, op: Operation) -> str:
        while op.command != "SendMail":
            assert op.parent_id is not None
            op = self.app.require(Operation, op.parent_id)
        return str(op.private_args["message_id"])


def _new_database(server: str) -> str:
    name = f"eventpile_send_{uuid.uuid4().hex[:16]}"
    with connect(server) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def _remove(home: Home, server: str | None) -> None:
    shutil.rmtree(home.path.parent, ignore_errors=True)
    if home.database_url and server:
        name = urlsplit(home.database_url).path.lstrip("/")
        with connect(server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


TestSendingModel = SendingModel.TestCase
TestSendingModel.settings = settings(
    max_examples=200 if LONG else 8, stateful_step_count=40 if LONG else 15, deadline=None
)


TestSendingModelOnPostgres = on_postgres(
    SendingModel, settings(TestSendingModel.settings, max_examples=200 if LONG else 4)
)
