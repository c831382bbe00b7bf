"""The shared backend: PostgreSQL, configured from a URL.

``EVENTPILE_DATABASE_URL=postgresql://user:password@host:port/dbname`` (or
``--database-url``) becomes the ``POSTGRES_*`` settings of ``eventsourcing``'s
PostgreSQL factory (ours, in :mod:`eventpile.store.postgres_factory`). The events are
sealed by our mapper before they reach the recorder, exactly as on SQLite: the
database sees ciphertexts, stream ids, versions and encrypted event types. Writers
append through one database function, under the table lock the library's writers
take, and ``NOTIFY`` the events table's channel on commit; :class:`Listener` waits
for that notification in other processes.
This module imports psycopg only when it connects, so that a search starts fast.
"""

from __future__ import annotations

import getpass
from typing import Any, Final

from eventpile.store.errors import StoreError

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
        "PERSISTENCE_MODULE": "eventpile.store.postgres_factory:Factory",
        # one thread uses the store: no pool of five connections opened at start
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "4",
        # every append through our recorder's statements: the library's database function
        # would write rows without their seal (eventpile.store.seals)
        "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
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
