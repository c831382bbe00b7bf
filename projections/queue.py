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

from domain.aggregate import fold
from domain.events import DomainEvent
from domain.operation import Operation, OperationEvent, OperationRequested
from projections.base import Projection
from projections.db import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at DOUBLE PRECISION,
    attempts BIGINT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue(due_at);
"""


def operation_events() -> tuple[type[DomainEvent], ...]:
    """The event classes of operation streams (the subclasses of ``OperationEvent`` so far)."""
    found: set[type[DomainEvent]] = set()
    todo: list[type[DomainEvent]] = [OperationEvent]
    while todo:
        subclasses = todo.pop().__subclasses__()
        found.update(subclasses)
        todo.extend(subclasses)
    return tuple(sorted(found, key=lambda c: c.__name__))


def evolve_row(db: ViewDB, table: str, event: DomainEvent) -> Operation | None:
    """The operation's state after ``event``, from the state in ``table`` (None: no row)."""
    if isinstance(event, OperationRequested):
        return fold(Operation, [event])
    row = db.execute(f"SELECT state FROM {table} WHERE id=?", (event.originator_id.hex,)).fetchone()
    if row is None:
        return None
    return Operation.model_validate_json(row[0]).apply(event)


def fold_rows(
    db: ViewDB, table: str, events: Sequence[tuple[int, DomainEvent]]
) -> Iterator[tuple[Operation, int, DomainEvent]]:
    """Each operation's state after a page of events, folded in memory from its row in
    ``table``: ``(state, position of its first event in the page, its last event)``.

    One read and one write per operation and page instead of one per event; the
    result is the same as applying the events one by one (rows keep the position
    they were inserted at, and a row that is gone stays gone).
    """
    found: dict[uuid.UUID, tuple[Operation, int, DomainEvent]] = {}
    for position, event in events:
        if not isinstance(event, OperationEvent):
            continue
        seen = found.get(event.originator_id)
        if seen is not None:
            found[event.originator_id] = (seen[0].apply(event), seen[1], event)
        else:
            state = evolve_row(db, table, event)
            if state is not None:
                found[event.originator_id] = (state, position, event)
    return iter(found.values())


class OperationRows(Projection):
    """A view with a row per operation (its table is named like the view), written
    from the operation's folded state: the fold is ``Operation.evolve``, not SQL."""

    topics: ClassVar[tuple[type[DomainEvent], ...]] = operation_events()

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        self.apply_page(db, [(position, event)])

    def apply_page(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        for state, position, last in fold_rows(db, self.name, events):
            self.store(db, state, position, last)

    @abstractmethod
    def store(self, db: ViewDB, state: Operation, position: int, last: DomainEvent) -> None:
        """Write the row: ``position`` where it was inserted, ``last`` its latest event."""


class Queue(OperationRows):
    name: ClassVar[str] = "queue"

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA)

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
            "INSERT INTO queue VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
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
            ),
        )


def pending(db: ViewDB) -> list[Operation]:
    """Every unfinished operation, oldest first."""
    rows = db.execute("SELECT state FROM queue ORDER BY position")
    return [Operation.model_validate_json(state) for (state,) in rows]


def due(db: ViewDB, now: datetime, limit: int = 100) -> list[uuid.UUID]:
    """The operations a worker may start at ``now`` (every pending one), the longest due first."""
    rows = db.execute(
        "SELECT id FROM queue WHERE status = 'pending' OR due_at <= ? "
        "ORDER BY due_at, position LIMIT ?",
        (now.timestamp(), limit),
    )
    return [uuid.UUID(hex=op) for (op,) in rows]


def next_due(db: ViewDB) -> float | None:
    """When the next operation falls due (Unix time), None if none is waiting for time."""
    row = db.execute("SELECT min(due_at) FROM queue").fetchone()
    return None if row is None or row[0] is None else float(row[0])
