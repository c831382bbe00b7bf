"""The embedded backend: ``eventsourcing``'s SQLite recorders, tuned.

WAL with ``synchronous=NORMAL``: a committed transaction survives the process
being killed (the OS holds the WAL); only a power loss can take back the last
commits. Set ``EVENTPILE_SYNC=full`` to sync every commit to disk.
"""

from __future__ import annotations

import os

from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)


class TunedPool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        sync = "FULL" if os.environ.get("EVENTPILE_SYNC", "").lower() == "full" else "NORMAL"
        connection.cursor().execute(f"PRAGMA synchronous={sync}")
        return connection


class Factory(SQLiteFactory):
    """``PERSISTENCE_MODULE=store.sqlite:Factory``."""

    def __init__(self, env: object) -> None:
        super().__init__(env)  # type: ignore[arg-type]
        old = self.datastore.pool
        self.datastore.pool = TunedPool(db_name=old.db_name, lock_timeout=old.lock_timeout)
        old.close()
