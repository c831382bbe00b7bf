"""The operation log: one row per operation, and which events each one wrote.

Serves ``eventpile log`` and ``show``, and tells undo which events belong to an
operation without scanning the log: the events an operation wrote are every event
stamped with its id except its own lifecycle (an undo's marks on the operations
it undid are among its events).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from eventpile.domain.events import DomainEvent, private_fields_of
from eventpile.domain.operation import FINISHED, Operation, OperationEvent
from eventpile.projections.queue import OperationRows, in_chunks, states_in
from eventpile.store.views import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    elapsed_s DOUBLE PRECISION,
    attempts BIGINT NOT NULL DEFAULT 0,
    done BIGINT,
    total BIGINT,
    parent_id TEXT,
    args TEXT NOT NULL,
    private_args TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '{}',
    private_result TEXT NOT NULL DEFAULT '{}',
    error_type TEXT,
    error TEXT,
    undone_by TEXT,
    state TEXT NOT NULL,
    origin TEXT
);
CREATE TABLE IF NOT EXISTS operation_events (
    operation TEXT NOT NULL,
    position BIGINT NOT NULL,
    stream TEXT NOT NULL,
    version BIGINT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (operation, position)
);
CREATE INDEX IF NOT EXISTS operations_position ON operations(position);
CREATE INDEX IF NOT EXISTS operation_events_stream ON operation_events(stream, version);
"""

_JSON_COLUMNS = ("args", "private_args", "result", "private_result")


class OperationLog(OperationRows):
    name: ClassVar[str] = "operations"
    schema: ClassVar[int] = 5  # 4: operation states hold in_doubt; 5: and their origin
    topics: ClassVar[tuple[type[DomainEvent], ...]] = ()
    """Every event: it records which events each operation wrote."""

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA)

    def fold(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """The events operations wrote go in with one statement, then the operations' rows."""
        written = [
            (e.operation_id.hex, p, e.originator_id.hex, e.originator_version, e.type_name())
            for p, e in events
            if e.operation_id is not None
            and not (isinstance(e, OperationEvent) and e.operation_id == e.originator_id)
        ]
        if written:
            db.executemany(
                "INSERT INTO operation_events VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING", written
            )
        super().fold(db, events)

    def store(self, db: ViewDB, state: Operation, position: int, last: DomainEvent) -> None:
        _store(db, state, position)

    def forget(self, db: ViewDB, streams: Sequence[str]) -> None:
        """Also the events of those streams that operations wrote (an undo's marks on the
        operations it undid, a purge's record): the domain events stay, and so their rows."""
        super().forget(db, streams)
        for chunk, marks in in_chunks(streams):
            db.execute(f"DELETE FROM operation_events WHERE stream IN ({marks})", chunk)

    def content_queries(self) -> Sequence[str]:
        return (
            "SELECT * FROM operations ORDER BY position",
            "SELECT * FROM operation_events ORDER BY operation, position",
        )


_COLUMNS = (
    "id, position, command, status, message, requested_at, started_at, finished_at, elapsed_s,"
    " attempts, done, total, parent_id, args, private_args, result, private_result, error_type,"
    " error, undone_by, state, origin"
)


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _store(db: ViewDB, op: Operation, position: int) -> None:
    """Write the row of an operation from its state (``position``: where it was requested)."""
    done, total = op.progress or (None, None)
    values = (
        op.id.hex,
        position,
        op.command,
        op.status.value,
        op.message,
        op.requested_at.timestamp(),
        _ts(op.started_at),
        _ts(op.finished_at),
        op.elapsed_s,
        op.attempts,
        done,
        total,
        op.parent_id.hex if op.parent_id else None,
        json.dumps(op.args),
        json.dumps(op.private_args),
        json.dumps(op.result),
        json.dumps(op.private_result),
        op.error_type,
        op.error,
        op.undone_by.hex if op.undone_by else None,
        op.model_dump_json(),
        op.origin.hex if op.origin else None,
    )
    updates = ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS.split(", ")[2:])
    db.execute(
        f"INSERT INTO operations ({_COLUMNS}) VALUES ({', '.join('?' * len(values))})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}",
        values,
    )


def _row(cursor: Any, row: Sequence[Any], private: bool) -> dict[str, Any]:
    """An operation's record; without its ``Private`` fields unless ``private``."""
    record = {d[0]: v for d, v in zip(cursor.description, row, strict=True)}
    for column in _JSON_COLUMNS:
        record[column] = json.loads(record[column])
    for column in ("position", "state", *([] if private else private_fields_of(Operation))):
        record.pop(column, None)
    return record


def recent(db: ViewDB, limit: int, *, private: bool = False) -> list[dict[str, Any]]:
    cursor = db.execute("SELECT * FROM operations ORDER BY position DESC LIMIT ?", (limit,))
    return [_row(cursor, row, private) for row in cursor.fetchall()]


def find(db: ViewDB, prefix: str, *, private: bool = False) -> list[dict[str, Any]]:
    """Operations whose id starts with ``prefix`` (hex, dashes ignored)."""
    key = prefix.replace("-", "").lower()
    cursor = db.execute(
        "SELECT * FROM operations WHERE id >= ? AND id < ? ORDER BY position LIMIT 2",
        (key, key + "g"),
    )
    return [_row(cursor, row, private) for row in cursor.fetchall()]


def events_of(db: ViewDB, operation_id: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT position, stream, version, type FROM operation_events "
        "WHERE operation=? ORDER BY position",
        (operation_id,),
    )
    return [{"position": p, "stream": s, "version": v, "type": t} for p, s, v, t in rows]


def written_by(db: ViewDB, operation_id: str) -> list[tuple[int, int]]:
    """``(position, last)`` of each event the operation wrote, in log order: ``last`` is
    the latest version of the event's stream among the events operations wrote."""
    return db.execute(
        "SELECT e.position, (SELECT max(x.version) FROM operation_events x"
        " WHERE x.stream = e.stream) FROM operation_events e WHERE e.operation=?"
        " ORDER BY e.position",
        (operation_id,),
    ).fetchall()


def undo_candidates(db: ViewDB) -> Iterator[tuple[str, str, str]]:
    """``(id, command, status)`` of operations that wrote events and are not undone (some
    may not be finished), newest first."""
    yield from db.execute(
        "SELECT id, command, status FROM operations o WHERE status <> 'undone'"
        " AND EXISTS (SELECT 1 FROM operation_events e WHERE e.operation = o.id)"
        " ORDER BY position DESC"
    )


def redo_candidates(db: ViewDB) -> Iterator[tuple[str, str, str]]:
    """``(id, command, status)`` of undone operations, the most recently undone first."""
    yield from db.execute(
        "SELECT o.id, o.command, o.status FROM operations o JOIN operations u ON u.id = o.undone_by"
        " WHERE o.status = 'undone' ORDER BY u.position DESC"
    )


@dataclass(frozen=True)
class PurgePlan:
    """What a purge deletes (see :mod:`eventpile.commands.retention`)."""

    streams: dict[str, int]
    """The streams to delete (hex ids), each with its last version as the view has it: the
    operations', and their purges' records."""
    operations: int
    held: int
    """Operations old enough that stay because a sync folder does not hold them yet."""


def purge_plan(
    db: ViewDB, before: float, last_positions: Callable[[list[uuid.UUID]], dict[uuid.UUID, int]]
) -> PurgePlan:
    """The operations that finished before ``before`` (Unix time) and may go: none that
    is tied (by a question's answer, an undo's or a redo's mark) to one that stays, nor
    the latest sync with each folder, nor one with events after what a folder holds
    (``last_positions``: the position of each stream's last event, from the log)."""
    finished = tuple(s.value for s in FINISHED)
    candidates: set[str] = set()
    everyone: set[str] = set()
    for op, status, finished_at in db.execute("SELECT id, status, finished_at FROM operations"):
        everyone.add(op)
        if status in finished and finished_at is not None and finished_at < before:
            candidates.add(op)
    keep = everyone - candidates
    folders: dict[str, tuple[str, int]] = {}
    for op, private_args, result in db.execute(
        "SELECT id, private_args, result FROM operations "
        "WHERE command = 'Sync' AND status = 'complete' ORDER BY position"
    ):
        folder = json.loads(private_args).get("folder", "")
        folders[folder] = (op, int(json.loads(result).get("sent_upto", 0)))
    keep.update(op for op, _ in folders.values())
    held: set[str] = set()
    if folders:
        floor = min(upto for _, upto in folders.values())
        ends = last_positions([uuid.UUID(hex=op) for op in candidates - keep])
        held = {i.hex for i, last in ends.items() if last > floor}
        keep |= held
    links = db.execute(
        "SELECT id, parent_id FROM operations WHERE parent_id IS NOT NULL UNION "
        "SELECT DISTINCT e.operation, e.stream FROM operation_events e "
        "JOIN operations o ON o.id = e.stream"
    ).fetchall()
    going = _unkept(candidates, keep, [(a, b) for a, b in links if a in everyone and b in everyone])
    states = states_in(db, "operations", {uuid.UUID(hex=op) for op in going})
    streams = {op.hex: state.version for op, state in states.items()}
    for chunk, marks in in_chunks(sorted(going)):
        streams.update(  # a purge's record is the one event of its stream
            (stream, 1)
            for (stream,) in db.execute(
                "SELECT stream FROM operation_events WHERE type = 'OperationsPurged' "
                f"AND operation IN ({marks})",
                chunk,
            )
        )
    return PurgePlan(streams, len(going), len(held - going))


def _unkept(candidates: set[str], keep: set[str], links: list[tuple[str, str]]) -> set[str]:
    """The candidates not linked, directly or through others, to one that is kept."""
    parent = {op: op for op in candidates | keep}

    def root(op: str) -> str:
        while parent[op] != op:
            parent[op] = parent[parent[op]]
            op = parent[op]
        return op

    for a, b in links:
        parent[root(a)] = root(b)
    kept_roots = {root(op) for op in keep}
    return {op for op in candidates if root(op) not in kept_roots}


def latest_request(db: ViewDB, command: str, origin: uuid.UUID) -> float | None:
    """When the latest operation of ``command`` requested by installation ``origin`` was
    requested (Unix time), if any."""
    row = db.execute(
        "SELECT max(requested_at) FROM operations WHERE command = ? AND origin = ?",
        (command, origin.hex),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def latest_purge(db: ViewDB, origin: uuid.UUID) -> tuple[datetime, datetime] | None:
    """``(horizon, when)`` of the latest purge installation ``origin`` ran, if any."""
    row = db.execute(
        "SELECT result, finished_at FROM operations WHERE command = 'Purge' "
        "AND status = 'complete' AND origin = ? ORDER BY position DESC LIMIT 1",
        (origin.hex,),
    ).fetchone()
    if row is None:
        return None
    return (
        datetime.fromisoformat(json.loads(row[0])["horizon"]),
        datetime.fromtimestamp(row[1], UTC),
    )
