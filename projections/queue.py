"""The pending-operation queue: every operation not finished, and when it is due.

A row holds the operation's whole state (its command's type and validated
arguments included) and is deleted when the operation finishes, so loading the
queue costs what is pending, whatever the size of the log. ``due_at`` is when a
worker may start it: its run time, its retry time, or the end of the lease of the
worker running it (past it, that worker is presumed dead); NULL while it waits
for an answer.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import ClassVar

from eventpile.domain.aggregate import fold
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import (
    Operation,
    OperationAnswered,
    OperationCancelled,
    OperationCompleted,
    OperationEvent,
    OperationFailed,
    OperationRequested,
    OperationsPurged,
)
from eventpile.projections.base import Projection
from eventpile.store.views import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at DOUBLE PRECISION,
    attempts BIGINT NOT NULL,
    state TEXT NOT NULL,
    runs_on TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue(due_at);
"""
FINISHING = (OperationCompleted, OperationFailed, OperationAnswered, OperationCancelled)
"""The events after which an operation is finished, whatever it was before (each ends it
in ``Operation.evolve``): it leaves the queue."""
ROWS_PER_READ = 500
"""Operations whose rows one statement reads (SQLite binds at most 32,766 parameters)."""


def operation_events() -> tuple[type[DomainEvent], ...]:
    """The event classes of operation streams (the subclasses of ``OperationEvent`` so far)."""
    found: set[type[DomainEvent]] = set()
    todo: list[type[DomainEvent]] = [OperationEvent]
    while todo:
        subclasses = todo.pop().__subclasses__()
        found.update(subclasses)
        todo.extend(subclasses)
    return tuple(sorted(found, key=lambda c: c.__name__))


def fold_rows(
    db: ViewDB, table: str, events: Sequence[tuple[int, DomainEvent]]
) -> Iterator[tuple[Operation, int, DomainEvent]]:
    """Each operation's state after a page of events, folded in memory from its row in
    ``table``: ``(state, position of its first event in the page, its last event)``.

    One read per page (of the rows the page's operations had before it) and one write
    per operation, instead of both per event; the result is the same as applying the
    events one by one (rows keep the position they were inserted at, and a row that is
    gone stays gone).
    """
    ours = [(p, e) for p, e in events if isinstance(e, OperationEvent)]
    stored = states_in(
        db, table, {e.originator_id for _, e in ours if not isinstance(e, OperationRequested)}
    )
    found: dict[uuid.UUID, tuple[Operation, int, DomainEvent]] = {}
    for position, event in ours:
        seen = found.get(event.originator_id)
        if seen is not None:
            found[event.originator_id] = (seen[0].apply(event), seen[1], event)
        elif (state := _evolve(stored.get(event.originator_id), event)) is not None:
            found[event.originator_id] = (state, position, event)
    return iter(found.values())


def _evolve(stored: Operation | None, event: DomainEvent) -> Operation | None:
    """The state after ``event`` from the one in its row (None: no row, and none made)."""
    if isinstance(event, OperationRequested):
        return fold(Operation, [event])
    return None if stored is None else stored.apply(event)


def states_in(db: ViewDB, table: str, ids: set[uuid.UUID]) -> dict[uuid.UUID, Operation]:
    """The states in the rows of ``table`` of the operations ``ids`` that have one."""
    states: dict[uuid.UUID, Operation] = {}
    for chunk, marks in in_chunks([i.hex for i in ids]):
        for op, state in db.execute(f"SELECT id, state FROM {table} WHERE id IN ({marks})", chunk):
            states[uuid.UUID(hex=op)] = Operation.model_validate_json(state)
    return states


def in_chunks(values: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    """``values`` :data:`ROWS_PER_READ` at a time, each chunk with its ``?`` marks."""
    for start in range(0, len(values), ROWS_PER_READ):
        chunk = values[start : start + ROWS_PER_READ]
        yield chunk, ",".join("?" * len(chunk))


class OperationRows(Projection):
    """A view with a row per operation (its table is named like the view), written
    from the operation's folded state: the fold is ``Operation.evolve``, not SQL."""

    topics: ClassVar[tuple[type[DomainEvent], ...]] = operation_events()

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        self.apply_page(db, [(position, event)])

    def apply_page(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """Fold the page, in parts: a purge in it drops the rows of the streams it
        deleted, after what came before it and before what comes after."""
        start = 0
        for i, (_, event) in enumerate(events):
            if isinstance(event, OperationsPurged):
                self.fold(db, events[start:i])
                self.forget(db, [s.hex for s in event.streams])
                start = i + 1
        self.fold(db, events[start:])

    def fold(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """Fold events that hold no purge."""
        for state, position, last in fold_rows(db, self.name, events):
            self.store(db, state, position, last)

    def forget(self, db: ViewDB, streams: Sequence[str]) -> None:
        """Drop what the view holds of these streams (hex ids), purged from the log."""
        for chunk, marks in in_chunks(streams):
            db.execute(f"DELETE FROM {self.name} WHERE id IN ({marks})", chunk)

    @abstractmethod
    def store(self, db: ViewDB, state: Operation, position: int, last: DomainEvent) -> None:
        """Write the row: ``position`` where it was inserted, ``last`` its latest event."""


class Queue(OperationRows):
    name: ClassVar[str] = "queue"
    schema: ClassVar[int] = 3  # 2: operation states hold in_doubt; 3: and where they run

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA)

    def fold(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """As :meth:`OperationRows.fold`, except that the row of an operation the page
        finishes is deleted without being read and folded first (a worker's batch
        finishes most of the operations it reads)."""
        last = {e.originator_id: e for _, e in events if isinstance(e, OperationEvent)}
        done = {stream for stream, event in last.items() if isinstance(event, FINISHING)}
        self.forget(db, [stream.hex for stream in done])
        super().fold(db, [(p, e) for p, e in events if e.originator_id not in done])

    def store(self, db: ViewDB, state: Operation, position: int, last: DomainEvent) -> None:
        _store(db, state, position)

    def content_queries(self) -> Sequence[str]:
        return ("SELECT * FROM queue ORDER BY id",)


def _store(db: ViewDB, state: Operation, position: int) -> None:
    if state.status.finished:
        db.execute("DELETE FROM queue WHERE id=?", (state.id.hex,))
    else:
        due = state.due_at
        db.execute(
            "INSERT INTO queue VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "status=excluded.status, due_at=excluded.due_at, attempts=excluded.attempts, "
            "state=excluded.state",
            (
                state.id.hex,
                position,
                state.command,
                state.status.value,
                None if due is None else due.timestamp(),
                state.attempts,
                state.model_dump_json(),
                None if state.runs_on is None else state.runs_on.hex,
            ),
        )


def pending(db: ViewDB) -> list[Operation]:
    """Every unfinished operation, oldest first."""
    rows = db.execute("SELECT state FROM queue ORDER BY position")
    return [Operation.model_validate_json(state) for (state,) in rows]


def due_operations(
    db: ViewDB, now: datetime, limit: int = 100, origin: uuid.UUID | None = None
) -> list[Operation]:
    """The operations a worker may start at ``now`` (every pending one), the longest due
    first: their states as the view knows them (with ``origin``, only those it runs)."""
    mine, params = _runs(origin)
    rows = db.execute(
        f"SELECT state FROM queue WHERE (status = 'pending' OR due_at <= ?){mine} "
        "ORDER BY due_at, position LIMIT ?",
        (now.timestamp(), *params, limit),
    )
    return [Operation.model_validate_json(state) for (state,) in rows]


def next_due(db: ViewDB, origin: uuid.UUID | None = None) -> float | None:
    """When the next operation falls due (Unix time), None if none is waiting for time
    (with ``origin``, of those it runs)."""
    mine, params = _runs(origin)
    row = db.execute(f"SELECT min(due_at) FROM queue WHERE TRUE{mine}", params).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _runs(origin: uuid.UUID | None) -> tuple[str, tuple[str, ...]]:
    """SQL that keeps the operations ``origin`` runs (all without one), and its parameters."""
    if origin is None:
        return "", ()
    return " AND (runs_on IS NULL OR runs_on = ?)", (origin.hex,)
