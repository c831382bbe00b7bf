"""The worker: runs the operations that are due, from the queue view.

Several workers (processes, or machines sharing a PostgreSQL store) may run at
once: each claims an operation by writing its next event, so only one of them
runs it; the others get a conflict and move on. ``drain`` runs what is due now
(``eventpile worker --once``); ``serve`` keeps doing so until stopped, waking
when the next operation falls due or another process writes to the log (at once
on PostgreSQL, which notifies; SQLite is polled).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from commands.app import Application, CommandFailed, Conflict, NotClaimable
from domain.aggregate import DomainError
from domain.operation import Operation
from projections.queue import due, next_due

BATCH = 100
STOP_CHECK_S = 0.5
"""How long ``serve`` may take to notice that it should stop."""


@dataclass(frozen=True)
class Ran:
    """What became of one operation the worker took up."""

    operation_id: uuid.UUID
    status: str
    message: str


class Worker:
    def __init__(self, app: Application, on_ran: Callable[[Ran], None] | None = None):
        self.app = app
        self.on_ran = on_ran

    def drain(self) -> list[Ran]:
        """Run every operation due now (each at most once), until none is left.

        The longest due first, a batch read from the queue at a time; the views catch
        up once per batch (before reading it), not after each operation, and are
        current with what ran when it returns. Workers draining together read the same
        batch: one that finds an operation taken goes on from the batch's other end, so
        that two walk it from both ends instead of racing for each operation, and reads
        the next batch once it finds both ends taken.
        """
        queue = self.app.view("queue")
        tried: set[uuid.UUID] = set()
        ran: list[Ran] = []
        while True:
            self.app.catch_up()
            # an operation tried already may still be due (another worker holds it)
            found = due(queue.db, self.app.clock(), BATCH + len(tried))
            todo = deque(op for op in found if op not in tried)
            if not todo:
                return ran
            from_end, taken = False, 0
            with self.app.deferring_catch_up():
                while todo and taken < 2:  # both ends taken: read the queue again
                    operation_id = todo.pop() if from_end else todo.popleft()
                    tried.add(operation_id)
                    result = self._run(operation_id)
                    if result is None:  # another worker is at this end
                        from_end, taken = not from_end, taken + 1
                        continue
                    taken = 0
                    ran.append(result)
                    if self.on_ran is not None:
                        self.on_ran(result)

    def _run(self, operation_id: uuid.UUID) -> Ran | None:
        """Run one operation; None if another worker took it first."""
        try:
            state = self.app.run(operation_id)
        except (Conflict, NotClaimable):
            return None
        except (CommandFailed, DomainError) as error:
            now = self.app.load(Operation, operation_id)
            return Ran(operation_id, now.status.value if now else "unknown", str(error))
        return Ran(operation_id, state.status.value, state.message)

    def serve(self, stop: threading.Event, poll_s: float = 5.0) -> None:
        """Drain; then wait until something falls due, another process writes to the log
        (new work, maybe), or ``poll_s`` passes; again, until ``stop`` is set."""
        while not stop.is_set():
            position = self.app.max_position()  # before draining: a write after it wakes us
            self.drain()
            wake = next_due(self.app.view("queue").db)
            wait = poll_s if wake is None else wake - self.app.clock().timestamp()
            deadline = time.monotonic() + min(poll_s, wait)
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                if self.app.wait_for_events(position, min(left, STOP_CHECK_S)) > position:
                    break
