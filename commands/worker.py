"""The worker: runs the operations that are due, from the queue view.

Several workers (processes, or machines sharing a PostgreSQL store) may run at
once: each claims an operation by writing its next event, so only one of them
runs it; the others get a conflict and move on (to the other end of the queue).
``drain`` runs what is due now (``eventpile worker --once``); ``serve`` keeps
doing so until stopped, waking when the next operation falls due or another
process writes to the log (at once on PostgreSQL, which notifies; SQLite is
polled); given a purge, it runs it once a day.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from eventpile.commands.app import Application
from eventpile.commands.claims import Claim, NotClaimable
from eventpile.commands.dispatcher import CommandFailed
from eventpile.commands.eventlog import Conflict
from eventpile.commands.retention import Purge
from eventpile.domain.aggregate import DomainError
from eventpile.domain.operation import Operation
from eventpile.projections.operations import latest_request
from eventpile.projections.queue import due_operations, next_due
from eventpile.store.errors import StoreError

BATCH = 100
CLAIM_AT_ONCE = 16
"""The most operations a worker claims in one write: after a quick one (under
:data:`QUICK_S`); after a slow one, one at a time, so that none waits long claimed."""
QUICK_S = 1.0
PURGE_EVERY_S = 86400.0
STOP_CHECK_S = 0.5
"""How long ``serve`` may take to notice that it should stop."""


@dataclass(frozen=True)
class Ran:
    """What became of one operation the worker took up."""

    operation_id: uuid.UUID
    status: str
    message: str


class Worker:
    def __init__(
        self,
        app: Application,
        on_ran: Callable[[Ran], None] | None = None,
        purge: Purge | None = None,
    ):
        self.app = app
        self.on_ran = on_ran
        self.at_once = 1
        self.purge = purge
        """What ``serve`` runs once a day (``EVENTPILE_PURGE_OLDER_THAN``), if anything."""
        self._purge_due = 0.0
        """Before this (Unix time), no purge is due: the log is not asked until then."""

    def retention(self) -> Operation | None:
        """Run :attr:`purge` if this installation requested none in the last day: the
        operation. (``serve`` asks at each turn; the operation log is read only once the
        day this worker knows of has passed, another worker's purge included.)"""
        now = self.app.clock().timestamp()
        if self.purge is None or now < self._purge_due:
            return None
        here = self.app.keyring.installation_id
        latest = latest_request(self.app.current("operations"), "Purge", here)
        if latest is not None and now - latest < PURGE_EVERY_S:
            self._purge_due = latest + PURGE_EVERY_S
            return None
        self._purge_due = now + PURGE_EVERY_S
        return self.app.purge(self.purge)

    def drain(self) -> list[Ran]:
        """Run every operation due now (each at most once), until none is left.

        The longest due first, a batch read from the queue at a time, claimed several
        in one write (:data:`CLAIM_AT_ONCE`) from the states the queue holds. The views
        catch up once per batch (before reading it), not after each operation, and are
        current with what ran when it returns.
        """
        queue = self.app.view("queue")
        tried: set[uuid.UUID] = set()
        ran: list[Ran] = []
        while True:
            self.app.catch_up()
            # an operation tried already may still be due (its retry, say)
            found = due_operations(
                queue.db, self.app.clock(), BATCH + len(tried), self.app.keyring.installation_id
            )
            # one whose command is not registered here is another application's: left pending
            tried.update(
                op.id for op in found if self.app.registry.command_class(op.command) is None
            )
            todo = deque(op for op in found if op.id not in tried)
            if not todo:
                return ran
            with self.app.deferring_catch_up():
                for result in self._batch(todo, tried):
                    ran.append(result)
                    if self.on_ran is not None:
                        self.on_ran(result)

    def _batch(self, todo: deque[Operation], tried: set[uuid.UUID]) -> Iterator[Ran]:
        """Claim and run operations from one end of ``todo``, until none is left or both
        ends are taken.

        Workers draining together read the same batch: one whose claim conflicts goes on
        from the other end, so that two walk the batch from both ends instead of racing
        for each operation; operations it did not claim are read again with the next
        batch (each once, claimed alone).
        """
        from_end, taken = False, 0
        while todo and taken < 2:
            size = min(self.at_once, len(todo))
            chunk = [todo.pop() if from_end else todo.popleft() for _ in range(size)]
            try:
                claims = self.app.claim(chunk)
            except (Conflict, NotClaimable):  # another worker is at this end
                if size == 1:
                    tried.add(chunk[0].id)
                from_end, taken, self.at_once = not from_end, taken + 1, 1
                continue
            taken = 0
            tried.update(op.id for op in chunk)
            claimed_at = self.app.clock()
            for claim in claims:
                if self.app.clock() - claimed_at > timedelta(seconds=self.app.lease_s / 2):
                    break  # the rest wait for their leases to run out, then another attempt
                result = self._perform(claim)
                if result is not None:
                    yield result

    def _perform(self, claim: Claim) -> Ran | None:
        """Run one claimed operation; None if another process took it over meanwhile."""
        operation_id, started = claim.state.id, time.monotonic()
        try:
            state = self.app.perform(claim)
        except Conflict:
            return None
        except (CommandFailed, DomainError) as error:
            now = self.app.load(Operation, operation_id)
            return Ran(operation_id, now.status.value if now else "unknown", str(error))
        finally:
            self.at_once = CLAIM_AT_ONCE if time.monotonic() - started < QUICK_S else 1
        return Ran(operation_id, state.status.value, state.message)

    def serve(self, stop: threading.Event, poll_s: float = 5.0) -> None:
        """Drain; then wait until something falls due, another process writes to the log
        (new work, maybe), or ``poll_s`` passes; again, until ``stop`` is set. A home whose
        key file is gone (deleted, moved) stops it with a :class:`StoreError`."""
        while not stop.is_set():
            if not self.app.home.exists():
                raise StoreError(f"the home {self.app.home.path} is gone: the worker stops")
            self.retention()
            position = self.app.max_position()  # before draining: a write after it wakes us
            began = self.app.clock().timestamp()
            self.drain()
            wake = next_due(self.app.view("queue").db, self.app.keyring.installation_id)
            if wake is not None and wake <= began:
                wake = None  # due already when the drain began, which left it: not ours to run
            wait = poll_s if wake is None else wake - self.app.clock().timestamp()
            deadline = time.monotonic() + min(poll_s, wait)
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if self.app.wait_for_events(position, min(left, STOP_CHECK_S)) > position:
                    break
