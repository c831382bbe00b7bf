"""Where views live: a small database interface the projections write SQL against.

Projections write SQLite's SQL with ``?`` placeholders. A :class:`ViewStore` opens
the live database of a view, and a fresh one beside it for a rebuild or a
verification, and swaps a fresh one in.

On every backend each view is a SQLCipher file in the home, keyed with a raw 256-bit
key derived from the data key (``x'…'`` skips SQLCipher's own KDF): what a machine
derives from the log stays on it, encrypted. A table whose primary key is what it is
looked up by is best made ``WITHOUT ROWID``: the tree of that key alone, not rows
beside an index of the key (half the pages to write on each insert).
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventpile.store.errors import DamagedView, StoreError

BUSY_TIMEOUT_MS = 10_000
"""How long a view waits for another process's write before it gives up."""
CACHE_KIB = {False: 64 * 1024, True: 256 * 1024}
"""SQLite's page cache of a live view and of a fresh one (a rebuild), at most, in KiB:
it fills only as pages are read. The indexes keyed by random ids (messages, tags,
threads) outgrow SQLite's 2 MB default, and every insert then read and decrypted a page
from disk: rebuilding 100,000 messages took 51 s with the default, 32 s with this."""
TRACKING = (
    "CREATE TABLE IF NOT EXISTS tracking ("
    "name TEXT PRIMARY KEY, position BIGINT NOT NULL, schema BIGINT NOT NULL)"
)


class ViewDB(ABC):
    """A connection to one view's database."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the returned cursor iterates and has ``fetchone``/``fetchall``."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    def script(self, sql: str) -> None:
        """Run several ``;``-separated statements (DDL)."""

    @abstractmethod
    def transaction(self) -> Any:
        """A context manager: one write transaction, exclusive among writers of this view."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def replaced(self) -> bool:
        """Was the view's database replaced since this connection opened it (a rebuild
        swapped a new one in)? Then reopen it."""


class ViewStore(ABC):
    """Opens, swaps and drops the databases of views."""

    @abstractmethod
    def open(self, name: str) -> ViewDB:
        """The live database of view ``name`` (created empty if missing)."""

    @abstractmethod
    def open_fresh(self, name: str, purpose: str) -> ViewDB:
        """An empty database beside the live one, tuned for bulk writing."""

    @abstractmethod
    def swap(self, fresh: ViewDB, name: str, purpose: str) -> None:
        """Make the fresh database the live one (both connections are closed)."""

    @abstractmethod
    def discard(self, fresh: ViewDB, name: str, purpose: str) -> None: ...

    @abstractmethod
    def drop(self, name: str) -> None:
        """Delete the live database (its schema changed; it is rebuilt from the log)."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Is there a live database of view ``name`` (opening it would not make one)?"""


def read_position(db: ViewDB, name: str) -> tuple[int, int] | None:
    """``(position, schema)`` of projection ``name``, or None if it never ran."""
    row = db.execute("SELECT position, schema FROM tracking WHERE name=?", (name,)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def write_position(db: ViewDB, name: str, position: int, schema: int) -> None:
    db.execute(
        "INSERT INTO tracking VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
        "SET position=excluded.position, schema=excluded.schema",
        (name, position, schema),
    )


class SQLCipherDB(ViewDB):
    def __init__(self, path: Path, key: bytes, *, bulk: bool = False):
        import sqlcipher3

        self.path = path
        self.connection = db = sqlcipher3.connect(
            str(path), isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA cipher_log_level = NONE")  # its errors are ours to tell
        db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        # before the first read: a process creating or writing the view holds it a moment
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher3.DatabaseError as error:
            db.close()
            if "locked" in str(error) or "busy" in str(error):
                raise StoreError(
                    f"{path} stayed locked by another process for "
                    f"{BUSY_TIMEOUT_MS // 1000} s: try again"
                ) from None
            raise DamagedView(
                f"{path} cannot be opened with this key (damaged or foreign)"
            ) from None
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB[bulk]}")
        self._bulk = bulk
        if bulk:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
        else:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(TRACKING)
        self._file = os.stat(path).st_ino  # of the file the name led to (see ``swap``)

    def replaced(self) -> bool:
        """An open file is never deleted, so its inode is not given to another one."""
        try:
            return os.stat(self.path).st_ino != self._file
        except FileNotFoundError:
            return True

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def script(self, sql: str) -> None:
        self.connection.executescript(sql)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A fresh database (``bulk``) has one transaction for all, committed by
        :meth:`commit_all`: nobody else reads it, and one that fails is discarded. A
        commit per page of the log wrote each page of its indexes again and again."""
        if self._bulk:
            if not self.connection.in_transaction:
                self.connection.execute("BEGIN")
            yield
            return
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def commit_all(self) -> None:
        """Commit the one transaction of a fresh database (see :meth:`transaction`)."""
        if self.connection.in_transaction:
            self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


class SQLCipherViewStore(ViewStore):
    """Each view in its own encrypted file ``DIRECTORY/NAME.db``."""

    def __init__(self, directory: Path, key: bytes):
        self.directory = directory
        self._key = key

    def path(self, name: str, purpose: str = "") -> Path:
        return self.directory / (f"{name}.db.{purpose}" if purpose else f"{name}.db")

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def open(self, name: str) -> SQLCipherDB:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        return SQLCipherDB(self.path(name), self._key)

    def open_fresh(self, name: str, purpose: str) -> SQLCipherDB:
        _remove(self.path(name, purpose))
        return SQLCipherDB(self.path(name, purpose), self._key, bulk=True)

    def swap(self, fresh: ViewDB, name: str, purpose: str) -> None:
        """``NAME.db`` is a symbolic link to the live file, ``NAME.GENERATION.db``: the
        fresh one becomes a generation, the link is replaced by one to it (atomically),
        and the former generation is deleted. SQLite follows the link: each generation
        has its own write-ahead log beside it. A process that has the former one open
        reads it to the end of what it does, and opens the new one once it sees that
        the name leads elsewhere (:meth:`SQLCipherDB.replaced`).

        (Copying the fresh database into the live file with SQLite's backup wrote it
        twice more, a sixth of a rebuild, and held off readers meanwhile; renaming it
        over the live file let a process that had the live one open leave its
        write-ahead log beside the new file.)"""
        assert isinstance(fresh, SQLCipherDB)
        fresh.commit_all()
        fresh.execute("PRAGMA journal_mode=WAL")  # as a live file is (SQLite keeps it)
        fresh.close()
        link = self.path(name)
        former = link.resolve() if link.is_symlink() else None
        generation = link.with_name(f"{name}.{uuid.uuid4().hex}.db")
        os.replace(self.path(name, purpose), generation)
        renamed = link.with_name(f"{link.name}.link")
        renamed.unlink(missing_ok=True)
        renamed.symlink_to(generation.name)
        os.replace(renamed, link)
        _remove(link, "-wal", "-shm")  # the write-ahead log of a live file of before
        if former is not None:
            _remove(former)

    def discard(self, fresh: ViewDB, name: str, purpose: str) -> None:
        fresh.close()
        _remove(self.path(name, purpose))

    def drop(self, name: str) -> None:
        """Replace the live database by an empty one (see :meth:`swap`)."""
        self.swap(self.open_fresh(name, "drop"), name, "drop")


def rekey_views(directory: Path, old_keys: Sequence[bytes], new: bytes) -> None:
    """Key each view file of ``directory`` that one of ``old_keys`` opens anew with ``new``
    (SQLCipher rewrites its pages); one under ``new`` already is left as it is."""
    for path in sorted(directory.glob("*.db")):
        if path.is_symlink():
            continue  # the name of a live file, rekeyed by its own name
        for key in old_keys:
            try:
                db = SQLCipherDB(path, key)
            except DamagedView:
                continue  # not under this key
            try:
                db.execute(f"PRAGMA rekey = \"x'{new.hex()}'\"")
            finally:
                db.close()
            break


def _remove(path: Path, *suffixes: str) -> None:
    """Delete a database and its write-ahead log (or those ``suffixes`` of its name)."""
    for suffix in suffixes or ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
