"""The embedded backend: ``eventsourcing``'s SQLite recorders, tuned.

WAL with ``synchronous=NORMAL``: a committed transaction survives the process
being killed (the OS holds the WAL); only a power loss can take back the last
commits. Set ``EVENTPILE_SYNC=full`` to sync every commit to disk.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)

from eventpile.store.cipher import RETIRED_KEY
from eventpile.store.mapper import ExportRow, Row, found_and_end
from eventpile.store.people import FORGETTING
from eventpile.store.seals import REMOVED, SEALS_TABLE, Sealing, row_hash
from eventpile.store.topics import PlainTopics

STREAMS_PER_QUERY = 500
COLUMNS = "originator_id, originator_version, topic, state"
KEY_TABLE = "eventpile_data_key"
RECEIVED_TABLE = "received_events"
"""Where each event a sync brought in came from: its position here, its origin (the
installation that wrote it) and its position in the origin's log (``seq``)."""


class TunedPool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        sync = "FULL" if os.environ.get("EVENTPILE_SYNC", "").lower() == "full" else "NORMAL"
        connection.cursor().execute(f"PRAGMA synchronous={sync}")
        return connection


class Recorder(Sealing, PlainTopics, SQLiteApplicationRecorder):
    """The library's recorder, its positions an explicit ``INTEGER PRIMARY KEY``: SQLite
    keeps those through a ``VACUUM`` (it may renumber an implicit rowid), and positions
    are what views and sync count by. A log made before is converted at its first
    purge (:meth:`reclaim`). Each transaction that writes the log seals it
    (:mod:`eventpile.store.seals`)."""

    _mark = "?"
    _position = "rowid"

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self.insert_events_statement = (
            f"INSERT INTO {self.events_table_name} ({COLUMNS}) VALUES (?, ?, ?, ?)"
        )

    def construct_create_table_statements(self) -> list[str]:
        library = f"CREATE TABLE IF NOT EXISTS {self.events_table_name} ("
        return [
            *(s for s in super().construct_create_table_statements() if not s.startswith(library)),
            _events_table(self.events_table_name),
            _forgettings_index(self.events_table_name),
            f"CREATE TABLE IF NOT EXISTS {RECEIVED_TABLE} (position INTEGER PRIMARY KEY, "
            "origin TEXT NOT NULL, seq INTEGER NOT NULL, UNIQUE (origin, seq))",
            f"CREATE TABLE IF NOT EXISTS {SEALS_TABLE} (number INTEGER PRIMARY KEY, "
            "entries BLOB NOT NULL, mac BLOB NOT NULL)",
        ]

    def create_table(self) -> None:
        """The tables; and once, the span of each seal (:meth:`Sealing._add_spans`) and
        where plaintext topics end (:meth:`PlainTopics._mark_plain_topics`)."""
        super().create_table()
        with self.datastore.transaction(commit=False) as c:
            kept = _spans_kept(c)
        if kept and self._select_plain_upto():
            return
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"UPDATE {SEALS_TABLE} SET number = number WHERE 0")  # the write lock
            if not _spans_kept(c):
                self._add_spans(c)
            self._mark_plain_topics(c)

    def _select_plain_upto(self) -> list[Any]:
        with self.datastore.transaction(commit=False) as c:
            try:
                c.execute(f"SELECT upto FROM {self.PLAIN_TABLE}")
            except sqlite3.OperationalError:  # not made yet
                return []
            return list(c.fetchall())

    def _events_table(self) -> str:
        return self.events_table_name

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=False) as c:  # one BEGIN: one snapshot (WAL)
            c.sqlite_cursor.row_factory = None
            yield c

    def _insert_events(
        self,
        c: Any,
        stored_events: Sequence[StoredEvent],
        *,
        received: Sequence[tuple[str, int]] = (),
        purge: Mapping[uuid.UUID, int] = MappingProxyType({}),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        """As the library's, and where each of ``received`` came from (``(origin, seq)``
        per event), and the deletion of the streams of ``purge`` (each ending at the
        version given, else nothing is written: :func:`check_purged`), in the same
        transaction (after the insert: the log's last position is never freed for reuse)."""
        positions = super()._insert_events(c, stored_events, **kwargs)
        if received:
            c.executemany(
                f"INSERT INTO {RECEIVED_TABLE} (position, origin, seq) VALUES (?, ?, ?)",
                [(p, o, s) for p, (o, s) in zip(positions or (), received, strict=True)],
            )
        deleted: list[int] = []
        for where, chunk in _of_streams(purge):
            c.execute(f"DELETE FROM {self.events_table_name} WHERE {where} RETURNING rowid", chunk)
            deleted += [row[0] for row in c.fetchall()]
        check_purged(purge, len(deleted))
        entries = {
            p: row_hash(p, e.originator_id, e.originator_version, e.topic, e.state)
            for p, e in zip(positions or (), stored_events, strict=True)
        }
        self._seal(c, entries | dict.fromkeys(deleted, REMOVED))
        return positions

    def purge_streams(
        self, stored_events: Sequence[StoredEvent], purge: Mapping[uuid.UUID, int]
    ) -> Sequence[int] | None:
        """Append ``stored_events`` and delete the streams of ``purge`` in one transaction;
        if those streams hold other events than the versions given (one was written
        meanwhile), nothing is written (:func:`check_purged`)."""
        return self.insert_events(stored_events, purge=purge)

    def require_key(self, key_id: int) -> None:
        """From now on refuse (in the database, whatever process writes) an event sealed
        with another data key than ``key_id``: after a rekey, a process that still holds
        the old key writes nothing."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {KEY_TABLE} (id BLOB NOT NULL)")
            c.execute(f"DELETE FROM {KEY_TABLE}")
            c.execute(f"INSERT INTO {KEY_TABLE} VALUES (?)", (key_id.to_bytes(4, "big"),))
            c.execute(_key_guard(self.events_table_name))

    def replace_states(self, rows: Sequence[tuple[int, bytes, bytes]]) -> int:
        """Each ``(position, old, new)``: the state ``new`` at ``position`` if it is still
        ``old`` (another process may have done it), in one transaction; how many were."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                f"UPDATE {self.events_table_name} SET state = ? WHERE rowid = ? AND state = ?",
                [(new, position, old) for position, old, new in rows],
            )
            replaced = int(c.sqlite_cursor.rowcount)
            positions = [position for position, _, _ in rows]
            entries: dict[int, bytes] = {}
            for start in range(0, len(positions), STREAMS_PER_QUERY):
                chunk = positions[start : start + STREAMS_PER_QUERY]
                c.execute(
                    "SELECT rowid, originator_id, originator_version, topic, state "
                    f"FROM {self.events_table_name} WHERE rowid IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                entries.update((row[0], row_hash(*row)) for row in c.fetchall())
            self._seal(c, entries)
        self._settle()
        return replaced

    def reclaim(self) -> bool:
        """Give the space of deleted events back to the file system: a ``VACUUM``, which
        rewrites the file (its time grows with the log's size: see the soak benchmark).
        Only whole free pages could be given back without it, and a purge leaves few:
        an operation's records share their pages with the changes it made, which stay.
        A log whose positions are implicit rowids gets its explicit ones first. False if
        another process's transaction kept it from running (nothing changed then)."""
        try:
            self._reclaim()
        except (OperationalError, sqlite3.OperationalError) as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            return False
        return True

    def _reclaim(self) -> None:
        table = self.events_table_name
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT name, pk FROM pragma_table_info('{table}')")
            if ("rowid", 1) not in [tuple(row) for row in c.fetchall()]:
                c.execute(_events_table(f"{table}_positions"))
                c.execute(
                    f"INSERT INTO {table}_positions (rowid, {COLUMNS}) "
                    f"SELECT rowid, {COLUMNS} FROM {table} ORDER BY rowid"
                )
                c.execute(f"DROP TABLE {table}")  # and its triggers
                c.execute(f"ALTER TABLE {table}_positions RENAME TO {table}")
                c.execute(f"SELECT 1 FROM sqlite_master WHERE name = '{KEY_TABLE}'")
                if c.fetchone():
                    c.execute(_key_guard(table))
        with self.datastore.get_connection(commit=True) as connection:
            db = connection._sqlite_conn  # VACUUM cannot run inside a transaction
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def select_streams(self, originator_ids: Collection[uuid.UUID]) -> list[StoredEvent]:
        """The stored events of several aggregates, by aggregate and version.

        One query per :data:`STREAMS_PER_QUERY` aggregates instead of one each (a
        read transaction costs ~50 µs; importing asks for every message).
        """
        rows = self._per_stream(
            "originator_id, originator_version, topic, state",
            originator_ids,
            "ORDER BY originator_id, originator_version",
        )
        return [StoredEvent(uuid.UUID(row[0]), *row[1:]) for row in rows]

    def select_rows(self, after: int, upto: int, topics: Sequence[str], limit: int) -> list[Row]:
        """The notifications after ``after`` up to ``upto`` (of ``topics``, if any), as
        plain tuples: the library's objects and id conversions cost a third of a rebuild."""
        where = f" AND topic IN ({','.join('?' * len(topics))})" if topics else ""
        return self._rows(
            "SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ?{where} "
            "ORDER BY rowid LIMIT ?",
            (after, upto, *topics, limit),
        )

    def forgettings(self, after: int) -> tuple[list[Row], int]:
        """The records of people forgotten after position ``after`` (an index holds them
        apart: this reads no other row), and the log's end, in one statement: every
        forgetting up to that end is among them."""
        table = self.events_table_name
        return found_and_end(
            self._rows(
                "SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, m.top "
                f"FROM (SELECT max(rowid) AS top FROM {table}) m LEFT JOIN {table} e "
                f"ON e.topic = '{FORGETTING}' AND e.rowid > ? ORDER BY e.rowid",
                (after,),
            )
        )

    def select_export(self, after: int, upto: int, limit: int) -> list[ExportRow]:
        """The rows after ``after`` up to ``upto`` with where each came from: ``origin``
        and ``seq`` for an event a sync brought in, None for one written here."""
        return self._rows(
            "SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, "
            f"r.origin, r.seq FROM {self.events_table_name} e "
            f"LEFT JOIN {RECEIVED_TABLE} r ON r.position = e.rowid "
            "WHERE e.rowid > ? AND e.rowid <= ? ORDER BY e.rowid LIMIT ?",
            (after, upto, limit),
        )

    def received_upto(self, upto: int | None = None) -> dict[str, int]:
        """By origin (hex), the last of its events that a sync brought in (up to
        position ``upto``)."""
        where = "" if upto is None else " WHERE position <= ?"
        return dict(
            self._rows(
                f"SELECT origin, max(seq) FROM {RECEIVED_TABLE}{where} GROUP BY origin",
                () if upto is None else (upto,),
            )
        )

    def last_positions(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The position of the last event of each of these streams that has one."""
        return self._stream_max("rowid", originator_ids)

    def stream_ends(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last version of each of these streams that has one."""
        return self._stream_max("originator_version", originator_ids)

    def _stream_max(
        self, column: str, originator_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, int]:
        rows = self._per_stream(
            f"originator_id, max({column})", originator_ids, "GROUP BY originator_id"
        )
        return {uuid.UUID(i): v for i, v in rows}

    def _rows(self, statement: str, params: Sequence[Any]) -> list[Any]:
        """The rows of one query, as plain tuples."""
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None
            c.execute(statement, params)
            return c.fetchall()

    def _per_stream(
        self, columns: str, originator_ids: Collection[uuid.UUID], rest: str
    ) -> list[Any]:
        """``SELECT columns`` of the events of these streams, ``rest`` after the WHERE:
        one query per :data:`STREAMS_PER_QUERY` streams, in one read transaction."""
        found: list[Any] = []
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None
            for where, chunk in _of_streams(originator_ids):
                c.execute(
                    f"SELECT {columns} FROM {self.events_table_name} WHERE {where} {rest}", chunk
                )
                found += c.fetchall()
        return found


def _of_streams(originator_ids: Iterable[uuid.UUID]) -> Iterator[tuple[str, list[str]]]:
    """``(condition, parameters)`` that select the events of these streams, a statement per
    :data:`STREAMS_PER_QUERY` of them (SQLite binds at most 32,766 parameters)."""
    ids = [i.hex for i in originator_ids]
    for start in range(0, len(ids), STREAMS_PER_QUERY):
        chunk = ids[start : start + STREAMS_PER_QUERY]
        yield f"originator_id IN ({','.join('?' * len(chunk))})", chunk


def _spans_kept(c: Any) -> bool:
    c.execute(f"SELECT 1 FROM pragma_table_info('{SEALS_TABLE}') WHERE name = 'high'")
    return c.fetchone() is not None


def check_purged(purge: Mapping[uuid.UUID, int], deleted: int) -> None:
    """Refuse a purge (its transaction rolls back) if its streams held other events than
    the versions it decided on: one was written meanwhile (an undo's mark, say)."""
    if deleted != sum(purge.values()):
        raise IntegrityError(
            f"a stream to purge changed meanwhile ({deleted} events, not {sum(purge.values())})"
        )


def _key_guard(table: str) -> str:
    """The trigger of :meth:`Recorder.require_key`: bytes 5 to 8 of a sealed event are
    the id of the key that sealed it (:mod:`eventpile.store.cipher`)."""
    return (
        f"CREATE TRIGGER IF NOT EXISTS {KEY_TABLE} BEFORE INSERT ON {table} "
        f"WHEN substr(NEW.state, 5, 4) IS NOT (SELECT id FROM {KEY_TABLE}) "
        f"BEGIN SELECT RAISE(ABORT, '{RETIRED_KEY}'); END"
    )


def _forgettings_index(table: str) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {table}_forgettings ON {table} (topic) "
        f"WHERE topic = '{FORGETTING}'"
    )


def _events_table(name: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (rowid INTEGER PRIMARY KEY, originator_id TEXT, "
        "originator_version INTEGER, topic TEXT, state BLOB, "
        "UNIQUE (originator_id, originator_version))"
    )


class Factory(SQLiteFactory):
    """``PERSISTENCE_MODULE=store.sqlite:Factory``."""

    application_recorder_class = Recorder

    def __init__(self, env: object) -> None:
        super().__init__(env)  # type: ignore[arg-type]
        old = self.datastore.pool
        self.datastore.pool = TunedPool(db_name=old.db_name, lock_timeout=old.lock_timeout)
        old.close()
