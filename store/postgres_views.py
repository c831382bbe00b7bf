"""Views in PostgreSQL: one schema per view, in the event store's database.

View ``NAME`` lives in schema ``view_NAME`` (the connection's ``search_path``), so
projections write the same unqualified SQL as on SQLite; ``?`` placeholders
become psycopg's ``%s``. Writers of one view serialise on an advisory lock named
after its schema, taken at the start of each write transaction: concurrent
catch-ups of the same view from several processes apply each event once. A
rebuild fills ``view_NAME_rebuild`` and swaps it in by renaming schemas in one
transaction.

The tables are plaintext to whoever can read the database (unlike SQLCipher
files): see the README. The store of the views is the backend's to give
(:mod:`eventpile.store.backend`); projections only write SQL against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, ClassVar

from psycopg.pq import TransactionStatus

from eventpile.store.postgres import LOCK_KEY, connect
from eventpile.store.views import TRACKING, ViewDB, ViewStore


@lru_cache(maxsize=512)
def _translate(sql: str) -> tuple[str, bool]:
    """psycopg's placeholders; and whether the statement only writes (returns no rows)."""
    words = sql.split(maxsplit=1)
    writes = words[0].upper() in ("INSERT", "UPDATE", "DELETE") and "RETURNING" not in sql.upper()
    return sql.replace("%", "%%").replace("?", "%s"), writes


def _clean(params: Sequence[Any]) -> list[Any]:
    """PostgreSQL text cannot hold NUL characters: they become U+FFFD in views (in arrays too)."""
    return [_clean_one(p) for p in params]


def _clean_one(param: Any) -> Any:
    if isinstance(param, str):
        return param.replace("\x00", "\ufffd")
    return _clean(param) if isinstance(param, list) else param


class PostgresViewDB(ViewDB):
    dialect: ClassVar[str] = "postgresql"

    def __init__(self, url: str, schema: str, *, fresh: bool = False):
        self.schema = schema
        self.connection = connect(url)
        self._deferred: list[str] | None = [] if fresh else None
        self._writer = self.connection.cursor()
        name = f'"{schema}"'
        if fresh:
            # Held until closed: a second rebuild of the same view waits for this one.
            self.connection.execute(f"SELECT pg_advisory_lock({LOCK_KEY})", (schema,))
            self.connection.execute("SET synchronous_commit = off")
        with self._locked():
            if fresh:
                self.connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            self.connection.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        self.connection.execute(f"SET search_path = {name}")
        self.script(TRACKING)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        query, writes = _translate(sql)
        if writes:  # one cursor for all writes: a new cursor per statement costs more
            self._writer.execute(query, _clean(params))
            return self._writer
        return self.connection.execute(query, _clean(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._writer.executemany(_translate(sql)[0], [_clean(row) for row in rows])

    def script(self, sql: str) -> None:
        """DDL in one transaction under the view's lock (concurrent creators wait).

        A fresh database defers its full-text (GIN) indexes to :meth:`finish`: one
        bulk build is many times faster than the insertions of a rebuild.
        """
        if self._deferred is not None:
            statements = sql.split(";")
            self._deferred += [s for s in statements if " USING GIN " in s.upper()]
            sql = ";".join(s for s in statements if " USING GIN " not in s.upper())
        with self._locked():
            self.connection.execute(sql)

    def finish(self) -> None:
        """Build what a fresh database deferred."""
        for statement in self._deferred or ():
            self.connection.execute(statement)
        self._deferred = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements are pipelined: sent without waiting, until a result is read.

        Written out rather than psycopg's ``transaction()``, whose nested pipelines
        cost round trips: a catch-up is a few transactions after every command.
        """
        connection = self.connection
        try:
            with connection.pipeline():
                connection.execute("BEGIN")
                connection.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})", (self.schema,))
                yield
                connection.execute("COMMIT")
        except BaseException:
            if connection.info.transaction_status != TransactionStatus.IDLE:
                connection.execute("ROLLBACK")
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.connection.transaction():
            self.connection.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})", (self.schema,))
            yield

    def close(self) -> None:
        self.connection.close()


class PostgresViewStore(ViewStore):
    """Each view in its own schema ``view_NAME`` of the database at ``url``."""

    def __init__(self, url: str):
        self.url = url

    @staticmethod
    def schema(name: str, purpose: str = "") -> str:
        return f"view_{name}_{purpose}" if purpose else f"view_{name}"

    def open(self, name: str) -> PostgresViewDB:
        return PostgresViewDB(self.url, self.schema(name))

    def open_fresh(self, name: str, purpose: str) -> PostgresViewDB:
        return PostgresViewDB(self.url, self.schema(name, purpose), fresh=True)

    def swap(self, fresh: ViewDB, name: str, purpose: str) -> None:
        assert isinstance(fresh, PostgresViewDB)
        live = self.schema(name)
        fresh.finish()
        with fresh.connection.transaction():
            fresh.connection.execute("SET LOCAL synchronous_commit = on")
            fresh.connection.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})", (live,))
            fresh.connection.execute(f'DROP SCHEMA IF EXISTS "{live}" CASCADE')
            fresh.connection.execute(f'ALTER SCHEMA "{fresh.schema}" RENAME TO "{live}"')
        fresh.close()

    def discard(self, fresh: ViewDB, name: str, purpose: str) -> None:
        assert isinstance(fresh, PostgresViewDB)
        fresh.connection.execute(f'DROP SCHEMA IF EXISTS "{fresh.schema}" CASCADE')
        fresh.close()

    def drop(self, name: str) -> None:
        with connect(self.url) as connection, connection.transaction():
            live = self.schema(name)
            connection.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY})", (live,))
            connection.execute(f'DROP SCHEMA IF EXISTS "{live}" CASCADE')
