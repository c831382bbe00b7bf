"""The embedded backend: ``eventsourcing``'s SQLite recorders, tuned.

WAL with ``synchronous=NORMAL``: a committed transaction survives the process
being killed (the OS holds the WAL); only a power loss can take back the last
commits. Set ``EVENTPILE_SYNC=full`` to sync every commit to disk.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Collection, Sequence

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)

from eventpile.store.mapper import Row

STREAMS_PER_QUERY = 500


class TunedPool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        sync = "FULL" if os.environ.get("EVENTPILE_SYNC", "").lower() == "full" else "NORMAL"
        connection.cursor().execute(f"PRAGMA synchronous={sync}")
        return connection


class Recorder(SQLiteApplicationRecorder):
    def select_streams(self, originator_ids: Collection[uuid.UUID]) -> list[StoredEvent]:
        """The stored events of several aggregates, by aggregate and version.

        One query per :data:`STREAMS_PER_QUERY` aggregates instead of one each (a
        read transaction costs ~50 µs; importing asks for every message).
        """
        ids = [i.hex for i in originator_ids]
        found: list[StoredEvent] = []
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), STREAMS_PER_QUERY):
                chunk = ids[start : start + STREAMS_PER_QUERY]
                c.execute(
                    "SELECT originator_id, originator_version, topic, state "
                    f"FROM {self.events_table_name} "
                    f"WHERE originator_id IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY originator_id, originator_version",
                    chunk,
                )
                found += (StoredEvent(uuid.UUID(row[0]), *row[1:]) for row in c.fetchall())
        return found

    def select_rows(self, after: int, upto: int, topics: Sequence[str], limit: int) -> list[Row]:
        """The notifications after ``after`` up to ``upto`` (of ``topics``, if any), as
        plain tuples: the library's objects and id conversions cost a third of a rebuild."""
        where = f" AND topic IN ({','.join('?' * len(topics))})" if topics else ""
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None
            c.execute(
                "SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ?{where} "
                "ORDER BY rowid LIMIT ?",
                (after, upto, *topics, limit),
            )
            return c.fetchall()


class Factory(SQLiteFactory):
    """``PERSISTENCE_MODULE=store.sqlite:Factory``."""

    application_recorder_class = Recorder

    def __init__(self, env: object) -> None:
        super().__init__(env)  # type: ignore[arg-type]
        old = self.datastore.pool
        self.datastore.pool = TunedPool(db_name=old.db_name, lock_timeout=old.lock_timeout)
        old.close()
