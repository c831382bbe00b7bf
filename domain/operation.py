"""The ``Operation`` aggregate: one command invocation, Mailpile's "event".

It records how the command was invoked (its type and validated arguments, split
into public and private), its progress, its result or error and its timing.
Every domain event the command writes carries the operation's id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from domain.aggregate import Aggregate, DomainError, first_event
from domain.events import DomainEvent, Private

JSONDict = dict[str, Any]


class Status(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETE, Status.FAILED})


class OperationRequested(DomainEvent):
    command: str
    args: JSONDict
    private_args: Annotated[JSONDict, Private]
    message: str
    run_after: datetime | None = None
    parent_id: uuid.UUID | None = None

    def describe(self) -> str:
        return self.message


class OperationStarted(DomainEvent):
    attempt: int
    worker: str = ""

    def describe(self) -> str:
        return f"Started (attempt {self.attempt})"


class OperationProgressed(DomainEvent):
    done: int
    total: int | None = None
    message: str = ""

    def describe(self) -> str:
        return self.message or f"{self.done} of {self.total or '?'} done"


class OperationCompleted(DomainEvent):
    message: str
    result: JSONDict
    private_result: Annotated[JSONDict, Private] = {}
    elapsed_s: float

    def describe(self) -> str:
        return self.message


class OperationFailed(DomainEvent):
    error_type: str
    error: Annotated[str, Private]
    elapsed_s: float

    def describe(self) -> str:
        return f"Failed: {self.error_type}"


class Operation(Aggregate):
    command: str
    args: JSONDict
    private_args: JSONDict
    message: str
    status: Status
    requested_at: datetime
    run_after: datetime | None = None
    parent_id: uuid.UUID | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    progress: tuple[int, int | None] | None = None
    result: JSONDict = {}
    private_result: JSONDict = {}
    error_type: str | None = None
    error: str | None = None

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
        )

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            case OperationStarted(attempt=attempt):
                return self.model_copy(
                    update={
                        "status": Status.RUNNING,
                        "attempts": attempt,
                        "started_at": self.started_at or event.timestamp,
                    }
                )
            case OperationProgressed(done=done, total=total, message=message):
                return self.model_copy(
                    update={"progress": (done, total), "message": message or self.message}
                )
            case OperationCompleted():
                return self.model_copy(
                    update={
                        "status": Status.COMPLETE,
                        "message": event.message,
                        "result": event.result,
                        "private_result": event.private_result,
                        "finished_at": event.timestamp,
                        "elapsed_s": event.elapsed_s,
                    }
                )
            case OperationFailed():
                return self.model_copy(
                    update={
                        "status": Status.FAILED,
                        "error_type": event.error_type,
                        "error": event.error,
                        "finished_at": event.timestamp,
                        "elapsed_s": event.elapsed_s,
                    }
                )
        return self

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
        )

    def _unfinished(self) -> None:
        if self.status.finished:
            raise DomainError(f"operation {self.id} is already {self.status}")

    def begin(self, worker: str = "") -> OperationStarted:
        self._unfinished()
        return self.event(OperationStarted, attempt=self.attempts + 1, worker=worker)

    def report(self, done: int, total: int | None, message: str = "") -> OperationProgressed:
        self._unfinished()
        return self.event(OperationProgressed, done=done, total=total, message=message)

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
