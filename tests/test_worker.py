"""The worker: a new process picks up pending and scheduled work; a dead worker's
lease expires and its operation is run again, never twice at once; ``serve`` and
``worker --once``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, cast

import pytest

from eventpile.cli import command_line
from eventpile.cli import main as run_cli
from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.claims import NotClaimable
from eventpile.commands.context import Context
from eventpile.commands.operations import RetryPolicy, cancel, retry
from eventpile.commands.worker import Ran, Worker
from eventpile.domain.aggregate import DomainError
from eventpile.domain.operation import Operation, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.message import MessageIndexed
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.queue import pending
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from tests.conftest import PASSPHRASE
from tests.test_operations import App as OperationsApp
from tests.test_operations import Clock, Job, written

pytest_plugins = ["tests.test_operations"]  # its fixtures: clock, ops_app

WORKER_ONCE = ("--json", "worker", "--once")


def test_a_new_process_picks_up_pending_and_due_scheduled_work(
    cli_env: Home, keyring: Keyring, tmp_path: Path
) -> None:
    mbox = write_mbox(tmp_path / "a.mbox", 30, seed=3)
    app = App(cli_env, keyring)
    now = app.clock()
    queued = app.submit(ImportMailbox(path=mbox))
    due = app.submit(ImportMailbox(path=mbox), run_after=now - timedelta(minutes=1))
    later = app.submit(ImportMailbox(path=mbox), run_after=now + timedelta(days=1))
    app.close()
    worker = subprocess.run(
        [sys.executable, "-c", "from eventpile.mail.cli import run; run()", *WORKER_ONCE],
        env={**os.environ, "EVENTPILE_HOME": str(cli_env.path), "EVENTPILE_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    ran = json.loads(worker.stdout)["ran"]
    assert [(r["operation_id"], r["status"]) for r in ran] == [  # the longest due first
        (str(due.id), "complete"),
        (str(queued.id), "complete"),
    ]
    app = App(cli_env, keyring)
    try:
        first = app.load(Operation, due.id)
        assert first is not None and first.result["indexed"] == 30
        assert [op.id for op in pending(app.view("queue").db)] == [later.id]
    finally:
        app.close()


class Dies(Command):
    """Dies (like a killed process) in the middle of its first attempts."""

    retry: ClassVar[RetryPolicy | None] = RetryPolicy(max_attempts=2)

    survive_from: int = 2


@handles(Dies)
def run_dies(command: Dies, ctx: Context) -> Outcome:
    ctx.progress(1, 2, "Half way")
    ctx.flush()  # written: the worker holds a lease
    if ctx.operation.attempts < command.survive_from:
        raise SystemExit("killed")  # nothing more is written, as if the process died
    return Outcome("Survived")


def killed(app: MailApplication, command: Command) -> Operation:
    """An operation whose worker died while running it."""
    op = app.submit(command)
    with pytest.raises(SystemExit):
        app.run(op.id)
    state = app.load(Operation, op.id)
    assert state is not None and state.status is Status.RUNNING
    return state


def test_a_dead_workers_operation_runs_again_once_its_lease_expired(
    home: Home, keyring: Keyring, backend: str, clock: Clock
) -> None:
    first = App(home, keyring, clock=clock)
    other = App(home, keyring, clock=clock)
    other.worker = "other:1"
    try:
        op = killed(first, Dies())
        assert op.lease_until == clock.now + timedelta(seconds=first.lease_s)
        assert Worker(other).drain() == []  # the lease holds: it is not run twice at once
        with pytest.raises(DomainError, match="running"):
            other.run(op.id, force=True)
        with pytest.raises(DomainError, match="nothing to retry"):
            retry(other, op.id)
        clock.past(op.lease_until)
        assert Worker(other).drain() == [Ran(op.id, "complete", "Survived")]
        done = other.load(Operation, op.id)
        assert done is not None and (done.attempts, done.worker) == (2, "other:1")
    finally:
        first.close()
        other.close()


def test_two_workers_run_each_operation_once_and_report_only_their_own(
    home: Home, keyring: Keyring, backend: str
) -> None:
    first, second = App(home, keyring), App(home, keyring)
    second.worker = "other:1"
    try:
        ops = [first.submit(Job()).id for _ in range(4)]
        by_second: list[Ran] = []

        def then_the_second_drains(result: Ran) -> None:
            if not by_second:  # the first worker has read all four, and ran one
                by_second.extend(Worker(second).drain())

        by_first = Worker(first, then_the_second_drains).drain()
        assert [r.operation_id for r in by_first] == ops[:1]  # not what it found taken
        assert [r.operation_id for r in by_second] == ops[1:]
        for op in ops:
            state = first.load(Operation, op)
            assert state is not None and (state.status, state.attempts) == (Status.COMPLETE, 1)
        log_end = first.max_position()
        assert all(view.position == log_end for view in first.views.values())
    finally:
        first.close()
        second.close()


class TakesLong(Command):
    """Takes (by the test's clock) more than half a lease."""


@handles(TakesLong)
def run_takes_long(command: TakesLong, ctx: Context) -> Outcome:
    cast(Clock, ctx.app.clock).advance(seconds=ctx.app.lease_s * 0.6)
    return Outcome("Took long")


def test_operations_claimed_with_a_slow_one_start_only_while_their_lease_holds(
    ops_app: MailApplication, clock: Clock
) -> None:
    first = ops_app.submit(Job())  # claimed alone; quick, so the rest are claimed at once
    slow = ops_app.submit(TakesLong())
    rest = [ops_app.submit(Job()).id for _ in range(2)]
    assert [r.operation_id for r in Worker(ops_app).drain()] == [first.id, slow.id]
    claimed = [ops_app.load(Operation, op) for op in rest]
    # claimed, never started: another attempt once the lease is over
    assert [(s.status, s.attempts) for s in claimed if s] == [(Status.RUNNING, 1)] * 2
    assert [written(ops_app, op) for op in rest] == [[], []]
    clock.past(max(s.lease_until for s in claimed if s and s.lease_until))
    assert [r.operation_id for r in Worker(ops_app).drain()] == rest
    done = [ops_app.load(Operation, op) for op in rest]
    assert [(s.status, s.attempts) for s in done if s] == [(Status.COMPLETE, 2)] * 2


class Spends(Command):
    """Spends (by the test's clock) a third of a lease, having noted the lease it started with."""


STARTS: list[tuple[datetime, datetime | None]] = []
"""When each Spends attempt started and until when its lease held then."""


@handles(Spends)
def run_spends(command: Spends, ctx: Context) -> Outcome:
    STARTS.append((ctx.app.clock(), ctx.operation.lease_until))
    cast(Clock, ctx.app.clock).advance(seconds=ctx.app.lease_s / 3)
    return Outcome("Spent")


def test_each_operation_claimed_in_a_batch_starts_with_a_whole_lease(
    ops_app: MailApplication,
) -> None:
    STARTS.clear()
    ops = [ops_app.submit(Spends()).id for _ in range(3)]  # one alone, then two in one write
    assert [r.operation_id for r in Worker(ops_app).drain()] == ops
    lease = timedelta(seconds=ops_app.lease_s)
    assert [until - start for start, until in STARTS if until] == [lease] * 3


class Overtaken(Command):
    """Writes in two steps; between them, its first attempt loses its lease to another worker."""


OTHER: list[MailApplication] = []
"""The other worker's application, for Overtaken."""


@handles(Overtaken)
def run_overtaken(command: Overtaken, ctx: Context) -> Outcome:
    for step in (1, 2):
        ctx.record(step_marker(ctx, step))
        ctx.flush()
        if step == 1 and ctx.operation.attempts == 1:  # a slow first attempt
            cast(Clock, ctx.app.clock).advance(seconds=ctx.app.lease_s + 1)
            assert [r.status for r in Worker(OTHER[0]).drain()] == ["complete"]
    return Outcome("Both steps written")


def step_marker(ctx: Context, step: int) -> MessageIndexed:
    """A domain event naming the step and the attempt that wrote it."""
    header = f"<{step}.{ctx.operation.attempts}@{ctx.operation_id}>"
    return MessageIndexed(originator_id=uuid.uuid4(), originator_version=1, header_id=header)


def test_an_attempt_whose_lease_was_taken_over_writes_nothing_more(
    home: Home, keyring: Keyring, backend: str, clock: Clock
) -> None:
    first = App(home, keyring, clock=clock)
    other = App(home, keyring, clock=clock)
    other.worker = "other:1"
    OTHER[:] = [other]
    try:
        op = first.submit(Overtaken())
        assert Worker(first).drain() == []  # its second step conflicts: the operation is taken
        steps = [cast(MessageIndexed, e).header_id for e in written(first, op.id)]
        assert steps == [f"<{s}.{a}@{op.id}>" for s, a in ((1, 1), (1, 2), (2, 2))]
        done = first.load(Operation, op.id)
        assert done is not None and (done.status, done.worker) == (Status.COMPLETE, "other:1")
    finally:
        first.close()
        other.close()


class Writes(Command):
    """Writes three times, each after most of a lease (by the test's clock)."""


@handles(Writes)
def run_writes(command: Writes, ctx: Context) -> Outcome:
    for step in (1, 2, 3):
        cast(Clock, ctx.app.clock).advance(seconds=ctx.app.lease_s * 0.8)
        assert Worker(OTHER[0]).drain() == []  # the lease holds: renewed by the last write
        ctx.record(step_marker(ctx, step))
        ctx.flush()
    return Outcome("Written")


def test_each_write_of_an_attempt_renews_its_lease(
    home: Home, keyring: Keyring, backend: str, clock: Clock
) -> None:
    first = App(home, keyring, clock=clock)
    other = App(home, keyring, clock=clock)
    OTHER[:] = [other]
    try:
        op = first.submit(Writes())
        assert Worker(first).drain() == [Ran(op.id, "complete", "Written")]
        assert len(written(first, op.id)) == 3
    finally:
        first.close()
        other.close()


def test_another_applications_operation_is_left_pending_for_its_workers(
    home: Home, keyring: Keyring, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App(home, keyring)
    try:
        foreign = Operation.request(uuid.uuid4(), "Unregistered", {}, {}, "Not ours")
        app.append([foreign])
        ours = app.submit(Job())
        assert Worker(app).drain() == [Ran(ours.id, "complete", "Job done (ok)")]
        with pytest.raises(NotClaimable, match="Unregistered"):
            app.run(foreign.originator_id)
        left = app.load(Operation, foreign.originator_id)
        assert left is not None and (left.status, left.attempts) == (Status.PENDING, 0)
        # serve waits for new work instead of draining again and again
        stop, worker, drains = threading.Event(), Worker(app), []
        drain = worker.drain

        def counted() -> list[Ran]:
            drains.append(drain())
            if len(drains) > 1:
                stop.set()
            return drains[-1]

        def wait_for_events(after: int, timeout: float) -> int:
            stop.set()
            return after

        monkeypatch.setattr(worker, "drain", counted)
        monkeypatch.setattr(app, "wait_for_events", wait_for_events)
        worker.serve(stop)
        assert drains == [[]]
    finally:
        app.close()


def test_after_its_last_attempt_a_dead_workers_operation_fails(
    ops_app: MailApplication, clock: Clock
) -> None:
    op = killed(ops_app, Dies(survive_from=3))
    clock.past(op.lease_until)
    with pytest.raises(SystemExit):
        ops_app.run(op.id)  # attempt 2 of 2 dies too
    again = ops_app.load(Operation, op.id)
    assert again is not None
    clock.past(again.lease_until)
    [ran] = Worker(ops_app).drain()
    assert ran.status == "failed" and "stopped during the last attempt" in ran.message
    failed = ops_app.load(Operation, op.id)
    assert failed is not None and (failed.status, failed.error_type) == (
        Status.FAILED,
        "WorkerLost",
    )


def test_an_abandoned_operation_can_be_cancelled(ops_app: MailApplication, clock: Clock) -> None:
    op = killed(ops_app, Dies())
    with pytest.raises(DomainError, match="cannot be cancelled"):
        cancel(ops_app, op.id)
    clock.past(op.lease_until)
    assert cancel(ops_app, op.id).status is Status.CANCELLED
    assert Worker(ops_app).drain() == []


def test_serve_takes_up_work_another_process_submits_without_waiting_to_poll(
    home: Home, keyring: Keyring, backend: str
) -> None:
    serving, submitting = App(home, keyring), App(home, keyring)
    stop, started = threading.Event(), threading.Event()
    ran: list[Ran] = []

    def on_ran(result: Ran) -> None:
        ran.append(result)
        (stop if len(ran) == 2 else started).set()

    thread = threading.Thread(target=Worker(serving, on_ran).serve, args=(stop, 3600.0))
    try:
        first = serving.submit(Job())
        thread.start()
        assert started.wait(timeout=60)
        second = submitting.submit(Job())
        thread.join(timeout=60)  # an hour's poll: only the new event can wake it in time
        assert not thread.is_alive()
        assert [(r.operation_id, r.status) for r in ran] == [
            (first.id, "complete"),
            (second.id, "complete"),
        ]
    finally:
        stop.set()
        if thread.ident is not None:
            thread.join(timeout=60)  # it notices within STOP_CHECK_S
        serving.close()
        submitting.close()


def test_worker_once_from_the_command_line(
    cli_env: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    keyring = cli_env.unlock(PASSPHRASE)
    app = App(cli_env, keyring)
    ok, crash = app.submit(Job()), app.submit(Job(behaviour="crash"))
    app.close()
    capsys.readouterr()
    cli = command_line(App, about="The mail application with test commands.")
    assert run_cli(cli, ["--json", "worker", "--once"]) == 0
    ran = json.loads(capsys.readouterr().out)["ran"]
    assert [(r["operation_id"], r["status"]) for r in ran] == [
        (str(ok.id), "complete"),
        (str(crash.id), "failed"),
    ]
    assert run_cli(cli, ["--json", "worker", "--once"]) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == []


class App(OperationsApp):
    """The mail application with this module's own test commands."""

    handlers = (
        run_dies,
        run_takes_long,
        run_spends,
        run_overtaken,
        run_writes,
    )


def test_a_worker_whose_home_is_deleted_stops_with_one_line(home: Home, keyring: Keyring) -> None:
    app = App(home, keyring)
    try:
        home.key_file.unlink()
        with pytest.raises(StoreError, match="is gone: the worker stops"):
            Worker(app).serve(threading.Event(), poll_s=0.1)
    finally:
        app.close()
