"""Claims: a worker (or ``retry``) takes a recorded operation's next attempt.

A claim is an ``OperationStarted`` at the operation stream's next version, written
for several operations at once: of two processes claiming at once, one conflicts
and claims nothing. The attempt holds the operation for a lease, which each of its
writes renews; a claimed operation that cannot run is failed instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from eventpile.commands.base import Command, explain
from eventpile.commands.context import ProgressCallback
from eventpile.commands.dispatcher import IN_DOUBT, CommandFailed, Dispatcher
from eventpile.commands.operations import WorkerLost, retry_policy
from eventpile.commands.registry import Registry
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import Operation, Status

RENEW_AFTER = timedelta(seconds=1)
"""How much of its lease a claimed operation may have spent when it starts without
renewing it first (operations claimed together start one after another)."""


class NotClaimable(DomainError):
    """The operation is not due: finished, waiting for an answer, or held by a worker."""


@dataclass(frozen=True)
class Claim:
    """An operation claimed for its next attempt; or failed because it cannot run, or
    asking the question its last attempt, dead in doubt, left (no ``command`` then)."""

    state: Operation
    """The state after ``event``."""
    event: DomainEvent
    command: Command | None
    """What to run; None for an operation failed (because of ``error``) or asking."""
    error: str = ""


def _runnable(registry: Registry, state: Operation, now: datetime) -> Command:
    """The operation's command, if its next attempt may run."""
    command = registry.command_from_record(state.command, {**state.args, **state.private_args})
    if state.lease_expired(now) and state.attempts >= retry_policy(type(command)).max_attempts:
        raise WorkerLost(f"the worker {state.worker} stopped during the last attempt")
    return command


class Claims(Dispatcher):
    """Claiming recorded operations and running the claimed attempts."""

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
        [claim] = self.claim([self.require(Operation, operation_id)], force=force)
        return self.perform(claim, on_progress)

    def claim(self, states: Sequence[Operation], *, force: bool = False) -> list[Claim]:
        """Claim the next attempt of each operation, all in one write, deciding on ``states``
        (a worker's come from the queue view: one that is no longer current conflicts).

        A claim is an ``OperationStarted`` at the stream's next version: of two processes
        claiming at once, one gets :class:`Conflict` and claims nothing; one that finds an
        operation not due (any time with ``force``), held by a worker, or whose command is
        not registered in this process (another application's: its workers run it), or
        that another installation requested (it runs there, see :mod:`eventpile.commands.sync`) gets
        :class:`NotClaimable`. An operation that cannot run (its command no longer
        validates, or the worker of its last attempt died) is failed instead; one whose
        last attempt died in doubt (see :meth:`Context.in_doubt
        <eventpile.commands.context.Context.in_doubt>`) asks its question instead.
        """
        now, lease_until = self.clock(), self.lease_end()
        claims: list[Claim] = []
        for state in states:
            if self.registry.command_class(state.command) is None:
                raise NotClaimable(f"operation {state.id} runs {state.command}, unknown here")
            if not state.belongs_to(self.keyring.installation_id):
                raise NotClaimable(
                    f"operation {state.id} runs on installation "
                    f"{state.runs_on.hex[:8] if state.runs_on else ''}, not on this one"
                )
            with self.scope(state.id):
                if state.in_doubt is not None and state.lease_expired(now):
                    asked = state.ask(state.in_doubt, IN_DOUBT, {}, {}, 0.0)
                    claims.append(Claim(state.apply(asked), asked, None))
                    continue
                try:
                    started = state.claim(self.worker, now, lease_until, force=force)
                except DomainError as error:
                    raise NotClaimable(str(error)) from None
                try:
                    claims.append(
                        Claim(state.apply(started), started, _runnable(self.registry, state, now))
                    )
                except (ValidationError, WorkerLost) as error:
                    failed = state.fail(error, 0.0)
                    message = explain(error) if isinstance(error, ValidationError) else str(error)
                    claims.append(Claim(state.apply(failed), failed, None, message))
        self.append([c.event for c in claims])
        return claims

    def perform(self, claim: Claim, on_progress: ProgressCallback | None = None) -> Operation:
        """Run a claimed operation (:class:`CommandFailed` for one failed instead; the
        state of one that asks its question instead).

        One claimed a while ago (in a batch, behind others) first renews its lease, so that
        every attempt starts with a whole lease (:class:`Conflict` if it was taken over).
        """
        if claim.command is None:
            self.catch_up()
            if claim.state.status is Status.WAITING:
                return claim.state
            raise CommandFailed(claim.state.id, claim.error)
        state = claim.state
        if state.lease_until is not None and state.lease_until < self.lease_end() - RENEW_AFTER:
            with self.scope(state.id):
                renewed = state.renew(self.lease_end())
            self.append([renewed])
            state = state.apply(renewed)
        return self._perform(claim.command, state, [], on_progress)
