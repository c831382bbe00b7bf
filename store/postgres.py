"""The shared backend: ``eventsourcing``'s PostgreSQL recorders, configured from a URL.

``EVENTPILE_DATABASE_URL=postgresql://user:password@host:port/dbname`` (or
``--database-url``) becomes the library's ``POSTGRES_*`` settings. The events are
sealed by our mapper before they reach the recorder, exactly as on SQLite: the
database sees ciphertexts, stream ids, versions and event class names. Writers
append under the library's table lock and ``NOTIFY`` the events table's channel
on commit; :class:`Listener` waits for that notification in other processes.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from typing import Any, Final

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

from store.errors import StoreError

SCHEMES: Final = ("postgresql://", "postgres://")
EVENTS_TABLE: Final = "eventpile_events"
"""The library names the table after the application (``eventpile``) and listens on it."""

_SETTINGS: Final = {
    "dbname": "POSTGRES_DBNAME",
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "user": "POSTGRES_USER",
    "password": "POSTGRES_PASSWORD",
    "connect_timeout": "POSTGRES_CONNECT_TIMEOUT",
}
LOCK_KEY: Final = "1702260340, hashtext(%s)"
"""SQL for the advisory-lock key of a name (the parameter); the first half is eventpile's."""


def is_database_url(text: str) -> bool:
    return text.startswith(SCHEMES)


def parse_url(url: str) -> dict[str, str]:
    """The connection parameters of a ``postgresql://`` URL; a clear error if unusable."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    if not is_database_url(url):
        raise StoreError(f"the database URL must start with postgresql://, not {url[:30]!r}")
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except ProgrammingError as e:
        raise StoreError(f"cannot read the database URL: {' '.join(str(e).split())}") from None
    unsupported = sorted(set(params) - set(_SETTINGS))
    if unsupported:
        raise StoreError(
            f"the database URL parameter {unsupported[0]} is not supported here: "
            f"set it in the environment instead (e.g. PG{unsupported[0].upper()})"
        )
    if not params.get("dbname"):
        raise StoreError("the database URL names no database (postgresql://host/DBNAME)")
    return params


def settings(url: str) -> dict[str, str]:
    """The ``eventsourcing`` settings that put the event store in this database."""
    params = parse_url(url)
    params.setdefault("user", getpass.getuser())
    params.setdefault("host", "")  # libpq's default: the local unix socket
    params.setdefault("password", "")  # libpq then reads ~/.pgpass
    params.setdefault("connect_timeout", "5")  # also how long to wait for a pooled connection
    return {
        "PERSISTENCE_MODULE": "store.postgres:Factory",
        # one thread uses the store: no pool of five connections opened at start
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "4",
        **{_SETTINGS[key]: value for key, value in params.items()},
    }


def connect(url: str, **kwargs: Any) -> Any:
    """A psycopg connection (autocommit) to the database of ``url``."""
    import psycopg

    parse_url(url)
    try:
        return psycopg.connect(url, autocommit=True, **kwargs)
    except psycopg.OperationalError as e:
        raise StoreError(f"cannot connect to the database: {' '.join(str(e).split())}") from None


def log_end(url: str) -> int:
    """The last notification id of the event store (0 if empty or not yet created)."""
    with connect(url) as connection:
        row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (EVENTS_TABLE,)).fetchone()
        if not row[0]:
            return 0
        row = connection.execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}").fetchone()
        return int(row[0] or 0)


class Recorder(PostgresApplicationRecorder):
    """The library's recorder, sending a batch of events as four arrays in binary.

    The library sends an array of composites in text: psycopg escapes every
    ciphertext with regular expressions and the server parses it back, which was
    most of the cost of an append.
    """

    def __init__(self, datastore: Any, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        self.insert_events_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema=Identifier(datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=Identifier(datastore.originator_id_type),
        )

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        curs.row_factory = tuple_row  # a dict per returned id cost a tenth of an append
        curs.execute(self.insert_events_statement, columns, prepare=True)

    def _fetch_ids_after_insert_events(self, curs: Any, *args: Any, **kwargs: Any) -> list[int]:
        return [row[0] for row in curs.fetchall()]


class Factory(PostgresFactory):
    """``PERSISTENCE_MODULE=store.postgres:Factory``: :class:`Recorder`, tables made under a lock.

    The library creates its table, type and function on every start; two processes
    starting together would race on them (``tuple concurrently updated``). Our
    ciphertexts do not compress, so the server is told not to try (it did, for
    every event above 2 KB) and to keep events up to 8 KB in the table's own pages.
    """

    application_recorder_class = Recorder

    def application_recorder(self) -> Any:
        try:
            return self._create_application_recorder()
        except PersistenceError as e:
            raise StoreError(f"cannot use the database: {_reason(self.datastore, e)}") from None

    def _create_application_recorder(self) -> Any:
        with self.datastore.get_connection() as connection:
            connection.execute(
                f"SELECT pg_advisory_lock({LOCK_KEY})", ("create tables",), prepare=False
            )
            try:
                recorder = super().application_recorder()
                if self.env_create_table():
                    _store_uncompressed(connection, recorder)
                return recorder
            finally:
                connection.execute(
                    f"SELECT pg_advisory_unlock({LOCK_KEY})", ("create tables",), prepare=False
                )


def _reason(datastore: Any, error: Exception) -> str:
    """Why the pool had no connection (it only says that it had none), in one line."""
    import psycopg

    try:
        psycopg.connect(**datastore.pool.kwargs).close()
    except psycopg.Error as e:
        error = e
    return " ".join(str(error).split())


def _store_uncompressed(connection: Any, recorder: Any) -> None:
    table = SQL("{}.{}").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    done = connection.execute(
        SQL(
            "SELECT attstorage = 'e' AS done FROM pg_attribute "
            "WHERE attrelid = {}::regclass AND attname = 'state'"
        ).format(Literal(table.as_string(connection))),
        prepare=False,
    ).fetchone()
    if not done["done"]:
        connection.execute(
            SQL(
                "ALTER TABLE {} ALTER COLUMN state SET STORAGE EXTERNAL, "
                "SET (toast_tuple_target = 8160)"
            ).format(table),
            prepare=False,
        )


class Listener:
    """Wakes up when another process commits events (``LISTEN`` on the events table)."""

    def __init__(self, url: str, channel: str = EVENTS_TABLE):
        self.connection = connect(url)
        self.connection.execute(f'LISTEN "{channel}"')

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (True) or ``timeout`` seconds pass (False)."""
        return any(True for _ in self.connection.notifies(timeout=timeout, stop_after=1))

    def close(self) -> None:
        self.connection.close()
