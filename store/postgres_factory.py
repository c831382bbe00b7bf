"""``eventsourcing``'s PostgreSQL factory and recorder, tuned for our events.

``PERSISTENCE_MODULE=eventpile.store.postgres_factory:Factory`` (what
:func:`eventpile.store.postgres.settings` configures).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, cast

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

from eventpile.store.cipher import RETIRED_KEY
from eventpile.store.errors import StoreError
from eventpile.store.mapper import ExportRow, Row, found_and_end
from eventpile.store.people import FORGETTING
from eventpile.store.postgres import LOCK_KEY
from eventpile.store.seals import REMOVED, SEALS_TABLE, Sealing, row_hash
from eventpile.store.sqlite import KEY_TABLE, check_purged
from eventpile.store.topics import PlainTopics

APPEND_FUNCTION = "eventpile_append"
"""The database function that appends events (see :meth:`Recorder._insert_stored_events`)."""
PIPELINED_UPTO = 1000
"""An append of more events than this is sent without psycopg's pipeline: one of 30,000
tag events stalled in it for good, the server and the client each waiting to read."""
BEGIN, COMMIT = SQL("BEGIN ISOLATION LEVEL READ COMMITTED"), SQL("COMMIT")
RECEIVED_TABLE = "eventpile_received"
"""As :data:`eventpile.store.sqlite.RECEIVED_TABLE`."""


class Recorder(Sealing, PlainTopics, PostgresApplicationRecorder):
    """The library's recorder, sending a batch of events as four arrays in binary.

    The library sends an array of composites in text: psycopg escapes every
    ciphertext with regular expressions and the server parses it back, which was
    most of the cost of an append. Each transaction that writes the log seals it
    (:mod:`eventpile.store.seals`), under the table lock every writer takes.
    """

    _mark = "%s"
    _position = "notification_id"

    def __init__(self, datastore: Any, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        schema = Identifier(datastore.schema)
        self.events_table = SQL("{}.{}").format(schema, Identifier(self.events_table_name))
        self.seals_table = SQL("{}.{}").format(schema, Identifier(SEALS_TABLE)).as_string(None)
        self.received_table = SQL("{}.{}").format(schema, Identifier(RECEIVED_TABLE))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (position BIGINT PRIMARY KEY, "
                "origin TEXT NOT NULL, seq BIGINT NOT NULL, UNIQUE (origin, seq))"
            ).format(self.received_table)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (number BIGINT PRIMARY KEY, "
                "entries BYTEA NOT NULL, mac BYTEA NOT NULL)"
            ).format(SQL(self.seals_table))
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {} ON {} (notification_id) WHERE topic = {}").format(
                Identifier(f"{self.events_table_name}_forgettings"),
                self.events_table,
                Literal(FORGETTING),
            )
        )
        self.streams_statement = (
            SQL(
                "SELECT originator_id, originator_version, topic, state FROM {} "
                "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
            )
            .format(self.events_table)
            .as_string(None)
        )
        self.rows_statement, self.rows_of_statement = (
            SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state "
                "FROM {} WHERE notification_id > %s AND notification_id <= %s{} "
                "ORDER BY notification_id LIMIT %s"
            )
            .format(self.events_table, SQL(of_topics))
            .as_string(None)
            for of_topics in ("", " AND topic = ANY(%s)")
        )
        self.forgettings_statement = (
            SQL(
                "SELECT e.notification_id, e.originator_id::text, e.originator_version, "
                "e.topic, e.state, m.top FROM (SELECT max(notification_id) AS top FROM {table}) "
                "m LEFT JOIN {table} e ON e.topic = {forgetting} AND e.notification_id > %s "
                "ORDER BY e.notification_id"
            )
            .format(table=self.events_table, forgetting=Literal(FORGETTING))
            .as_string(None)
        )
        id_type = Identifier(datastore.originator_id_type)
        append = SQL("{}.{}").format(schema, Identifier(APPEND_FUNCTION))
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {append}(ids {id_type}[], versions bigint[], "
                "topics text[], states bytea[], lock_timeout text) RETURNS TABLE "
                "(at_position bigint, of_stream {id_type}, at_version bigint, seal_number bigint) "
                "LANGUAGE plpgsql "
                "AS $$ BEGIN "
                "PERFORM set_config('lock_timeout', lock_timeout, true); "
                "LOCK TABLE {table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "RETURN QUERY WITH written AS (INSERT INTO {table} AS t "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING t.notification_id, t.originator_id, t.originator_version) "
                "SELECT w.*, (SELECT coalesce(max(number), -1) + 1 FROM {seals}) FROM written w; "
                "END $$"
            ).format(
                append=append,
                id_type=id_type,
                table=self.events_table,
                channel=Identifier(self.channel_name),
                seals=SQL(self.seals_table),
            )
        )
        self.append_statement = (
            SQL("SELECT * FROM {}(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[], %b)")
            .format(append, id_type=id_type)
            .as_string(None)
        )
        self.lock_timeout = f"{datastore.lock_timeout}s"

    def _events_table(self) -> str:
        return self.events_table.as_string(None)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        """As the library's, pipelined (for up to :data:`PIPELINED_UPTO` events), except
        that an error inside rolls the transaction back: the library's keeps it for after
        its transaction, which commits what was written (a seal refused, say)."""
        if not stored_events:
            return []
        try:
            with self._writing(len(stored_events) <= PIPELINED_UPTO) as (curs, pipeline):
                self._insert_stored_events(curs, stored_events, **kwargs)
                if pipeline is not None:
                    pipeline.sync()
                positions = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        except BaseException:
            self._pending = None
            raise
        self._settle()
        return positions

    @contextmanager
    def _writing(self, pipelined: bool) -> Iterator[tuple[Any, Any]]:
        """A transaction that writes the log: its cursor, and psycopg's pipeline if
        ``pipelined``. READ COMMITTED whatever the server's default, so that each of the
        append function's statements sees the log as the table lock left it (under
        REPEATABLE READ the snapshot is taken before the lock is, and two writers would
        number their seals alike).

        ``BEGIN`` and ``COMMIT`` are sent as statements of the one pipeline: psycopg's
        transaction block nests two pipelines of its own in one, each ending with a
        round trip, so an append took five, the table lock held through three of them.
        Now it takes two (the append, then the seal with the commit). On an error the
        pool's connection block rolls the transaction back."""
        with (
            self.datastore.get_connection() as conn,
            conn.cursor() as curs,
            conn.pipeline() if pipelined else nullcontext() as pipeline,
        ):
            curs.execute(BEGIN)
            yield curs, pipeline
            curs.execute(COMMIT)

    def _plain_table(self) -> str:
        return (
            SQL("{}.{}")
            .format(Identifier(self.datastore.schema), Identifier(self.PLAIN_TABLE))
            .as_string(None)
        )

    def _select_plain_upto(self) -> list[Any]:
        return self._rows(SQL(f"SELECT upto FROM {self._plain_table()}"), ())

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cast(Any, curs).row_factory = tuple_row
            yield curs

    def _seals_table(self) -> str:
        return self.seals_table

    @staticmethod
    def _inserted(
        curs: Any, stored_events: Sequence[StoredEvent]
    ) -> tuple[list[int], dict[int, bytes], int | None]:
        """The positions of the rows the append just returned, in the order of
        ``stored_events`` (RETURNING's order is not promised), their seal entries, and
        the number of the transaction's seal."""
        rows = curs.fetchall()
        at = {(uuid.UUID(str(i)), v): p for p, i, v, _ in rows}
        positions = [
            at[uuid.UUID(str(e.originator_id)), e.originator_version] for e in stored_events
        ]
        entries = {
            p: row_hash(p, e.originator_id, e.originator_version, e.topic, e.state)
            for p, e in zip(positions, stored_events, strict=True)
        }
        return positions, entries, rows[0][3] if rows else None

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """Append in one statement, a database function: it takes the table lock every
        writer takes (as the library's append does, so that positions commit in order),
        notifies the events' channel, inserts, and returns the positions with the number
        of the seal to write next (read under the lock). Four statements before, each a
        message to the server and its answer."""
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            self.lock_timeout,
        )
        curs.row_factory = tuple_row  # a dict per returned id cost a tenth of an append
        curs.execute(self.append_statement, columns, prepare=True)

    def _fetch_ids_after_insert_events(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        *,
        received: Sequence[tuple[str, int]] = (),
        **kwargs: Any,
    ) -> list[int]:
        """The positions, and where each of ``received`` came from (see
        :meth:`eventpile.store.sqlite.Recorder._insert_events`), in the same transaction."""
        positions, entries, number = self._inserted(curs, stored_events)
        self._seal(curs, entries, number)
        if received:
            curs.execute(
                SQL(
                    "INSERT INTO {} (position, origin, seq) "
                    "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])"
                ).format(self.received_table),
                (positions, [o for o, _ in received], [s for _, s in received]),
            )
        return positions

    def purge_streams(
        self, stored_events: Sequence[StoredEvent], purge: Mapping[uuid.UUID, int]
    ) -> list[int]:
        """As :meth:`eventpile.store.sqlite.Recorder.purge_streams`: in a transaction of its
        own, because the library's insert commits what was written when Python code after
        its statements raises (it keeps the error for after the transaction)."""
        with self._writing(pipelined=False) as (curs, _):
            self._insert_stored_events(curs, stored_events)
            positions, entries, number = self._inserted(curs, stored_events)
            curs.execute(
                SQL(
                    "DELETE FROM {} WHERE originator_id = ANY(%s) RETURNING notification_id"
                ).format(self.events_table),
                (list(purge),),
            )
            deleted = [cast(tuple[int], row)[0] for row in curs.fetchall()]
            check_purged(purge, len(deleted))
            self._seal(curs, entries | dict.fromkeys(deleted, REMOVED), number)
        self._settle()
        return positions

    def select_streams(self, originator_ids: Collection[uuid.UUID]) -> list[StoredEvent]:
        """As :meth:`eventpile.store.sqlite.Recorder.select_streams`, in one query."""
        rows = self._rows(self.streams_statement, (list(originator_ids),), prepare=True)
        return [StoredEvent(*row) for row in rows]

    def select_rows(self, after: int, upto: int, topics: Sequence[str], limit: int) -> list[Row]:
        """As :meth:`eventpile.store.sqlite.Recorder.select_rows`: tuples, the ids as text."""
        if topics:
            params: tuple[Any, ...] = (after, upto, list(topics), limit)
            return self._rows(self.rows_of_statement, params, prepare=True)
        return self._rows(self.rows_statement, (after, upto, limit), prepare=True)

    def forgettings(self, after: int) -> tuple[list[Row], int]:
        """As :meth:`eventpile.store.sqlite.Recorder.forgettings`."""
        return found_and_end(self._rows(self.forgettings_statement, (after,), prepare=True))

    def select_export(self, after: int, upto: int, limit: int) -> list[ExportRow]:
        """As :meth:`eventpile.store.sqlite.Recorder.select_export`."""
        statement = SQL(
            "SELECT e.notification_id, e.originator_id::text, e.originator_version, e.topic, "
            "e.state, r.origin, r.seq FROM {} e LEFT JOIN {} r ON r.position = e.notification_id "
            "WHERE e.notification_id > %s AND e.notification_id <= %s "
            "ORDER BY e.notification_id LIMIT %s"
        ).format(self.events_table, self.received_table)
        return self._rows(statement, (after, upto, limit))

    def received_upto(self, upto: int | None = None) -> dict[str, int]:
        """As :meth:`eventpile.store.sqlite.Recorder.received_upto`."""
        where = SQL("" if upto is None else " WHERE position <= %s")
        statement = SQL("SELECT origin, max(seq) FROM {}{} GROUP BY origin").format(
            self.received_table, where
        )
        return dict(self._rows(statement, () if upto is None else (upto,)))

    def last_positions(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """As :meth:`eventpile.store.sqlite.Recorder.last_positions`."""
        return self._stream_max("notification_id", originator_ids)

    def require_key(self, key_id: int) -> None:
        """As :meth:`eventpile.store.sqlite.Recorder.require_key` (the events table locked
        as a writer locks it, so that no insert under way slips past)."""
        # the table of the current key and the function of the trigger share its name
        table = function = SQL("{}.{}").format(
            Identifier(self.datastore.schema), Identifier(KEY_TABLE)
        )
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            curs.execute(SQL("CREATE TABLE IF NOT EXISTS {} (id BYTEA NOT NULL)").format(table))
            curs.execute(SQL("DELETE FROM {}").format(table))
            curs.execute(
                SQL("INSERT INTO {} VALUES (%s)").format(table), (key_id.to_bytes(4, "big"),)
            )
            curs.execute(
                SQL(
                    "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$ BEGIN "
                    "IF substring(NEW.state from 5 for 4) IS DISTINCT FROM "
                    "(SELECT id FROM {table} LIMIT 1) THEN RAISE EXCEPTION {message} "
                    "USING ERRCODE = 'integrity_constraint_violation'; END IF; RETURN NEW; "
                    "END $$ LANGUAGE plpgsql"
                ).format(function=function, table=table, message=Literal(RETIRED_KEY))
            )
            curs.execute(
                SQL(
                    "CREATE OR REPLACE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW "
                    "EXECUTE FUNCTION {}()"
                ).format(Identifier(KEY_TABLE), self.events_table, function)
            )

    def replace_states(self, rows: Sequence[tuple[int, bytes, bytes]]) -> int:
        """As :meth:`eventpile.store.sqlite.Recorder.replace_states`."""
        statement = SQL(
            "UPDATE {} e SET state = x.new FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[]) "
            "AS x(position, old, new) WHERE e.notification_id = x.position AND e.state = x.old "
            "AND e.notification_id BETWEEN %s AND %s"
        ).format(self.events_table)
        positions = [r[0] for r in rows]
        columns = (
            positions,
            [r[1] for r in rows],
            [r[2] for r in rows],
            min(positions),
            max(positions),
        )
        with self.datastore.transaction(commit=True) as locked:
            self._lock_table(locked)  # a writer's seal follows the one before it
            locked.execute(statement, columns)
            replaced = int(locked.rowcount)
            curs = cast(Any, locked)
            curs.row_factory = tuple_row
            curs.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {} WHERE notification_id = ANY(%s)"
                ).format(self.events_table),
                (positions,),
            )
            self._seal(curs, {row[0]: row_hash(*row) for row in curs.fetchall()})
        self._settle()
        return replaced

    def reclaim(self) -> bool:
        """Nothing now: the server's autovacuum makes the space of deleted events reusable
        (a plain ``VACUUM`` does the same at once; only ``VACUUM FULL``, which locks the
        table while it rewrites it, gives it back to the file system)."""
        return True

    def stream_ends(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """As :meth:`eventpile.store.sqlite.Recorder.stream_ends`."""
        return self._stream_max("originator_version", originator_ids)

    def _stream_max(
        self, column: str, originator_ids: Collection[uuid.UUID]
    ) -> dict[uuid.UUID, int]:
        statement = SQL(
            "SELECT originator_id, max({}) FROM {} WHERE originator_id = ANY(%s) "
            "GROUP BY originator_id"
        ).format(Identifier(column), self.events_table)
        return dict(self._rows(statement, (list(originator_ids),)))

    def _rows(
        self, statement: Any, params: Sequence[Any], *, prepare: bool | None = None
    ) -> list[Any]:
        """The rows of one query, as tuples, sent by the server in its binary format (an
        event's bytes as they are, not as hex: reading the log went from 29,000 to 32,000
        events/s). Prepared at once with ``prepare``; otherwise once a connection has run
        it five times (psycopg's threshold): the seals' check of a read, planned each
        time, took the server 0.3 ms more."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, params, prepare=prepare, binary=True)
            return curs.fetchall()


class Factory(PostgresFactory):
    """Our :class:`Recorder`, its tables made under a lock.

    The library creates its table, type and function on every start; two processes
    starting together would race on them (``tuple concurrently updated``). The
    plaintext views of earlier versions are dropped then. Our
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
                    _drop_plaintext_views(connection)
                    _migrate(connection, cast(Recorder, recorder))
                else:
                    _require_append_function(connection, self.datastore.schema)
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


def _require_append_function(connection: Any, schema: str) -> None:
    """With table creation off (``CREATE_TABLE=no``), the tables' start makes nothing: a
    database an earlier version made lacks the append function then."""
    name = SQL("{}.{}").format(Identifier(schema), Identifier(APPEND_FUNCTION))
    found = connection.execute(
        "SELECT to_regproc(%s) IS NOT NULL AS made", (name.as_string(None),), prepare=False
    ).fetchone()
    if not found["made"]:
        raise StoreError(
            f"the database has no function {APPEND_FUNCTION} (an earlier version made it, "
            "and CREATE_TABLE=no makes nothing): start once without CREATE_TABLE=no; "
            "nothing was written"
        )


def _migrate(connection: Any, recorder: Recorder) -> None:
    """Once: :meth:`Sealing._add_spans`, :meth:`PlainTopics._mark_plain_topics`."""
    kept = connection.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = %s AND column_name = 'high'",
        (recorder.datastore.schema, SEALS_TABLE),
        prepare=False,
    ).fetchone()
    marked = connection.execute(
        "SELECT to_regclass(%s) IS NOT NULL AS made", (recorder._plain_table(),), prepare=False
    ).fetchone()
    if kept is not None and marked["made"] and recorder._select_plain_upto():
        return
    with connection.transaction(), connection.cursor(row_factory=tuple_row) as cursor:
        recorder._lock_table(cursor)
        if kept is None:
            recorder._add_spans(cursor)
        recorder._mark_plain_topics(cursor)


def _drop_plaintext_views(connection: Any) -> None:
    """Earlier versions kept each view in plaintext in a schema ``view_NAME`` of the
    database (with a ``tracking`` table); views are now each machine's own SQLCipher
    files, caught up from the log. A schema still in use by a process of before (a lock
    not given within 5 s), or that may not be dropped, is left for the next start."""
    import psycopg

    schemas = connection.execute(
        r"SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
        r"WHERE n.nspname LIKE 'view\_%' AND c.relname = 'tracking'",
        prepare=False,
    ).fetchall()
    for row in schemas:
        try:
            with connection.transaction():
                connection.execute("SET LOCAL lock_timeout = '5s'", prepare=False)
                connection.execute(
                    SQL("DROP SCHEMA {} CASCADE").format(Identifier(row["nspname"])),
                    prepare=False,
                )
        except psycopg.Error as error:
            warnings.warn(
                f"the plaintext view {row['nspname']} of an earlier version stays in the "
                f"database for now: {' '.join(str(error).split())}",
                stacklevel=2,
            )


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
