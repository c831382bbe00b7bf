"""Operations over time: the lifecycle as a decider (given events, when a decision,
then events or a refusal), the retry schedule, and the dispatcher's deferred path:
submit, run, retries, questions and answers, cancel, the duplicate-import question.

``Clock``, ``Job`` and the ``clock``/``ops_app`` fixtures are shared with the other
operation test modules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from eventpile.commands.base import Command, Outcome, Retryable, handles
from eventpile.commands.context import Context
from eventpile.commands.dispatcher import CommandFailed
from eventpile.commands.eventlog import Conflict
from eventpile.commands.operations import (
    DEFAULT_RETRY,
    RetryPolicy,
    answer,
    cancel,
    find_operation,
    next_attempt_at,
    retry,
)
from eventpile.commands.worker import Worker
from eventpile.domain.aggregate import DomainError, fold
from eventpile.domain.events import DomainEvent, Private, utcnow
from eventpile.domain.operation import (
    FollowUp,
    Operation,
    OperationAnswered,
    OperationCancelled,
    OperationEvent,
    OperationRequested,
    Question,
    Status,
)
from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.message import Message, MessageIndexed, message_uuid
from eventpile.projections.queue import pending
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from tests.conftest import cli, log_end

# shared test kit ------------------------------------------------------------------


class Clock:
    """An injectable clock that moves only when told."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def past(self, when: datetime | None) -> None:
        """Move just after ``when``."""
        assert when is not None
        self.now = max(self.now, when + timedelta(seconds=1))


Behaviour = Literal["ok", "retryable", "crash", "refuse", "ask", "progress"]


class Job(Command):
    """A test command whose handler does what it is told, recording one message event."""

    retry: ClassVar[RetryPolicy | None] = RetryPolicy(max_attempts=3, base_s=10, max_delay_s=100)

    behaviour: Behaviour = "ok"
    secret: Annotated[str, Private] = "hush"

    def describe(self) -> str:
        return f"Job ({self.behaviour})"


JOB_RUNS: list[uuid.UUID] = []
"""The operations whose Job handler ran, in order (each run appends)."""


@handles(Job)
def run_job(command: Job, ctx: Context) -> Outcome:
    JOB_RUNS.append(ctx.operation_id)
    ctx.record(_marker(ctx))
    match command.behaviour:
        case "retryable":
            raise Retryable("the network is down")
        case "crash":
            raise RuntimeError(f"broken: {command.secret}")
        case "refuse":
            raise DomainError("refused by the rules")
        case "ask":
            ctx.ask("Go on?", {"again": Job(secret=command.secret), "stop": None}, detail="why")
        case "progress":
            ctx.progress(1, 2, "Half done")
            ctx.flush()
    return Outcome(f"Job done ({command.behaviour})", {"n": 1}, {"secret": command.secret})


def _marker(ctx: Context) -> MessageIndexed:
    """A domain event the job writes (a message indexed under a fresh id)."""
    return MessageIndexed(
        originator_id=uuid.uuid4(), originator_version=1, header_id=f"<{ctx.operation_id}>"
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ops_app(
    request: pytest.FixtureRequest, home: Home, keyring: Keyring, backend: str, clock: Clock
) -> Iterator[MailApplication]:
    """An application on a fresh home whose clock the test moves, with this module's test
    commands and those of the test module using it."""
    here: type[MailApplication] = getattr(request.module, "App", App)
    both = here if issubclass(here, App) else type("App", (here, App), {})
    application = both(home, keyring, clock=clock)
    yield application
    application.close()


def written(app: MailApplication, operation_id: uuid.UUID) -> list[DomainEvent]:
    """The domain events an operation wrote (not its own lifecycle)."""
    return [
        e
        for _, e in app.all_events()
        if e.operation_id == operation_id and not isinstance(e, OperationEvent)
    ]


def state(app: MailApplication, operation_id: uuid.UUID) -> Operation:
    found = app.load(Operation, operation_id)
    assert found is not None
    return found


# the lifecycle: given / when / then ------------------------------------------------

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
OP = uuid.UUID(int=7)


def requested(run_after: datetime | None = None) -> OperationRequested:
    return Operation.request(OP, "Job", {}, {"secret": "s"}, "Job", run_after=run_after)


def given(*history: Callable[[Operation], DomainEvent] | DomainEvent) -> Operation:
    """The state after ``history``: events, or decisions taken on the state so far."""
    state: Operation | None = None
    for step in history:
        event = step if isinstance(step, DomainEvent) else step(_some(state))
        state = fold(Operation, [event], state)
    return _some(state)


def _some(state: Operation | None) -> Operation:
    assert state is not None
    return state


def started(at: datetime = T0) -> Callable[[Operation], DomainEvent]:
    return lambda op: op.claim("w1", at, at + LEASE)


def retrying(at: datetime) -> Callable[[Operation], DomainEvent]:
    return lambda op: op.retry_later(ConnectionError("down"), at, 0.1)


QUESTION = Question(
    prompt="Go on?",
    detail="private detail",
    choices={"again": FollowUp(command="Job", args={}, private_args={"secret": "s"}), "no": None},
)


def asked(op: Operation) -> DomainEvent:
    return op.ask(QUESTION, "Asked", {}, {}, 0.1)


def test_a_pending_operation_is_due_at_once_and_a_claim_holds_it_for_the_lease() -> None:
    op = given(requested())
    assert op.status is Status.PENDING
    claim = op.claim("w1", T0, T0 + LEASE)
    assert (claim.attempt, claim.worker, claim.lease_until) == (1, "w1", T0 + LEASE)
    running = op.apply(claim)
    assert running.status is Status.RUNNING and running.due_at == T0 + LEASE


def test_a_scheduled_operation_is_not_due_before_its_time_unless_forced() -> None:
    op = given(requested(run_after=T0 + timedelta(minutes=10)))
    assert op.status is Status.SCHEDULED
    with pytest.raises(DomainError, match="not due"):
        op.claim("w1", T0, T0 + LEASE)
    assert op.claim("w1", T0, T0 + LEASE, force=True).attempt == 1
    later = T0 + timedelta(minutes=10)
    assert op.claim("w1", later, later + LEASE).attempt == 1


def test_a_running_operation_is_claimed_again_only_once_its_lease_expired() -> None:
    op = given(requested(), started())
    with pytest.raises(DomainError, match="running"):
        op.claim("w2", T0 + LEASE - timedelta(seconds=1), T0 + 2 * LEASE)
    with pytest.raises(DomainError, match="running"):
        op.claim("w2", T0, T0 + LEASE, force=True)
    reclaim = op.claim("w2", T0 + LEASE, T0 + 2 * LEASE)
    assert (reclaim.attempt, reclaim.worker) == (2, "w2")


def test_progress_renews_the_lease() -> None:
    op = given(requested(), started())
    later = T0 + timedelta(minutes=4)
    op = op.apply(op.report(5, 10, "half", later + LEASE))
    assert op.lease_until == later + LEASE and op.progress == (5, 10) and op.message == "half"
    assert op.apply(op.report(6, 10)).lease_until == later + LEASE


def test_a_renewal_extends_the_lease_of_a_running_operation_and_keeps_its_progress() -> None:
    op = given(requested(), started(), lambda o: o.report(5, 10, "half"))
    renewed = op.apply(op.renew(T0 + 2 * LEASE))
    assert (renewed.lease_until, renewed.progress, renewed.message) == (
        T0 + 2 * LEASE,
        (5, 10),
        "half",
    )
    with pytest.raises(DomainError, match="not running"):
        given(requested()).renew(T0 + LEASE)


def test_a_retryable_failure_waits_for_its_retry_time() -> None:
    at = T0 + timedelta(minutes=1)
    op = given(requested(), started(), retrying(at))
    assert (op.status, op.due_at, op.error_type, op.lease_until) == (
        Status.RETRYING,
        at,
        "ConnectionError",
        None,
    )
    with pytest.raises(DomainError, match="not due"):
        op.claim("w1", at - timedelta(seconds=1), at + LEASE)
    again = op.apply(op.claim("w1", at, at + LEASE))
    assert (again.status, again.attempts, again.retry_at) == (Status.RUNNING, 2, None)


def test_only_a_running_operation_can_schedule_a_retry_or_ask() -> None:
    op = given(requested())
    with pytest.raises(DomainError, match="not running"):
        op.retry_later(ConnectionError(), T0, 0.1)
    with pytest.raises(DomainError, match="not running"):
        asked(op)


def test_a_question_waits_for_one_of_its_choices() -> None:
    op = given(requested(), started(), asked)
    assert (op.status, op.due_at, op.question) == (Status.WAITING, None, QUESTION)
    with pytest.raises(DomainError, match="waiting"):
        op.claim("w1", T0 + LEASE, T0 + 2 * LEASE, force=True)
    with pytest.raises(DomainError, match="not one of the choices"):
        op.answer_with("maybe")
    answered = op.answer_with("again")
    assert answered.follow_up_id is not None
    done = op.apply(answered)
    assert (done.status, done.answer, done.follow_up_id) == (
        Status.COMPLETE,
        "again",
        answered.follow_up_id,
    )
    with pytest.raises(DomainError, match="not waiting"):
        done.answer_with("again")


def test_a_choice_without_a_command_cancels() -> None:
    op = given(requested(), started(), asked)
    answered = op.answer_with("no")
    assert answered.follow_up_id is None
    assert op.apply(answered).status is Status.CANCELLED


def test_a_question_needs_a_choice() -> None:
    op = given(requested(), started())
    with pytest.raises(DomainError, match="at least one choice"):
        op.ask(Question(prompt="?", choices={}), "m", {}, {}, 0.1)


@pytest.mark.parametrize(
    "history",
    [
        [requested()],
        [requested(run_after=T0 + timedelta(days=1))],
        [requested(), started(), retrying(T0 + timedelta(minutes=1))],
        [requested(), started(), asked],
    ],
    ids=["pending", "scheduled", "retrying", "waiting"],
)
def test_unstarted_retrying_and_waiting_operations_can_be_cancelled(history: list[Any]) -> None:
    op = given(*history)
    cancelled = op.apply(op.cancel(T0))
    assert cancelled.status is Status.CANCELLED and cancelled.due_at is None


def test_a_running_operation_can_be_cancelled_only_once_abandoned() -> None:
    op = given(requested(), started())
    with pytest.raises(DomainError, match="cannot be cancelled"):
        op.cancel(T0)
    assert isinstance(op.cancel(T0 + LEASE), OperationCancelled)


@pytest.mark.parametrize(
    "ending",
    [
        lambda op: op.complete("done", {}, {}, 0.1),
        lambda op: op.fail(RuntimeError("x"), 0.1),
        lambda op: op.cancel(T0 + LEASE),
    ],
    ids=["complete", "failed", "cancelled"],
)
def test_a_finished_operation_refuses_every_change(ending: Callable[[Operation], Any]) -> None:
    op = given(requested(), started(), ending)
    assert op.status.finished and op.due_at is None
    decisions: list[Callable[[], Any]] = [
        lambda: op.claim("w", T0 + LEASE, T0 + 2 * LEASE, force=True),
        lambda: op.cancel(T0 + LEASE),
        lambda: op.report(1, 2),
        lambda: op.complete("again", {}, {}, 0.1),
        lambda: op.fail(RuntimeError(), 0.1),
    ]
    for decide in decisions:
        with pytest.raises(DomainError, match="already"):
            decide()


# the retry schedule -----------------------------------------------------------------

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 30),
    base_s=st.floats(0.1, 600),
    factor=st.floats(1, 5),
    max_delay_s=st.floats(600, 86400),
    jitter=st.floats(0, 0.99),
)
rands = st.floats(0, 1, exclude_max=True)


@for_all(policies, st.integers(1, 10_000), rands)
def test_a_delay_is_the_capped_exponential_less_at_most_its_jitter(
    policy: RetryPolicy, attempt: int, rand: float
) -> None:
    delay = policy.delay_s(attempt, rand)
    if attempt >= policy.max_attempts:
        assert delay is None
        return
    assert delay is not None
    full = min(policy.max_delay_s, policy.base_s * policy.factor ** min(attempt - 1, 200))
    assert full * (1 - policy.jitter) - 1e-6 <= delay <= full + 1e-6
    assert delay <= policy.max_delay_s + 1e-6


@for_all(policies, st.integers(1, 60), rands)
def test_with_the_same_draw_a_later_attempt_never_waits_less(
    policy: RetryPolicy, attempt: int, rand: float
) -> None:
    first, second = policy.delay_s(attempt, rand), policy.delay_s(attempt + 1, rand)
    if second is not None:
        assert first is not None and second >= first - 1e-9


@for_all(policies, st.integers(1, 40), rands)
def test_the_next_attempt_is_now_plus_the_delay(
    policy: RetryPolicy, attempt: int, rand: float
) -> None:
    at = next_attempt_at(policy, attempt, T0, rand)
    delay = policy.delay_s(attempt, rand)
    assert at == (None if delay is None else T0 + timedelta(seconds=delay))


def test_without_jitter_the_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=30, factor=2, max_delay_s=200, jitter=0)
    delays = [policy.delay_s(n, 0.5) for n in range(1, 11)]
    assert delays == [30, 60, 120, 200, 200, 200, 200, 200, 200, None]


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"base_s": 0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"base_s": 10, "max_delay_s": 5},
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**bad)


def test_commands_without_their_own_policy_use_the_default() -> None:
    from eventpile.commands.operations import retry_policy

    assert retry_policy(ImportMailbox) is DEFAULT_RETRY
    assert retry_policy(Job) == RetryPolicy(max_attempts=3, base_s=10, max_delay_s=100)


# the dispatcher: immediate, deferred and retried --------------------------------------


def test_a_retryable_error_schedules_a_retry_and_writes_none_of_the_attempts_events(
    ops_app: MailApplication, clock: Clock
) -> None:
    op = ops_app.execute(Job(behaviour="retryable"))
    assert (op.status, op.attempts, op.error_type, op.error) == (
        Status.RETRYING,
        1,
        "Retryable",
        "the network is down",
    )
    assert op.retry_at is not None and clock.now < op.retry_at <= clock.now + timedelta(seconds=10)
    assert written(ops_app, op.id) == []
    [queued] = pending(ops_app.view("queue").db)
    assert (queued.id, queued.due_at) == (op.id, op.retry_at)


def test_retries_back_off_then_fail_with_the_last_error(
    ops_app: MailApplication, clock: Clock
) -> None:
    op = ops_app.execute(Job(behaviour="retryable"))
    worker = Worker(ops_app)
    assert worker.drain() == []  # not due yet
    clock.past(op.retry_at)
    [second] = worker.drain()
    op2 = state(ops_app, op.id)
    assert (second.status, op2.attempts) == ("retrying", 2)
    assert op2.retry_at is not None and op2.retry_at - clock.now > timedelta(seconds=14)
    clock.past(op2.retry_at)
    [last] = worker.drain()
    final = state(ops_app, op.id)
    assert (last.status, final.status, final.attempts, final.error) == (
        "failed",
        Status.FAILED,
        3,
        "the network is down",
    )
    assert pending(ops_app.view("queue").db) == []


def test_a_submitted_operation_waits_for_a_worker_and_its_run_after(
    ops_app: MailApplication, clock: Clock
) -> None:
    soon = ops_app.submit(Job(), run_after=clock.now + timedelta(minutes=10))
    now = ops_app.submit(Job())
    assert (soon.status, now.status) == (Status.SCHEDULED, Status.PENDING)
    assert written(ops_app, now.id) == []
    assert [r.operation_id for r in Worker(ops_app).drain()] == [now.id]
    with pytest.raises(DomainError, match="not due"):
        ops_app.run(soon.id)
    clock.advance(minutes=10)
    assert [r.operation_id for r in Worker(ops_app).drain()] == [soon.id]
    assert state(ops_app, soon.id).status is Status.COMPLETE
    assert len(written(ops_app, soon.id)) == 1


def test_a_crash_is_recorded_and_the_attempts_events_are_not_written(
    ops_app: MailApplication,
) -> None:
    with pytest.raises(CommandFailed, match="broken: hush"):
        ops_app.execute(Job(behaviour="crash"))
    [op] = _all_operations(ops_app)
    assert (op.status, op.error_type) == (Status.FAILED, "RuntimeError")
    assert written(ops_app, op.id) == []


def test_a_refusal_writes_nothing_now_but_is_recorded_for_a_queued_operation(
    ops_app: MailApplication,
) -> None:
    end = ops_app.max_position()
    with pytest.raises(DomainError, match="refused"):
        ops_app.execute(Job(behaviour="refuse"))
    assert ops_app.max_position() == end
    queued = ops_app.submit(Job(behaviour="refuse"))
    with pytest.raises(DomainError, match="refused"):
        ops_app.run(queued.id)
    assert (state(ops_app, queued.id).status, state(ops_app, queued.id).error_type) == (
        Status.FAILED,
        "DomainError",
    )


def test_a_recorded_command_that_no_longer_validates_fails_its_operation(
    ops_app: MailApplication,
) -> None:
    requested = Operation.request(uuid.uuid4(), "Job", {"behaviour": "dance"}, {}, "Job")
    ops_app.append([requested])
    with pytest.raises(CommandFailed, match="behaviour"):
        ops_app.run(requested.originator_id)
    assert state(ops_app, requested.originator_id).status is Status.FAILED


def test_of_two_claims_at_the_same_version_the_second_conflicts(ops_app: MailApplication) -> None:
    op = ops_app.submit(Job())
    now = ops_app.clock()
    first, second = (op.claim(w, now, now + LEASE) for w in ("w1", "w2"))
    ops_app.append([first])
    with pytest.raises(Conflict):
        ops_app.append([second])
    assert state(ops_app, op.id).worker == "w1"


class Hijacked(Command):
    """While it runs, another process takes its operation over."""


@handles(Hijacked)
def run_hijacked(command: Hijacked, ctx: Context) -> Outcome:
    ctx.record(_marker(ctx))
    stolen = ctx.app.load(Operation, ctx.operation_id)
    assert stolen is not None
    late = ctx.app.clock() + 2 * LEASE
    ctx.app.append([stolen.claim("thief", late, late + LEASE)])
    return Outcome("never written")


def test_a_run_that_loses_its_claim_stops_without_writing(ops_app: MailApplication) -> None:
    queued = ops_app.submit(Hijacked())
    with pytest.raises(Conflict, match="another process"):
        ops_app.run(queued.id)
    taken = state(ops_app, queued.id)
    assert (taken.worker, taken.status, taken.attempts) == ("thief", Status.RUNNING, 2)
    assert written(ops_app, queued.id) == []


# the user's actions ------------------------------------------------------------------------


def test_cancel_stops_a_scheduled_operation_and_refuses_a_finished_one(
    ops_app: MailApplication, clock: Clock
) -> None:
    op = ops_app.submit(Job(), run_after=clock.now + timedelta(minutes=5))
    cancelled = cancel(ops_app, op.id)
    assert cancelled.status is Status.CANCELLED
    assert pending(ops_app.view("queue").db) == []
    clock.advance(minutes=10)
    assert Worker(ops_app).drain() == []
    end = ops_app.max_position()
    with pytest.raises(DomainError, match="already cancelled"):
        cancel(ops_app, op.id)
    assert ops_app.max_position() == end


def test_retry_runs_a_retrying_operation_now(ops_app: MailApplication) -> None:
    op = ops_app.execute(Job(behaviour="retryable"))
    again = retry(ops_app, op.id)
    assert (again.status, again.attempts) == (Status.RETRYING, 2)


def test_retry_runs_a_failed_operation_again_as_a_new_linked_one(ops_app: MailApplication) -> None:
    with pytest.raises(CommandFailed):
        ops_app.execute(Job(behaviour="crash"))
    [failed] = _all_operations(ops_app)
    with pytest.raises(CommandFailed):
        retry(ops_app, failed.id)
    again = [o for o in _all_operations(ops_app) if o.id != failed.id]
    assert [(o.parent_id, o.private_args) for o in again] == [(failed.id, {"secret": "hush"})]


def test_retry_refuses_a_complete_operation(ops_app: MailApplication) -> None:
    op = ops_app.execute(Job())
    end = ops_app.max_position()
    with pytest.raises(DomainError, match="nothing to retry"):
        retry(ops_app, op.id)
    assert ops_app.max_position() == end


def test_an_answer_runs_the_chosen_command_as_a_linked_operation(ops_app: MailApplication) -> None:
    asking = ops_app.execute(Job(behaviour="ask", secret="s3"))
    assert (asking.status, asking.message, asking.result) == (
        Status.WAITING,
        "Job done (ask)",
        {"n": 1},
    )
    assert len(written(ops_app, asking.id)) == 1  # its work is written; it waits on the rest
    answered, follow_up = answer(ops_app, asking.id, "again")
    assert (answered.status, answered.answer) == (Status.COMPLETE, "again")
    assert follow_up is not None and follow_up.id == answered.follow_up_id
    assert (follow_up.status, follow_up.parent_id, follow_up.private_args) == (
        Status.COMPLETE,
        asking.id,
        {"secret": "s3"},
    )
    stored = [e for _, e in ops_app.all_events() if isinstance(e, OperationAnswered)]
    assert [e.choice for e in stored] == ["again"]


def test_an_answer_without_a_command_cancels(ops_app: MailApplication) -> None:
    asking = ops_app.execute(Job(behaviour="ask"))
    answered, follow_up = answer(ops_app, asking.id, "stop")
    assert (answered.status, follow_up) == (Status.CANCELLED, None)


def test_a_wrong_answer_or_a_second_one_writes_nothing(ops_app: MailApplication) -> None:
    asking = ops_app.execute(Job(behaviour="ask"))
    end = ops_app.max_position()
    with pytest.raises(DomainError, match="not one of the choices"):
        answer(ops_app, asking.id, "maybe")
    assert ops_app.max_position() == end
    answer(ops_app, asking.id, "stop")
    end = ops_app.max_position()
    with pytest.raises(DomainError, match="not waiting"):
        answer(ops_app, asking.id, "again")
    assert ops_app.max_position() == end


def test_operation_ids_are_found_by_a_unique_prefix(ops_app: MailApplication) -> None:
    op = ops_app.execute(Job())
    assert find_operation(ops_app, str(op.id)[:13]).id == op.id
    assert find_operation(ops_app, op.id.hex.upper()).id == op.id
    with pytest.raises(DomainError, match="no operation"):
        find_operation(ops_app, "ffff0000")
    with pytest.raises(DomainError, match="not an operation id"):
        find_operation(ops_app, "xyz!")
    with pytest.raises(DomainError, match="no operation"):
        answer(ops_app, uuid.uuid4(), "again")


def _all_operations(app: MailApplication) -> list[Operation]:
    streams = {e.originator_id for _, e in app.all_events() if isinstance(e, OperationRequested)}
    return sorted((state(app, s) for s in streams), key=lambda o: o.requested_at)


# the duplicate-import question -----------------------------------------------------------


def _mbox(path: Path, messages: Sequence[tuple[str, str]]) -> Path:
    """An mbox of (Message-ID, body) messages."""
    parts = []
    for n, (message_id, body) in enumerate(messages):
        parts.append(
            f"From sender@example.org Mon Jan  1 00:00:0{n} 2024\n"
            f"From: Sender <sender@example.org>\nTo: list@example.org\n"
            f"Subject: message {n}\nMessage-ID: <{message_id}>\n"
            f"Date: Mon, 1 Jan 2024 00:00:0{n} +0000\n\n{body}\n\n"
        )
    path.write_text("".join(parts))
    return path


@pytest.fixture
def duplicates(tmp_path: Path, ops_app: MailApplication) -> tuple[MailApplication, Operation, Path]:
    """A mailbox imported, then a second one: one message changed, one new, one same."""
    first = _mbox(tmp_path / "a.mbox", [("one@x", "first text"), ("two@x", "second text")])
    ops_app.execute(ImportMailbox(path=first))
    second = _mbox(
        tmp_path / "b.mbox",
        [("one@x", "first text, edited"), ("two@x", "second text"), ("three@x", "new")],
    )
    asking = ops_app.execute(ImportMailbox(path=second))
    return ops_app, asking, second


def _message(app: MailApplication, message_id: str, copy_of: str = "") -> Message | None:
    key = app.keyring.purpose_key("message-id")
    header = f"{message_id}\0{copy_of}" if copy_of else message_id
    return app.load(Message, message_uuid(key, header))


def test_an_import_finishes_the_rest_then_asks_about_changed_known_messages(
    duplicates: tuple[MailApplication, Operation, Path],
) -> None:
    app, asking, _ = duplicates
    assert asking.status is Status.WAITING
    assert asking.result == {"indexed": 1, "skipped": 1, "failed": 0, "differing": 1}
    assert asking.question is not None
    assert list(asking.question.choices) == ["keep-existing", "replace", "keep-both"]
    assert "Found 1 already indexed message(s)" in asking.question.prompt
    assert _message(app, "three@x") is not None  # the rest was imported


@pytest.mark.parametrize("choice", ["keep-existing", "replace", "keep-both"])
def test_each_answer_to_the_duplicate_question(
    duplicates: tuple[MailApplication, Operation, Path], choice: str
) -> None:
    app, asking, second = duplicates
    before = _message(app, "one@x")
    assert before is not None and "edited" not in before.text
    answered, follow_up = answer(app, asking.id, choice)
    assert answered.status is Status.COMPLETE
    assert follow_up is not None and follow_up.parent_id == asking.id
    assert follow_up.command == "ResolveDuplicates" and follow_up.status is Status.COMPLETE
    after = _message(app, "one@x")
    assert after is not None
    copy = _message(app, "one@x", copy_of=_fingerprint_in(second, "edited"))
    if choice == "replace":
        assert "edited" in after.text and copy is None
    elif choice == "keep-both":
        assert after == before
        assert copy is not None and "edited" in copy.text and copy.header_id == "one@x"
    else:
        assert after == before and copy is None
    # importing the same mailbox again has nothing left to ask, except after keep-existing
    again = app.execute(ImportMailbox(path=second))
    assert again.status is (Status.WAITING if choice == "keep-existing" else Status.COMPLETE)


def _fingerprint_in(mbox: Path, text: str) -> str:
    from eventpile.mail.mailparse import ParsedMail, read_mailbox

    [found] = [m for m in read_mailbox(mbox) if isinstance(m, ParsedMail) and text in m.text]
    return found.fingerprint


# the command line -----------------------------------------------------------------------


def test_the_operations_commands(
    cli_env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _mbox(tmp_path / "a.mbox", [("one@x", "first text")])
    second = _mbox(tmp_path / "b.mbox", [("one@x", "first text, edited")])
    assert cli(["init"], capsys)[0] == 0
    assert cli(["import", str(first)], capsys)[0] == 0
    _, imported, _ = cli(["import", str(second)], capsys)
    asking = imported["operation_id"]
    _, shown, _ = cli(["feed"], capsys)
    entry = shown["feed"][0]
    assert (entry["id"], entry["status"], entry["question"]["choices"]) == (
        uuid.UUID(asking).hex,
        "waiting",
        ["keep-existing", "replace", "keep-both"],
    )
    assert "private" not in entry and "keep-both" in entry["text"]
    _, shown, _ = cli(["feed", "--private"], capsys)
    assert shown["feed"][0]["private"]["private_args"]["path"] == str(second)
    assert main(["feed", "--html", "--all"]) == 0
    assert capsys.readouterr().out.startswith('<ul class="feed">\n<li class="operation waiting"')
    _, queued, _ = cli(["ops"], capsys)
    assert [(op["id"], op["status"]) for op in queued["operations"]] == [(asking, "waiting")]

    def refused(argv: list[str], error: str) -> None:
        end = log_end(cli_env)
        code, data, err = cli(argv, capsys)
        assert (code, data, err.count("\n")) == (1, None, 1) and error in err, err
        assert log_end(cli_env) == end

    refused(["answer", asking, "maybe"], "'maybe' is not one of the choices")
    refused(["answer", "0000ffff", "replace"], "no operation has an id starting with")
    refused(["cancel", "not-an-id"], "is not an operation id")
    _, answered, _ = cli(["answer", asking, "replace"], capsys)
    assert answered["operation"]["status"] == "complete"
    assert answered["follow_up"]["status"] == "complete"
    assert answered["follow_up"]["parent_id"] == asking
    refused(["cancel", asking], "already complete")
    refused(["retry", asking], "nothing to retry")
    refused(["answer", asking, "replace"], "not waiting for an answer")
    _, queued, _ = cli(["ops"], capsys)
    assert queued["operations"] == []


class App(MailApplication):
    """The mail application with this module's own test commands."""

    handlers = (
        run_job,
        run_hijacked,
    )
