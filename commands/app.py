"""The application service: the event store, the views and the dispatcher.

:class:`Application` is an ``eventsourcing`` Application whose mapper is ours
(pydantic events, AES-256-GCM bound to the row). ``execute`` runs a command as an
operation: the operation's lifecycle events and the command's domain events are
written together, in one transaction for a command that finishes at once, and
the views catch up before it returns (read-your-writes). ``submit`` only records
a command as an operation, for a worker to ``run`` when it is due (a claim with a
lease, so that one process runs it at a time). :class:`Eventpile` is the mail
application: the framework with the message index and the mail commands.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.persistence import RecordConflictError
from pydantic import ValidationError

from commands import mail, send  # noqa: F401  (the mail application's commands register)
from commands.base import (
    Command,
    Outcome,
    Retryable,
    command_from_record,
    explain,
    handler_for,
    registered,
)
from commands.context import Context, ProgressCallback
from commands.operations import WorkerLost, next_attempt_at, retry_policy
from domain.aggregate import Aggregate, DomainError, fold
from domain.events import DomainEvent, operation_scope, utcnow, uuid7
from domain.operation import Operation, OperationRequested, Status
from projections.base import Page, Projection, RunReport, Topics, View, catch_up_together
from projections.db import ViewDB, view_store
from projections.feed import Feed
from projections.messages import MessageIndex
from projections.operations import OperationLog
from projections.queue import Queue
from store.cipher import EventCipher
from store.errors import StoreError
from store.home import Home
from store.keys import Keyring
from store.mapper import PydanticMapper, RowReader, topic_of
from store.sqlite import Recorder

if TYPE_CHECKING:
    from store.postgres import Listener

A = TypeVar("A", bound=Aggregate)

CONFLICT_RETRIES = 5
CONFLICT_BACKOFF_S = 0.01
"""The longest pause before the first retry after a conflict; it doubles each time."""
LEASE_S = 300.0
"""How long a started attempt holds its operation; each write of the attempt renews it."""
RENEW_AFTER = timedelta(seconds=1)
"""How much of its lease a claimed operation may have spent when it starts without
renewing it first (operations claimed together start one after another)."""
PROJECTIONS: tuple[type[Projection], ...] = (OperationLog, Queue, Feed)
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


class NotClaimable(DomainError):
    """The operation is not due: finished, waiting for an answer, or held by a worker."""


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

    Give each thread its own instance: its view connections and the events it keeps
    in memory for catching up are not guarded for use by several threads at once.
    (Any number of instances and processes may share one home.)
    """

    name = "eventpile"
    projections: ClassVar[tuple[type[Projection], ...]] = ()
    _deferring = False

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
        clock: Callable[[], datetime] = utcnow,
    ):
        self.home = home
        self.keyring = keyring
        self.clock = clock
        self.lease_s = LEASE_S
        home.check_log()
        settings = {**backend_settings(home), **(env or {})}
        super().__init__(settings)
        store = view_store(home, keyring)
        self._listener: Listener | None = None
        self.written = RecentWrites(self)
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
        positions = list(ids or ())
        self.written.add(positions, events)
        return positions

    def stream(self, aggregate_id: uuid.UUID) -> Iterator[DomainEvent]:
        """The events of one aggregate, oldest first."""
        return cast(Iterator[DomainEvent], self.events.get(aggregate_id))

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        return fold(cls, self.stream(aggregate_id))

    def load_many(self, cls: type[A], ids: Collection[uuid.UUID]) -> dict[uuid.UUID, A | None]:
        """The states of several aggregates (on SQLite in one query, not one each)."""
        if not isinstance(self.recorder, Recorder):
            return {aggregate_id: self.load(cls, aggregate_id) for aggregate_id in ids}
        streams: dict[uuid.UUID, list[DomainEvent]] = {aggregate_id: [] for aggregate_id in ids}
        to_event = cast(PydanticMapper, self.mapper).to_domain_event
        for stored in self.recorder.select_streams(ids):
            streams[cast(uuid.UUID, stored.originator_id)].append(to_event(stored))
        return {aggregate_id: fold(cls, events) for aggregate_id, events in streams.items()}

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

    def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page:
        rows = cast(RowReader, self.recorder).select_rows(
            after, upto, [topic_of(t) for t in topics], limit
        )
        decode = cast(PydanticMapper, self.mapper).decode
        return [(row[0], decode(*row[1:])) for row in rows]

    def all_events(self) -> Iterable[tuple[int, DomainEvent]]:
        position, upto = 0, self.max_position()
        while position < upto:
            page = self.read(position, upto, (), 1000)
            yield from page
            position = page[-1][0]

    # the views ------------------------------------------------------------

    def view(self, name: str) -> View:
        return self.views[name]

    def current(self, name: str) -> ViewDB:
        """The database of view ``name``, caught up with the log first."""
        view = self.views[name]
        view.catch_up(self.written)
        return view.db

    def catch_up(self) -> dict[str, RunReport]:
        """Bring every view up to date (nothing within :meth:`deferring_catch_up`)."""
        if self._deferring:
            return {}
        reports = catch_up_together(list(self.views.values()), self.written)
        self.written.clear()
        return reports

    @contextmanager
    def deferring_catch_up(self) -> Iterator[None]:
        """Within, :meth:`catch_up` does nothing, so commands return before the views
        have their writes: for a worker, which catches every view up once per batch of
        operations instead of twice per operation (a handler still catches up a view it
        reads). The first catch-up after it brings every view up to date."""
        self._deferring, deferring = True, self._deferring
        try:
            yield
        finally:
            self._deferring = deferring

    # the dispatcher -------------------------------------------------------

    def lease_end(self) -> datetime:
        """Until when an attempt started (or renewed) now holds its operation."""
        return self.clock() + timedelta(seconds=self.lease_s)

    def request(
        self,
        command: Command,
        operation_id: uuid.UUID | None = None,
        *,
        run_after: datetime | None = None,
        parent_id: uuid.UUID | None = None,
    ) -> OperationRequested:
        """The (unwritten) event that records ``command`` as a new operation."""
        handler_for(command)
        operation_id = operation_id or uuid7()
        public, private = command.split_args()
        with operation_scope(operation_id, self.keyring.installation_id):
            return Operation.request(
                operation_id,
                type(command).__name__,
                public,
                private,
                command.describe(),
                run_after=run_after,
                parent_id=parent_id,
            )

    def submit(
        self,
        command: Command,
        *,
        run_after: datetime | None = None,
        parent_id: uuid.UUID | None = None,
    ) -> Operation:
        """Record ``command`` as an operation for a worker to run (not before ``run_after``)."""
        requested = self.request(command, run_after=run_after, parent_id=parent_id)
        self.append([requested])
        self.catch_up()
        return _first_state(requested)

    def execute(
        self,
        command: Command,
        *,
        parent_id: uuid.UUID | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Operation:
        """Run ``command`` now as a recorded operation and return its state.

        A :class:`DomainError` (the command is refused) writes nothing, nor does a
        :class:`StoreError` (tampered data: nothing is added to it). A
        :class:`Retryable` error leaves the operation retrying (a worker takes it
        from there), a question leaves it waiting for an answer. Any other
        exception is recorded as the operation's failure and raised as
        :class:`CommandFailed`.
        """
        requested = self.request(command, parent_id=parent_id)
        initial = _first_state(requested)
        with operation_scope(initial.id, self.keyring.installation_id):
            started = initial.begin(self.worker, self.lease_end())
        return self._perform(command, initial.apply(started), [requested, started], on_progress)

    def run(
        self,
        operation_id: uuid.UUID,
        *,
        force: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> Operation:
        """Claim a recorded operation that is due (any time with ``force``) and run it.

        As :meth:`claim` then :meth:`perform`: otherwise as :meth:`execute`, except
        that a refusal is recorded too (the operation exists already).
        """
        state = self.load(Operation, operation_id)
        if state is None:
            raise DomainError(f"there is no operation {operation_id}")
        [claim] = self.claim([state], force=force)
        return self.perform(claim, on_progress)

    def claim(self, states: Sequence[Operation], *, force: bool = False) -> list[Claim]:
        """Claim the next attempt of each operation, all in one write, deciding on ``states``
        (a worker's come from the queue view: one that is no longer current conflicts).

        A claim is an ``OperationStarted`` at the stream's next version: of two processes
        claiming at once, one gets :class:`Conflict` and claims nothing; one that finds an
        operation not due (any time with ``force``), held by a worker, or whose command is
        not registered in this process (another application's: its workers run it) gets
        :class:`NotClaimable`. An operation that cannot run (its command no longer
        validates, or the worker of its last attempt died) is failed instead.
        """
        now, lease_until = self.clock(), self.lease_end()
        claims: list[Claim] = []
        for state in states:
            if registered(state.command) is None:
                raise NotClaimable(f"operation {state.id} runs {state.command}, unknown here")
            with operation_scope(state.id, self.keyring.installation_id):
                try:
                    started = state.claim(self.worker, now, lease_until, force=force)
                except DomainError as error:
                    raise NotClaimable(str(error)) from None
                try:
                    claims.append(Claim(state.apply(started), started, _runnable(state, now)))
                except (ValidationError, WorkerLost) as error:
                    failed = state.fail(error, 0.0)
                    message = explain(error) if isinstance(error, ValidationError) else str(error)
                    claims.append(Claim(state.apply(failed), failed, None, message))
        self.append([c.event for c in claims])
        return claims

    def perform(self, claim: Claim, on_progress: ProgressCallback | None = None) -> Operation:
        """Run a claimed operation (:class:`CommandFailed` for one failed instead).

        One claimed a while ago (in a batch, behind others) first renews its lease, so that
        every attempt starts with a whole lease (:class:`Conflict` if it was taken over).
        """
        if claim.command is None:
            self.catch_up()
            raise CommandFailed(claim.state.id, claim.error)
        state = claim.state
        if state.lease_until is not None and state.lease_until < self.lease_end() - RENEW_AFTER:
            with operation_scope(state.id, self.keyring.installation_id):
                renewed = state.renew(self.lease_end())
            self.append([renewed])
            state = state.apply(renewed)
        return self._perform(claim.command, state, [], on_progress)

    def _perform(
        self,
        command: Command,
        initial: Operation,
        head: list[DomainEvent],
        on_progress: ProgressCallback | None,
    ) -> Operation:
        """Run the handler from ``initial`` (``head``: its events not yet written).

        Records how the attempt ended. A conflict on other streams before anything
        was written runs the handler again on fresh state.
        """
        handler = handler_for(command)
        operation_id = initial.id
        with operation_scope(operation_id, self.keyring.installation_id):
            for attempt in range(CONFLICT_RETRIES):
                started = time.perf_counter()
                ctx = Context(self, initial, list(head), on_progress)
                try:
                    outcome = handler(command, ctx)
                    self._write_ending(ctx, self._ending(ctx, outcome, started))
                except KeyboardInterrupt:  # Ctrl-C: the attempt ends now, not with its lease
                    if ctx.operation.status is Status.RUNNING:
                        stopped = KeyboardInterrupt("interrupted")
                        self._record_end(ctx, ctx.operation.fail(stopped, _since(started)))
                    raise
                except Conflict as error:
                    if self._taken_over(ctx):
                        raise Conflict(
                            f"operation {operation_id} was changed by another process"
                        ) from error
                    if not ctx.flushed and attempt < CONFLICT_RETRIES - 1:
                        # nothing written yet: decide again on fresh state, after a random
                        # pause, so that processes racing for the same streams fall out of step
                        time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**attempt))
                        continue
                    self._record_end(ctx, ctx.operation.fail(error, _since(started)))
                    raise CommandFailed(operation_id, f"concurrent update: {error}") from error
                except (DomainError, StoreError) as error:  # refused, or the store untrusted
                    if self._stored_version(ctx):
                        self._record_end(ctx, ctx.operation.fail(error, _since(started)))
                    raise
                except Exception as error:
                    retry_at = self._retry_at(command, ctx.operation, error)
                    if retry_at is not None:
                        ending = ctx.operation.retry_later(error, retry_at, _since(started))
                        self._record_end(ctx, ending)
                        return ctx.operation
                    self._record_end(ctx, ctx.operation.fail(error, _since(started)))
                    raise CommandFailed(operation_id, str(error)) from error
                else:  # written: a view failing to catch up now is that view's error
                    self.catch_up()
                    return ctx.operation
        raise AssertionError("unreachable")

    @staticmethod
    def _ending(ctx: Context, outcome: Outcome, started: float) -> DomainEvent:
        """The handler returned: the operation is complete, or waits for an answer."""
        if ctx.question is not None:
            return ctx.operation.ask(
                ctx.question, outcome.message, outcome.result, outcome.private, _since(started)
            )
        return ctx.operation.complete(
            outcome.message, outcome.result, outcome.private, _since(started)
        )

    @staticmethod
    def _write_ending(ctx: Context, ending: DomainEvent) -> None:
        """Write the attempt with its ending; if the write fails, the attempt has not ended."""
        running = ctx.operation
        ctx.record_operation(ending)
        try:
            ctx.flush(catch_up=False)
        except BaseException:
            if ctx.pending and ctx.pending[-1] is ending:  # not written
                ctx.pending.pop()
                ctx.operation = running
            raise

    def _retry_at(self, command: Command, state: Operation, error: Exception) -> datetime | None:
        if not isinstance(error, Retryable):
            return None
        policy = retry_policy(type(command))
        return next_attempt_at(policy, state.attempts, self.clock(), random.random())

    def _record_end(self, ctx: Context, event: DomainEvent) -> None:
        """Record how the attempt ended, without the domain events not yet written."""
        ctx.pending[:] = [e for e in ctx.pending if e.originator_id == ctx.operation_id]
        ctx.record_operation(event)
        ctx.flush()

    @staticmethod
    def _stored_version(ctx: Context) -> int:
        """The operation's version in the store, as this attempt knows it."""
        unwritten = sum(1 for e in ctx.pending if e.originator_id == ctx.operation_id)
        return ctx.operation.version - unwritten

    def _taken_over(self, ctx: Context) -> bool:
        """Did another process write to the operation since this attempt last did?"""
        stored = self.load(Operation, ctx.operation_id)
        return (stored.version if stored else 0) != self._stored_version(ctx)


@dataclass(frozen=True)
class Claim:
    """An operation claimed for its next attempt, or failed because it cannot run."""

    state: Operation
    """The state after ``event``."""
    event: DomainEvent
    command: Command | None
    """What to run; None for an operation failed (because of ``error``)."""
    error: str = ""


def _runnable(state: Operation, now: datetime) -> Command:
    """The operation's command, if its next attempt may run."""
    command = command_from_record(state.command, {**state.args, **state.private_args})
    if state.lease_expired(now) and state.attempts >= retry_policy(type(command)).max_attempts:
        raise WorkerLost(f"the worker {state.worker} stopped during the last attempt")
    return command


def _first_state(requested: OperationRequested) -> Operation:
    state = fold(Operation, [requested])
    assert state is not None
    return state


def _since(started: float) -> float:
    return time.perf_counter() - started


class Eventpile(Application):
    """The mail application: the framework with the message index."""

    projections: ClassVar[tuple[type[Projection], ...]] = (MessageIndex,)


class RecentWrites:
    """The events this application appended last, while their positions run on without a
    gap: a catch-up right after a command takes them from here instead of reading and
    decrypting them again. Other reads (a rebuild, ``verify``) go to the log."""

    LIMIT = 20_000

    def __init__(self, app: Application):
        self.app = app
        self.events: Page = []

    def add(self, positions: list[int], events: Sequence[DomainEvent]) -> None:
        run = self.events
        if not positions or positions[-1] - positions[0] != len(positions) - 1:
            run.clear()  # another writer's events are in between: read them all
            return
        if run and run[-1][0] + 1 != positions[0]:
            run.clear()
        run += zip(positions, events, strict=True)
        del run[: -self.LIMIT]

    def clear(self) -> None:
        self.events.clear()

    def max_position(self) -> int:
        return self.app.max_position()

    def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page:
        run = self.events
        if not run or not run[0][0] <= after + 1 or upto > run[-1][0]:
            return self.app.read(after, upto, topics, limit)
        first = run[0][0]
        page = run[after + 1 - first : upto + 1 - first]
        return [(p, e) for p, e in page if not topics or type(e) in topics][:limit]
