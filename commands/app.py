"""The application service: the event store, the views and the dispatcher.

:class:`Application` is an ``eventsourcing`` Application whose mapper is ours
(pydantic events, AES-256-GCM bound to the row). ``execute`` runs a command as an
operation: the operation's lifecycle events and the command's domain events are
written together, in one transaction for a command that finishes at once, and
the views catch up before it returns (read-your-writes). :class:`Eventpile` is
the mail application: the framework with the message index.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.persistence import RecordConflictError

from commands.base import Command, Outcome, handler_for
from commands.context import Context, ProgressCallback
from domain.aggregate import Aggregate, DomainError, fold
from domain.events import DomainEvent, operation_scope, uuid7
from domain.operation import Operation
from projections.base import Projection, RunReport, View
from projections.db import view_store
from projections.messages import MessageIndex
from projections.operations import OperationLog
from store.cipher import EventCipher
from store.home import Home
from store.keys import Keyring
from store.mapper import PydanticMapper, topic_of

if TYPE_CHECKING:
    from store.postgres import Listener

A = TypeVar("A", bound=Aggregate)

CONFLICT_RETRIES = 5
PROJECTIONS: tuple[type[Projection], ...] = (OperationLog,)
"""The framework's own views, kept by every application."""


POLL_S = 0.05
"""How often :meth:`Application.wait_for_events` looks at a SQLite log."""


def backend_settings(home: Home) -> dict[str, str]:
    """``eventsourcing`` settings: PostgreSQL if the home names a database, else SQLite."""
    if home.database:
        from store.postgres import settings

        return settings(home.database)
    return {"PERSISTENCE_MODULE": "store.sqlite:Factory", "SQLITE_DBNAME": str(home.events_db)}


class Conflict(Exception):
    """Another writer appended to one of the same streams first."""


class CommandFailed(Exception):
    """The command ran and failed; its operation record says so."""

    def __init__(self, operation_id: uuid.UUID, message: str):
        super().__init__(message)
        self.operation_id = operation_id


class Application(LibraryApplication[uuid.UUID]):
    """The application object: one home's event store, its views and the dispatcher.

    Its views are the framework's (:data:`PROJECTIONS`) plus the application's own:
    the ``projections`` class attribute of a subclass, then the ``projections``
    argument.
    """

    name = "eventpile"
    projections: ClassVar[tuple[type[Projection], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every configuration shares one store, whose tables the name prefixes.
        if "name" not in cls.__dict__:
            cls.name = Application.name

    def __init__(
        self,
        home: Home,
        keyring: Keyring,
        env: dict[str, str] | None = None,
        *,
        projections: Iterable[type[Projection]] = (),
    ):
        self.home = home
        self.keyring = keyring
        settings = {**backend_settings(home), **(env or {})}
        super().__init__(settings)
        store = view_store(home, keyring)
        self._listener: Listener | None = None
        self.views = {
            p.name: View(p(), store) for p in (*PROJECTIONS, *self.projections, *projections)
        }
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def construct_mapper(self) -> PydanticMapper:
        return PydanticMapper(EventCipher(self.keyring))

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        if self._listener is not None:
            self._listener.close()
        super().close()

    # the event store ------------------------------------------------------

    def append(self, events: Sequence[DomainEvent]) -> list[int]:
        """Write events in one transaction; their notification ids (log positions)."""
        stored = [self.mapper.to_stored_event(e) for e in events]
        try:
            ids = self.recorder.insert_events(stored)
        except RecordConflictError as e:
            raise Conflict(str(e)) from None
        return list(ids or ())

    def stream(self, aggregate_id: uuid.UUID) -> Iterator[DomainEvent]:
        """The events of one aggregate, oldest first."""
        return cast(Iterator[DomainEvent], self.events.get(aggregate_id))

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        return fold(cls, self.stream(aggregate_id))

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def wait_for_events(self, after: int, timeout: float) -> int:
        """The log's end once it passes ``after`` (another process wrote), or after ``timeout`` s.

        On PostgreSQL this sleeps until the writer's commit notifies us (LISTEN/NOTIFY);
        SQLite has no notifications, so it looks every :data:`POLL_S` seconds.
        """
        deadline = time.monotonic() + timeout
        url = self.home.database
        if url and self._listener is None:
            from store.postgres import Listener

            self._listener = Listener(url)
        while True:
            position = self.max_position()
            remaining = deadline - time.monotonic()
            if position > after or remaining <= 0:
                return position
            if self._listener is not None:
                self._listener.wait(remaining)
            else:
                time.sleep(min(POLL_S, remaining))

    def read(
        self, after: int, upto: int, topics: Sequence[type[DomainEvent]], limit: int
    ) -> list[tuple[int, DomainEvent]]:
        notifications = self.recorder.select_notifications(
            after + 1, limit, stop=upto, topics=[topic_of(t) for t in topics]
        )
        to_event = cast(PydanticMapper, self.mapper).to_domain_event
        return [(n.id, to_event(n)) for n in notifications]

    def all_events(self) -> Iterable[tuple[int, DomainEvent]]:
        position, upto = 0, self.max_position()
        while position < upto:
            page = self.read(position, upto, (), 1000)
            yield from page
            position = page[-1][0]

    # the views ------------------------------------------------------------

    def view(self, name: str) -> View:
        return self.views[name]

    def catch_up(self) -> dict[str, RunReport]:
        return {name: view.catch_up(self) for name, view in self.views.items()}

    # the dispatcher -------------------------------------------------------

    def execute(
        self,
        command: Command,
        *,
        parent_id: uuid.UUID | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Operation:
        """Run ``command`` now as a recorded operation and return its final state.

        A :class:`DomainError` (the command is refused) writes nothing. Any other
        exception is recorded as the operation's failure and raised as
        :class:`CommandFailed`.
        """
        handler = handler_for(command)
        operation_id = uuid7()
        public, private = command.split_args()
        with operation_scope(operation_id, self.keyring.installation_id):
            requested = Operation.request(
                operation_id,
                type(command).__name__,
                public,
                private,
                command.describe(),
                parent_id=parent_id,
            )
            initial = fold(Operation, [requested])
            assert initial is not None
            for attempt in range(CONFLICT_RETRIES):
                started = time.perf_counter()
                ctx = Context(self, initial, [requested], on_progress)
                ctx.record_operation(initial.begin(self.worker))
                try:
                    outcome = handler(command, ctx)
                    self._write_ending(ctx, self._completion(ctx, outcome, started))
                    return ctx.operation
                except Conflict as error:
                    if not ctx.flushed and attempt < CONFLICT_RETRIES - 1:
                        continue  # nothing written yet: decide again on fresh state
                    self._record_failure(ctx, error, started)
                    raise CommandFailed(operation_id, f"concurrent update: {error}") from error
                except DomainError as error:
                    if ctx.flushed:
                        self._record_failure(ctx, error, started)
                    raise
                except Exception as error:
                    self._record_failure(ctx, error, started)
                    raise CommandFailed(operation_id, str(error)) from error
        raise AssertionError("unreachable")

    @staticmethod
    def _completion(ctx: Context, outcome: Outcome, started: float) -> DomainEvent:
        return ctx.operation.complete(
            outcome.message, outcome.result, outcome.private, time.perf_counter() - started
        )

    @staticmethod
    def _write_ending(ctx: Context, ending: DomainEvent) -> None:
        """Write the attempt with its ending; if the write fails, the attempt has not ended."""
        running = ctx.operation
        ctx.record_operation(ending)
        try:
            ctx.flush()
        except BaseException:
            if ctx.pending and ctx.pending[-1] is ending:  # not written
                ctx.pending.pop()
                ctx.operation = running
            raise

    def _record_failure(self, ctx: Context, error: BaseException, started: float) -> None:
        """Keep the record of the attempt, without the domain events not yet written."""
        if not ctx.flushed:
            ctx.pending[:] = [e for e in ctx.pending if e.originator_id == ctx.operation_id]
        ctx.record_operation(ctx.operation.fail(error, time.perf_counter() - started))
        ctx.flush()


class Eventpile(Application):
    """The mail application: the framework with the message index."""

    projections: ClassVar[tuple[type[Projection], ...]] = (MessageIndex,)
