"""The ``Operation`` aggregate: one command invocation, Mailpile's "event".

It records how the command was invoked (its type and validated arguments, split
into public and private), when it may run, who runs it and until when (a lease),
its progress, a question it asks, its retries, and its result or error. Every
domain event the command writes carries the operation's id.

Lifecycle (``claim`` starts an attempt; ``cancel`` is the user's)::

    pending | scheduled  --claim-->  running  -->  complete | failed
    running  --retryable error-->  retrying  --claim at retry_at-->  running
    running  --lease expired: claim-->  running (the next attempt)
    running  --question-->  waiting  --answer-->  complete (its command started)
                                     --answer without a command-->  cancelled
    pending | scheduled | retrying | waiting  --cancel-->  cancelled

A ``running`` operation can be cancelled only once its lease has expired (its
worker died).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict

from eventpile.domain.aggregate import Aggregate, DomainError, Invertible, first_event
from eventpile.domain.events import DomainEvent, Private

JSONDict = dict[str, Any]


class Status(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    WAITING = "waiting"
    """Waiting for the user to answer a question."""
    RETRYING = "retrying"
    """An attempt failed in a way worth retrying; the next one is at ``retry_at``."""
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNDONE = "undone"
    """Another operation reverted its changes (``undone_by``)."""

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETE, Status.FAILED, Status.CANCELLED, Status.UNDONE})
CANCELLABLE = frozenset({Status.PENDING, Status.SCHEDULED, Status.RETRYING, Status.WAITING})


class FollowUp(BaseModel):
    """A command to run as its own operation: its type and validated arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: str
    args: JSONDict
    private_args: Annotated[JSONDict, Private] = {}


class Question(BaseModel):
    """What an operation asks the user; each choice names the command it starts.

    A choice without a command stops there: answering it cancels the operation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    detail: Annotated[str, Private] = ""
    choices: dict[str, FollowUp | None]


class OperationEvent(DomainEvent):
    """An event of an operation's own stream (its lifecycle)."""


class OperationRequested(OperationEvent):
    command: str
    args: JSONDict
    private_args: Annotated[JSONDict, Private]
    message: str
    run_after: AwareDatetime | None = None
    parent_id: uuid.UUID | None = None
    runs_on: uuid.UUID | None = None
    """The installation that runs it, where that is not its origin: the second stage of
    an operation runs where the first did, whichever installation answered its question."""

    def describe(self) -> str:
        return self.message


class OperationStarted(OperationEvent):
    """An attempt begins; ``worker`` holds the operation until ``lease_until``."""

    attempt: int
    worker: str = ""
    lease_until: AwareDatetime | None = None

    def describe(self) -> str:
        return f"Started (attempt {self.attempt})"


class OperationProgressed(OperationEvent):
    """How far the running attempt got; without ``done``, only its lease is renewed."""

    done: int | None = None
    total: int | None = None
    message: str = ""
    lease_until: AwareDatetime | None = None
    """The running worker's lease, renewed."""

    def describe(self) -> str:
        if self.done is None:
            return self.message or "Lease renewed"
        return self.message or f"{self.done} of {self.total or '?'} done"


class OperationCompleted(OperationEvent):
    message: str
    result: JSONDict
    private_result: Annotated[JSONDict, Private] = {}
    elapsed_s: float

    def describe(self) -> str:
        return self.message


class OperationFailed(OperationEvent):
    error_type: str
    error: Annotated[str, Private]
    elapsed_s: float

    def describe(self) -> str:
        return f"Failed: {self.error_type}"


class OperationRetryScheduled(OperationEvent):
    """An attempt failed in a way worth retrying (a network error, say)."""

    error_type: str
    error: Annotated[str, Private]
    retry_at: AwareDatetime
    elapsed_s: float

    def describe(self) -> str:
        return f"Failed: {self.error_type}; retrying at {self.retry_at:%Y-%m-%d %H:%M:%S} UTC"


class OperationQuestionAsked(OperationEvent):
    """The handler finished its part and asks the user how to go on."""

    question: Question
    message: str
    result: JSONDict
    private_result: Annotated[JSONDict, Private] = {}
    elapsed_s: float

    def describe(self) -> str:
        return f"{self.question.prompt} ({' / '.join(self.question.choices)})"


class OperationInDoubt(OperationEvent):
    """The attempt is about to do what it cannot take back nor be sure of (deliver a
    mail): if it stops before it knows how that went, ``question`` is asked."""

    question: Question

    def describe(self) -> str:
        return "In doubt until it knows"


class OperationAnswered(OperationEvent):
    """The user's answer; ``follow_up_id`` is the operation it started, if any."""

    choice: str
    follow_up_id: uuid.UUID | None = None

    def describe(self) -> str:
        return f"Answered: {self.choice}"


class OperationCancelled(OperationEvent):
    def describe(self) -> str:
        return "Cancelled"


class OperationUndone(OperationEvent, Invertible):
    """Another operation, this event's ``operation_id``, reverted this one's changes."""

    previous: Status

    def describe(self) -> str:
        return "Undone"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(OperationRedone, version, status=self.previous)


class OperationRedone(OperationEvent, Invertible):
    """The undo of this operation was undone (by this event's ``operation_id``)."""

    status: Status
    """What the operation is again."""

    def describe(self) -> str:
        return "Redone"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(OperationUndone, version, previous=self.status)


class OperationsPurged(OperationEvent):
    """A purge deleted these streams from the log: the history of operations finished
    before ``horizon`` (and the records of earlier purges among them). The first event of
    a stream of its own; views drop what they held of those streams."""

    streams: list[uuid.UUID]
    horizon: AwareDatetime

    def describe(self) -> str:
        return f"Purged {len(self.streams):,} operations' history before {self.horizon:%Y-%m-%d}"


class Operation(Aggregate):
    """One command invocation as recorded: how it was invoked, its status and progress,
    its question, attempts and lease, its result or error, and its timing (what
    ``execute`` and ``submit`` return, and the feed and the log show)."""

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (OperationEvent,)

    command: str
    args: JSONDict
    private_args: Annotated[JSONDict, Private]
    message: str
    status: Status
    requested_at: datetime
    run_after: datetime | None = None
    parent_id: uuid.UUID | None = None
    origin: uuid.UUID | None = None
    """The installation that requested it."""
    runs_on: uuid.UUID | None = None
    """The only installation that runs it (see :mod:`eventpile.commands.sync`): where it
    was requested, or where the operation whose question it answers ran."""
    attempts: int = 0
    worker: str = ""
    lease_until: datetime | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    progress: tuple[int, int | None] | None = None
    result: JSONDict = {}
    private_result: Annotated[JSONDict, Private] = {}
    error_type: str | None = None
    error: Annotated[str | None, Private] = None
    question: Question | None = None
    in_doubt: Question | None = None
    """Set while an attempt does what it cannot be sure of: what to ask if it stops there."""
    answer: str | None = None
    follow_up_id: uuid.UUID | None = None
    undone_by: uuid.UUID | None = None
    redone_by: uuid.UUID | None = None
    """The redo that brought its changes back: they are that operation's events now."""

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        if not isinstance(event, OperationRequested):
            return super().start(event)
        return cls(
            id=event.originator_id,
            command=event.command,
            args=event.args,
            private_args=event.private_args,
            message=event.message,
            status=Status.SCHEDULED if event.run_after else Status.PENDING,
            requested_at=event.timestamp,
            run_after=event.run_after,
            parent_id=event.parent_id,
            origin=event.origin,
            runs_on=event.runs_on or event.origin,
        )

    def belongs_to(self, installation: uuid.UUID) -> bool:
        """Does ``installation`` run this operation (or does nobody say which does)?"""
        return self.runs_on is None or self.runs_on == installation

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            case OperationStarted():
                return self.model_copy(
                    update={
                        "status": Status.RUNNING,
                        "attempts": event.attempt,
                        "worker": event.worker,
                        "lease_until": event.lease_until,
                        "retry_at": None,
                        "started_at": self.started_at or event.timestamp,
                    }
                )
            case OperationInDoubt(question=question):
                return self.model_copy(update={"in_doubt": question})
            case OperationProgressed(done=done, total=total, message=message):
                return self.model_copy(
                    update={
                        "progress": self.progress if done is None else (done, total),
                        "message": message or self.message,
                        "lease_until": event.lease_until or self.lease_until,
                    }
                )
            case OperationCompleted():
                return self._finished(
                    event, Status.COMPLETE, self._spent(event.elapsed_s)
                ).model_copy(
                    update={
                        "message": event.message,
                        "result": event.result,
                        "private_result": event.private_result,
                    }
                )
            case OperationFailed():
                return self._finished(
                    event, Status.FAILED, self._spent(event.elapsed_s)
                ).model_copy(update={"error_type": event.error_type, "error": event.error})
            case OperationRetryScheduled():
                return self.model_copy(
                    update={
                        "in_doubt": None,
                        "status": Status.RETRYING,
                        "retry_at": event.retry_at,
                        "lease_until": None,
                        "error_type": event.error_type,
                        "error": event.error,
                        "elapsed_s": self._spent(event.elapsed_s),
                    }
                )
            case OperationQuestionAsked():
                return self.model_copy(
                    update={
                        "in_doubt": None,
                        "status": Status.WAITING,
                        "lease_until": None,
                        "question": event.question,
                        "message": event.message,
                        "result": event.result,
                        "private_result": event.private_result,
                        "elapsed_s": self._spent(event.elapsed_s),
                    }
                )
            case OperationAnswered(choice=choice, follow_up_id=follow_up):
                status = Status.COMPLETE if follow_up else Status.CANCELLED
                said = f"{self.message}; answered {choice}"
                if follow_up is not None:  # the entry names what the answer started
                    said += f": operation {follow_up.hex}"
                return self._finished(event, status, self.elapsed_s).model_copy(
                    update={"answer": choice, "follow_up_id": follow_up, "message": said}
                )
            case OperationCancelled():
                return self._finished(event, Status.CANCELLED, self.elapsed_s)
            case OperationUndone():
                return self.model_copy(
                    update={
                        "status": Status.UNDONE,
                        "undone_by": event.operation_id,
                        "redone_by": None,
                    }
                )
            case OperationRedone(status=status):
                return self.model_copy(
                    update={"status": status, "undone_by": None, "redone_by": event.operation_id}
                )
        return self

    def not_in_effect(self, event: Invertible) -> str | None:
        match event:
            case OperationUndone() if self.undone_by != event.operation_id:
                return "the operation is no longer undone by it"
            case OperationRedone() if self.redone_by != event.operation_id:
                return "the operation was undone again since"
        return None

    def _spent(self, attempt_s: float) -> float:
        """The time of every attempt that ended, this one's ``attempt_s`` included (an
        attempt that died, taken over after its lease, recorded none)."""
        return (self.elapsed_s or 0.0) + attempt_s

    def _finished(self, event: DomainEvent, status: Status, elapsed_s: float | None) -> Self:
        return self.model_copy(
            update={
                "in_doubt": None,
                "status": status,
                "lease_until": None,
                "retry_at": None,
                "finished_at": event.timestamp,
                "elapsed_s": elapsed_s,
            }
        )

    # queries ------------------------------------------------------------

    @property
    def due_at(self) -> datetime | None:
        """When a worker may (re)start it: its run time, retry time or lease end.

        A pending operation is due at once (its request time is only for ordering:
        it is the writer's clock, not necessarily the worker's).
        """
        match self.status:
            case Status.PENDING:
                return self.requested_at
            case Status.SCHEDULED:
                return self.run_after
            case Status.RETRYING:
                return self.retry_at
            case Status.RUNNING:
                return self.lease_until
        return None

    def lease_expired(self, now: datetime) -> bool:
        return (
            self.status is Status.RUNNING
            and self.lease_until is not None
            and self.lease_until <= now
        )

    # decisions ----------------------------------------------------------

    @staticmethod
    def request(
        operation_id: uuid.UUID,
        command: str,
        args: JSONDict,
        private_args: JSONDict,
        message: str,
        *,
        run_after: datetime | None = None,
        parent_id: uuid.UUID | None = None,
        runs_on: uuid.UUID | None = None,
    ) -> OperationRequested:
        return first_event(
            OperationRequested,
            operation_id,
            command=command,
            args=args,
            private_args=private_args,
            message=message,
            run_after=run_after,
            parent_id=parent_id,
            runs_on=runs_on,
        )

    def _unfinished(self) -> None:
        if self.status.finished:
            raise DomainError(f"operation {self.id} is already {self.status}")

    def _running(self) -> None:
        if self.status is not Status.RUNNING:
            raise DomainError(f"operation {self.id} is {self.status}, not running")

    def begin(self, worker: str = "", lease_until: datetime | None = None) -> OperationStarted:
        self._unfinished()
        return self.event(
            OperationStarted, attempt=self.attempts + 1, worker=worker, lease_until=lease_until
        )

    def claim(
        self, worker: str, now: datetime, lease_until: datetime, *, force: bool = False
    ) -> OperationStarted:
        """Start the next attempt: the operation is due (or ``force``), or its lease expired."""
        self._unfinished()
        if self.status is Status.WAITING:
            raise DomainError(f"operation {self.id} is waiting for an answer")
        if self.status is Status.RUNNING and not self.lease_expired(now):
            raise DomainError(f"operation {self.id} is running ({self.worker})")
        due = self.due_at
        if not force and self.status is not Status.PENDING and due is not None and due > now:
            raise DomainError(f"operation {self.id} is not due before {due:%Y-%m-%d %H:%M:%S}")
        return self.begin(worker, lease_until)

    def report(
        self,
        done: int,
        total: int | None,
        message: str = "",
        lease_until: datetime | None = None,
    ) -> OperationProgressed:
        self._unfinished()
        return self.event(
            OperationProgressed, done=done, total=total, message=message, lease_until=lease_until
        )

    def renew(self, lease_until: datetime) -> OperationProgressed:
        """Extend the running attempt's lease (its progress as it is)."""
        self._running()
        return self.event(OperationProgressed, lease_until=lease_until)

    def complete(
        self, message: str, result: JSONDict, private_result: JSONDict, elapsed_s: float, n: int = 1
    ) -> OperationCompleted:
        self._unfinished()
        return self.event(
            OperationCompleted,
            n,
            message=message,
            result=result,
            private_result=private_result,
            elapsed_s=elapsed_s,
        )

    def fail(self, error: BaseException, elapsed_s: float) -> OperationFailed:
        self._unfinished()
        return self.event(
            OperationFailed,
            error_type=type(error).__name__,
            error=str(error),
            elapsed_s=elapsed_s,
        )

    def retry_later(
        self, error: BaseException, retry_at: datetime, elapsed_s: float
    ) -> OperationRetryScheduled:
        self._running()
        return self.event(
            OperationRetryScheduled,
            error_type=type(error).__name__,
            error=str(error),
            retry_at=retry_at,
            elapsed_s=elapsed_s,
        )

    def ask(
        self,
        question: Question,
        message: str,
        result: JSONDict,
        private_result: JSONDict,
        elapsed_s: float,
    ) -> OperationQuestionAsked:
        self._running()
        if not question.choices:
            raise DomainError("a question needs at least one choice")
        return self.event(
            OperationQuestionAsked,
            question=question,
            message=message,
            result=result,
            private_result=private_result,
            elapsed_s=elapsed_s,
        )

    def doubt(self, question: Question) -> OperationInDoubt:
        """The attempt is about to do what it cannot be sure of (see :class:`OperationInDoubt`)."""
        self._running()
        return self.event(OperationInDoubt, question=question)

    def answer_with(self, choice: str) -> OperationAnswered:
        """Answer the question; a new id for the follow-up operation if the choice has one."""
        if self.status is not Status.WAITING or self.question is None:
            raise DomainError(f"operation {self.id} is {self.status}, not waiting for an answer")
        if choice not in self.question.choices:
            offered = ", ".join(self.question.choices)
            raise DomainError(f"{choice!r} is not one of the choices ({offered})")
        # named by the question and the choice: the same answer given on two installations
        # before they sync requests one operation, which runs once
        follow_up = uuid.uuid5(self.id, choice) if self.question.choices[choice] else None
        return self.event(OperationAnswered, choice=choice, follow_up_id=follow_up)

    def cancel(self, now: datetime) -> OperationCancelled:
        self._unfinished()
        if self.status not in CANCELLABLE and not self.lease_expired(now):
            raise DomainError(f"operation {self.id} is {self.status} and cannot be cancelled")
        return self.event(OperationCancelled)

    def undo(self) -> OperationUndone:
        """Record that the current operation reverted this one's changes."""
        if self.status is Status.UNDONE:
            raise DomainError(f"operation {self.id} was already undone (by {self.undone_by})")
        if not self.status.finished:
            raise DomainError(f"operation {self.id} is {self.status}: it can be undone once done")
        return self.event(OperationUndone, previous=self.status)
