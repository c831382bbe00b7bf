"""What a handler works with while its command runs.

``load`` gives the current state of an aggregate (stored events plus the ones
this command has recorded but not yet written), ``record`` adds new events,
``progress`` reports how far it got (throttled into the operation record),
``flush`` writes what is recorded so far (for long commands; a short one is
written whole, in one transaction, when it returns), ``ask`` asks the user how
to go on once the handler returns.

Every write of a running operation holds an event of its own stream that renews
its lease (a progress report): if another process has taken the operation over
meanwhile (the lease had expired), the write conflicts and nothing of it is kept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from eventpile.commands.base import Command
from eventpile.domain.aggregate import Aggregate, fold, required
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import FollowUp, Operation, Question, Status

if TYPE_CHECKING:
    from eventpile.commands.app import Application

A = TypeVar("A", bound=Aggregate)

PROGRESS_EVERY_S = 1.0
ProgressCallback = Callable[[int, int | None, str], None]


class Context:
    """What a command handler is given: aggregate states, recording, progress."""

    def __init__(
        self,
        app: Application,
        operation: Operation,
        pending: list[DomainEvent],
        on_progress: ProgressCallback | None = None,
    ):
        self.app = app
        self.operation = operation
        self.pending = pending
        self.flushed = False
        self._on_progress = on_progress
        self._states: dict[uuid.UUID, Aggregate | None] = {}
        self._unsaved: dict[uuid.UUID, list[DomainEvent]] = {}
        self._last_progress = 0.0
        self.question: Question | None = None

    @property
    def operation_id(self) -> uuid.UUID:
        return self.operation.id

    def require(self, cls: type[A], aggregate_id: uuid.UUID, what: str = "") -> A:
        """The state of an aggregate that must exist (refused with "there is no …" if not)."""
        return required(self.load(cls, aggregate_id), cls, aggregate_id, what)

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        if aggregate_id not in self._states:
            self.preload(cls, [aggregate_id])
        state = self._states[aggregate_id]
        if state is not None and not isinstance(state, cls):
            raise TypeError(f"{aggregate_id} is a {type(state).__name__}, not {cls.__name__}")
        return state

    def preload(self, cls: type[A], aggregate_ids: Iterable[uuid.UUID]) -> None:
        """Load many aggregates at once, for the ``load`` calls to come."""
        missing = {i for i in aggregate_ids if i not in self._states}
        for aggregate_id, state in self.app.load_many(cls, missing).items():
            self._states[aggregate_id] = fold(cls, self._unsaved.get(aggregate_id, ()), state)

    def record(self, *events: DomainEvent) -> None:
        for event in events:
            self.pending.append(event)
            self._unsaved.setdefault(event.originator_id, []).append(event)
            state = self._states.get(event.originator_id)
            if state is not None:
                self._states[event.originator_id] = state.apply(event)
            else:
                self._states.pop(event.originator_id, None)

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(done, total, message)
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY_S or done == total:
            self._last_progress = now
            self.record_operation(self.operation.report(done, total, message, self.app.lease_end()))

    def ask(self, prompt: str, choices: Mapping[str, Command | None], detail: str = "") -> None:
        """Ask the user how to go on, once this handler has returned.

        The operation then waits for an answer; the chosen command runs as its own
        operation, linked to this one (a choice of ``None`` cancels instead).
        ``prompt`` is public, ``detail`` private.
        """
        if self.question is not None:
            raise RuntimeError("an operation asks at most one question")
        self.question = self._question(prompt, choices, detail)

    def _question(
        self, prompt: str, choices: Mapping[str, Command | None], detail: str
    ) -> Question:
        follow_ups = {k: None if c is None else self._follow_up(c) for k, c in choices.items()}
        return Question(prompt=prompt, detail=detail, choices=follow_ups)

    def in_doubt(
        self, prompt: str, choices: Mapping[str, Command | None], detail: str = ""
    ) -> None:
        """About to do what cannot be taken back nor be sure of (hand a mail over): write
        now, before it, the question to ask if this attempt stops before it knows how
        that went (Ctrl-C, a killed process found by its lease). Ends with the attempt."""
        self.record_operation(self.operation.doubt(self._question(prompt, choices, detail)))
        self.flush(catch_up=False)

    def record_operation(self, event: DomainEvent) -> None:
        self.operation = self.operation.apply(event)
        self.pending.append(event)

    def flush(self, *, catch_up: bool = True) -> None:
        """Write what is recorded so far, renewing the lease, and bring the views up to date
        (unless not ``catch_up``)."""
        running = self.operation.status is Status.RUNNING
        if running and not any(
            e.originator_id == self.operation_id for e in reversed(self.pending)
        ):
            self.record_operation(self.operation.renew(self.app.lease_end()))
        if self.pending:
            self.app.append(self.pending)
            self.pending.clear()
            self._unsaved.clear()
            self.flushed = True
            if catch_up:
                self.app.catch_up()

    def _follow_up(self, command: Command) -> FollowUp:
        self.app.registry.handler(command)  # one nobody handles is refused now, not when answered
        public, private = command.split_args()
        return FollowUp(command=type(command).__name__, args=public, private_args=private)
