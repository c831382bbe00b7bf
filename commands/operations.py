"""Operations over time: retries with back-off, and what the user does to them.

``next_attempt_at`` is the retry schedule (pure arithmetic). ``cancel``,
``retry`` and ``answer`` are the user's actions on a recorded operation; each one
decides against the operation's current state and writes nothing when refused.
``find_operation`` resolves the id (or a unique prefix of it) the user typed.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from eventpile.commands.base import Command
from eventpile.commands.context import ProgressCallback
from eventpile.commands.eventlog import Conflict
from eventpile.commands.retention import missing_operation
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import Operation, Status
from eventpile.projections.operations import find

if TYPE_CHECKING:
    from eventpile.commands.app import Application

DECIDE_RETRIES = 5
RETRY = "retry"
"""The choice ``retry`` answers, where a question offers it."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter, up to ``max_attempts`` attempts in all.

    After failed attempt ``n`` the next one waits ``base_s * factor**(n-1)``
    seconds, capped at ``max_delay_s``, less a random part of up to ``jitter`` of
    it (so that many failed operations do not all retry at once).
    """

    max_attempts: int = 6
    base_s: float = 30.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s <= 0 or self.factor < 1:
            raise ValueError("a retry policy needs max_attempts >= 1, base_s > 0, factor >= 1")
        if not 0 <= self.jitter < 1 or self.max_delay_s < self.base_s:
            raise ValueError("a retry policy needs 0 <= jitter < 1 and max_delay_s >= base_s")

    def delay_s(self, attempt: int, rand: float) -> float | None:
        """Seconds to wait after failed ``attempt`` (from 1); None after the last one.

        ``rand`` is uniform in [0, 1).
        """
        if attempt >= self.max_attempts:
            return None
        exponent = attempt - 1
        if self.factor > 1 and exponent * math.log(self.factor) >= math.log(
            self.max_delay_s / self.base_s
        ):
            delay = self.max_delay_s
        else:
            delay = self.base_s * self.factor**exponent
        return delay * (1 - self.jitter * rand)


DEFAULT_RETRY = RetryPolicy()


def retry_policy(command_class: type[Command]) -> RetryPolicy:
    return command_class.retry or DEFAULT_RETRY


def next_attempt_at(
    policy: RetryPolicy, attempt: int, now: datetime, rand: float
) -> datetime | None:
    """When to try again after failed ``attempt``; None when it was the last."""
    delay = policy.delay_s(attempt, rand)
    return None if delay is None else now + timedelta(seconds=delay)


class WorkerLost(Exception):
    """The worker running the operation stopped before finishing (its lease expired)."""


# the user's actions --------------------------------------------------------


def find_operation(app: Application, prefix: str) -> Operation:
    """The operation whose id is ``prefix`` or starts with it (at least 4 hex digits)."""
    key = prefix.strip().replace("-", "").lower()
    if len(key) < 4 or any(c not in "0123456789abcdef" for c in key):
        raise DomainError(f"{prefix!r} is not an operation id (4 to 32 hex digits)")
    db = app.current("operations")
    found = find(db, key)
    if not found:
        said = f"no operation has an id starting with {prefix!r}"
        raise missing_operation(db, said, app.keyring.installation_id)
    if len(found) > 1:
        raise DomainError(f"more than one operation has an id starting with {prefix!r}")
    state = app.load(Operation, uuid.UUID(found[0]["id"]))
    assert state is not None
    return state


def cancel(app: Application, operation_id: uuid.UUID) -> Operation:
    """Cancel a pending, scheduled, retrying or waiting operation (or an abandoned one)."""
    return _decide(app, operation_id, lambda op: [op.cancel(app.clock())])


def retry(
    app: Application, operation_id: uuid.UUID, on_progress: ProgressCallback | None = None
) -> Operation:
    """Run a scheduled or retrying operation now, or a failed one again.

    A failed operation runs again as a new operation, linked to it. One waiting for an
    answer to a question that offers ``retry`` is answered so (it is what the question
    means); the follow-up's state is returned.
    """
    state = app.require(Operation, operation_id)
    if state.status is Status.WAITING and state.question and RETRY in state.question.choices:
        _answered, follow_up = answer(app, operation_id, RETRY, on_progress)
        assert follow_up is not None
        return follow_up
    if state.status is Status.FAILED:
        command = app.registry.command_from_record(
            state.command, {**state.args, **state.private_args}
        )
        again = app.submit(command, parent_id=state.id)
        return _run_recorded(app, again.id, on_progress)
    if state.status in (Status.PENDING, Status.SCHEDULED, Status.RETRYING) or (
        state.lease_expired(app.clock())
    ):
        return app.run(operation_id, force=True, on_progress=on_progress)
    raise DomainError(f"operation {state.id} is {state.status}: there is nothing to retry")


def answer(
    app: Application,
    operation_id: uuid.UUID,
    choice: str,
    on_progress: ProgressCallback | None = None,
) -> tuple[Operation, Operation | None]:
    """Answer the operation's question and run the command of the choice.

    The answer and the request of the follow-up operation are written together;
    a choice whose command no longer validates writes nothing. Returns the
    answered operation and the follow-up (None for a choice without a command).
    """

    def decide(state: Operation) -> list[DomainEvent]:
        answered = state.answer_with(choice)
        assert state.question is not None
        spec = state.question.choices[choice]
        if spec is None or answered.follow_up_id is None:
            return [answered]
        command = app.registry.command_from_record(spec.command, {**spec.args, **spec.private_args})
        follow_up = app.request(
            command, answered.follow_up_id, parent_id=state.id, runs_on=state.runs_on
        )
        return [answered, follow_up]

    answered = _decide(app, operation_id, decide)
    if answered.follow_up_id is None:
        return answered, None
    return answered, _run_recorded(app, answered.follow_up_id, on_progress)


def _run_recorded(
    app: Application, operation_id: uuid.UUID, on_progress: ProgressCallback | None
) -> Operation:
    """Run an operation this process has just recorded, unless a worker took it first:
    what was asked is recorded either way, and the worker's attempt is the one to
    follow (its state now is returned)."""
    from eventpile.commands.claims import NotClaimable  # (claims builds on this module)

    try:
        return app.run(operation_id, on_progress=on_progress)
    except (Conflict, NotClaimable):
        app.catch_up()
        return app.require(Operation, operation_id)


def _decide(
    app: Application,
    operation_id: uuid.UUID,
    decide: Callable[[Operation], list[DomainEvent]],
) -> Operation:
    """Append what ``decide`` makes of the current state, deciding again on a conflict."""

    for attempt in range(DECIDE_RETRIES):
        state = app.require(Operation, operation_id)
        with app.scope(operation_id):
            events = decide(state)
        try:
            app.append(events)
        except Conflict:
            if attempt == DECIDE_RETRIES - 1:
                raise
            continue
        app.catch_up()
        for event in events:
            if event.originator_id == operation_id:
                state = state.apply(event)
        return state
    raise AssertionError("unreachable")
