"""The dispatcher: a command runs as a recorded operation.

``execute`` runs a command as an operation: the operation's lifecycle events and
the command's domain events are written together, in one transaction for a
command that finishes at once, and the views catch up before it returns
(read-your-writes). ``submit`` only records a command as an operation, for a
worker to run when it is due (see :mod:`eventpile.commands.claims`).
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, cast

from eventpile.commands.base import Command, Outcome, Retryable
from eventpile.commands.context import Context, ProgressCallback
from eventpile.commands.eventlog import Conflict, EventLog
from eventpile.commands.operations import next_attempt_at, retry_policy
from eventpile.domain.aggregate import DomainError, fold
from eventpile.domain.events import DomainEvent, uuid7
from eventpile.domain.operation import Operation, OperationRequested, Status
from eventpile.store.errors import StoreError

if TYPE_CHECKING:
    from eventpile.commands.app import Application

CONFLICT_RETRIES = 12
"""Attempts of a command whose writes another command keeps overtaking: each decides
again on the fresh state (where its decision no longer holds, it is refused in its own
words). Four processes each tagging the same messages 25 times lost 9 of 100 commands
with 5 attempts and pauses of at most 10 ms doubling."""
CONFLICT_BACKOFF_S = 0.01
"""The longest pause before the first retry after a conflict; it doubles each time, up
to :data:`CONFLICT_BACKOFF_MAX_S` (each pause is a random part of it, so that racing
processes fall out of step)."""
CONFLICT_BACKOFF_MAX_S = 0.5
LEASE_S = 300.0
"""How long a started attempt holds its operation; each write of the attempt renews it."""


class CommandFailed(Exception):
    """The command ran and failed; its operation record says so."""

    def __init__(self, operation_id: uuid.UUID, message: str):
        super().__init__(message)
        self.operation_id = operation_id


class Dispatcher(EventLog):
    """Runs commands as operations, with the handlers of the application's registry."""

    lease_s = LEASE_S

    @cached_property
    def worker(self) -> str:
        """Who runs attempts here, as recorded in them: this host and process."""
        return f"{socket.gethostname()}:{os.getpid()}"

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
        runs_on: uuid.UUID | None = None,
    ) -> OperationRequested:
        """The (unwritten) event that records ``command`` as a new operation (to run on
        installation ``runs_on``, if not on this one)."""
        self.registry.handler(command)
        operation_id = operation_id or uuid7()
        public, private = command.split_args()
        with self.scope(operation_id):
            return Operation.request(
                operation_id,
                type(command).__name__,
                public,
                private,
                command.describe(),
                run_after=run_after,
                parent_id=parent_id,
                runs_on=runs_on if runs_on != self.keyring.installation_id else None,
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

        A command with ``outside_effects`` (it acts beyond the log: delivers a mail) is
        recorded as started before its handler runs, so that an attempt that dies is
        found by its lease; any other is written whole when its handler returns.
        """
        self.heed_forgettings()
        requested = self.request(command, parent_id=parent_id)
        initial = _first_state(requested)
        with self.scope(initial.id):
            started = initial.begin(self.worker, self.lease_end())
        head: list[DomainEvent] = [requested, started]
        if type(command).outside_effects:
            self.append(head)
            head = []
        return self._perform(command, initial.apply(started), head, on_progress)

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
        handler = self.registry.handler(command)
        operation_id = initial.id
        with self.scope(operation_id):
            for attempt in range(CONFLICT_RETRIES):
                started = time.perf_counter()
                ctx = Context(cast("Application", self), initial, list(head), on_progress)
                try:
                    outcome = handler(command, ctx)
                    self._write_ending(ctx, self._ending(ctx, outcome, started))
                except KeyboardInterrupt:  # Ctrl-C: the attempt ends now, not with its lease
                    if ctx.operation.status is Status.RUNNING:
                        self._record_end(ctx, _interrupted(ctx.operation, _since(started)))
                    raise
                except Conflict as error:
                    if self._taken_over(ctx):
                        raise Conflict(
                            f"operation {operation_id} was changed by another process"
                        ) from error
                    if not ctx.flushed and attempt < CONFLICT_RETRIES - 1:
                        # nothing written yet: decide again on fresh state, after a random
                        # pause, so that processes racing for the same streams fall out of step
                        longest = min(CONFLICT_BACKOFF_MAX_S, CONFLICT_BACKOFF_S * 2**attempt)
                        time.sleep(random.uniform(0, longest))
                        continue
                    said = (
                        f"{error}, after part of it was written (its operation says what): "
                        "run it again to finish"
                        if ctx.flushed
                        else f"{error}, {CONFLICT_RETRIES} times in a row: nothing of it was "
                        "written; run it again"
                    )
                    self._record_end(ctx, ctx.operation.fail(error, _since(started)))
                    raise CommandFailed(operation_id, said) from error
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


def _interrupted(state: Operation, elapsed_s: float) -> DomainEvent:
    """How an interrupted attempt ends: failed, or, if it stopped where it could not know
    how what it did went (in doubt), waiting for the question it prepared."""
    if state.in_doubt is None:
        return state.fail(KeyboardInterrupt("interrupted"), elapsed_s)
    return state.ask(state.in_doubt, IN_DOUBT, {}, {}, elapsed_s)


IN_DOUBT = "Stopped before it knew how it went: in doubt"


def _first_state(requested: OperationRequested) -> Operation:
    state = fold(Operation, [requested])
    assert state is not None
    return state


def _since(started: float) -> float:
    return time.perf_counter() - started
