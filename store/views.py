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

import fcntl
import itertools
import os
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import sqlcipher3

from eventpile.store.errors import DamagedView, StoreError
from eventpile.store.files import sync_directory

BUSY_TIMEOUT_MS = 10_000
"""How long a view waits for another process's write before it gives up."""
BUSY_PAUSES_S = (0.00005, 0.0001, 0.0002, 0.0005, 0.001)
"""How long a write waits for another process's to end before it tries again: the first
pauses, then the last one each time (see :meth:`SQLCipherDB._begin`)."""
CACHE_KIB = {False: 64 * 1024, True: 256 * 1024}
"""SQLite's page cache of a live view and of a fresh one (a rebuild), at most, in KiB:
it fills only as pages are read. The indexes keyed by random ids (messages, tags,
threads) outgrow SQLite's 2 MB default, and every insert then read and decrypted a page
from disk: rebuilding 100,000 messages took 51 s with the default, 32 s with this."""
COMMIT_ASIDE_FROM = 256
"""A transaction of a view that changed at least so many rows commits (a live view's)
and runs its deferred statements (:meth:`SQLCipherDB.defer`) in a thread of its own,
and the caller goes on meanwhile: they hold no GIL (SQLCipher encrypting and writing
pages, FTS5 tokenizing and writing out its terms). The connection's next use waits for
them. A smaller one ends at once (a thread would cost more than it saves)."""
TRACKING = (
    "CREATE TABLE IF NOT EXISTS tracking ("
    "name TEXT PRIMARY KEY, position BIGINT NOT NULL, schema BIGINT NOT NULL)"
)


class ViewBusy(StoreError):
    """Another process is writing the view (a transaction asked not to wait)."""


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
    def transaction(self, wait: bool = True) -> Any:
        """A context manager: one write transaction, exclusive among writers of this view.
        Without ``wait``, :class:`ViewBusy` at once if another process is writing it."""

    @abstractmethod
    def defer(self, sql: str) -> None:
        """Run ``sql`` (one statement) last in the transaction under way."""

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
    def open_fresh(self, name: str) -> ViewDB:
        """An empty database beside the live one, tuned for bulk writing."""

    @abstractmethod
    def swap(self, fresh: ViewDB, name: str) -> None:
        """Make the fresh database the live one (both connections are closed)."""

    @abstractmethod
    def discard(self, fresh: ViewDB) -> None: ...

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
    """A connection to the SQLCipher file ``file``, named ``path`` (its link, if live)."""

    def __init__(self, path: Path, key: bytes, *, file: Path | None = None, bulk: bool = False):
        self.path = path
        self.file = file or path
        mode = "rwc" if bulk else "rw"  # a live file is made by a swap, never by opening it
        try:
            self.connection = db = sqlcipher3.connect(
                f"{self.file.as_uri()}?mode={mode}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlcipher3.OperationalError as error:
            if not self.file.exists():
                raise FileNotFoundError(self.file) from None  # replaced since it was found
            raise StoreError(f"{path} cannot be opened: {error}") from None
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
        db.execute("PRAGMA temp_store=MEMORY")  # what a view stages for a page
        self._bulk = bulk
        if bulk:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
        else:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(TRACKING)
        self.inode = 0
        """The inode of ``file`` (set by whoever opened it knowing it is the one)."""
        self.held: int | None = None
        """A descriptor of a fresh file, locked while it is being built (see ``swap``)."""
        self._committing: threading.Event | None = None
        """Set once the statements run aside (see :meth:`_finish`) are done."""
        self._failed: BaseException | None = None
        self._deferred: list[str] = []

    def replaced(self) -> bool:
        """While this connection has its file open, the file's inode is not given to
        another file, deleted or not."""
        return _inode(self.path) != self.inode

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._settle()
        return self.connection.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._settle()
        self.connection.executemany(sql, rows)

    def script(self, sql: str) -> None:
        self._settle()
        self.connection.executescript(sql)

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[None]:
        """A fresh database (``bulk``) has one transaction for all, committed by
        :meth:`commit_all`: nobody else reads it, and one that fails is discarded. A
        commit per page of the log wrote each page of its indexes again and again."""
        self._settle()
        changes = self.connection.total_changes
        if self._bulk:
            if not self.connection.in_transaction:
                self.connection.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._deferred.clear()
                raise
            self._finish(changes, [])
            return
        try:  # begun inside: interrupted right after BEGIN, it is rolled back
            self._begin(wait)
            yield
        except BaseException:
            self._deferred.clear()
            self._roll_back()
            raise
        self._finish(changes, ["COMMIT"])

    def _begin(self, wait: bool) -> None:
        """``BEGIN IMMEDIATE``, trying again after short pauses (:data:`BUSY_PAUSES_S`)
        while another process writes, for up to :data:`BUSY_TIMEOUT_MS` (without
        ``wait``, :class:`ViewBusy` instead). SQLite's own wait sleeps a millisecond at
        its first retry, then two, then five, where a worker's write to a view takes a
        fraction of one: two workers sharing the views spent more time asleep than the
        other held the lock."""
        db = self.connection
        db.execute("PRAGMA busy_timeout=0")
        try:
            deadline = monotonic() + BUSY_TIMEOUT_MS / 1000
            for attempt in itertools.count():
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlcipher3.OperationalError as error:
                    if "locked" not in str(error):
                        raise
                    if not wait:
                        raise ViewBusy(f"{self.path.name} is being written") from None
                    if monotonic() >= deadline:
                        raise
                sleep(BUSY_PAUSES_S[min(attempt, len(BUSY_PAUSES_S) - 1)])
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def defer(self, sql: str) -> None:
        """Run ``sql`` (one statement) last in the transaction under way (at once outside
        one): in the thread of its commit when that goes aside (see
        :data:`COMMIT_ASIDE_FROM`). For a statement that does much in one step, an
        ``INSERT … SELECT`` into a full-text index, say: its tokenizing then holds no GIL."""
        if self.connection.in_transaction:
            self._deferred.append(sql)
        else:
            self.execute(sql)

    def _finish(self, changes: int, ending: list[str]) -> None:
        """Run the deferred statements and ``ending``: here, or aside if the transaction
        changed at least :data:`COMMIT_ASIDE_FROM` rows. If one fails, the transaction
        is rolled back (the view is where it was before it)."""
        statements, self._deferred = [*self._deferred, *ending], []
        if self.connection.total_changes - changes < COMMIT_ASIDE_FROM:
            try:
                self._run(statements)
            except BaseException:
                self._roll_back()
                raise
            return
        self._committing = done = threading.Event()
        threading.Thread(target=self._aside, args=(statements, done), name=self.path.name).start()

    def _run(self, statements: list[str]) -> None:
        for sql in statements:
            self.connection.execute(sql)

    def _aside(self, statements: list[str], done: threading.Event) -> None:
        try:
            self._run(statements)
        except BaseException as e:  # raised by the next use of the connection
            self._failed = e
            self._roll_back()  # now: the view's write lock is not held until then
        finally:
            done.set()

    def _roll_back(self) -> None:
        with suppress(sqlcipher3.Error):
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")

    def _settle(self) -> None:
        """Wait for the statements and commit under way aside (see :meth:`_finish`); raise
        their error, if they failed (the transaction was rolled back: the view is where
        it was before it). Interrupted (Ctrl-C), it stops them first: the connection is
        never used, nor closed, while they run."""
        done = self._committing
        if done is None:
            return
        try:
            done.wait()
        except BaseException:
            self.connection.interrupt()  # they fail, and roll back
            while not done.is_set():
                with suppress(KeyboardInterrupt):
                    done.wait()
            self._committing = self._failed = None
            raise
        self._committing, failed, self._failed = None, self._failed, None
        if failed is not None:
            raise failed

    def commit_all(self) -> None:
        """Commit the one transaction of a fresh database (see :meth:`transaction`), with
        what was deferred outside a :meth:`transaction` block."""
        self._settle()
        if self.connection.in_transaction:
            statements, self._deferred = [*self._deferred, "COMMIT"], []
            self._run(statements)

    def close(self) -> None:
        try:
            self._settle()
        finally:
            self.connection.close()


class SQLCipherViewStore(ViewStore):
    """Each view in its own encrypted file, named ``DIRECTORY/NAME.db``: a symbolic link
    to the live file, ``NAME.GENERATION.db`` (see :meth:`swap`)."""

    def __init__(self, directory: Path, key: bytes):
        self.directory = directory.resolve()  # as the links are resolved (see _sweep)
        self._key = key

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def open(self, name: str) -> SQLCipherDB:
        """The file the name leads to, made empty first if there is none. The file is
        found, opened, and found again: if the name leads elsewhere by then (a swap
        came between), the new one is opened. Then, unless a swap is under way, what
        crashes left of the view is deleted (see :meth:`_sweep`)."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        link = self.path(name)
        for _ in range(OPEN_ATTEMPTS):
            if not link.exists():
                with self._swapping(name):
                    if not link.exists():
                        self._swap(self.open_fresh(name, locked=True), name)
            file = Path(os.path.realpath(link))
            try:
                inode = os.stat(file).st_ino
                db = SQLCipherDB(link, self._key, file=file)
            except FileNotFoundError:
                continue
            except DamagedView:  # or deleted while it was read: a swap came between
                if file.exists() and Path(os.path.realpath(link)) == file:
                    raise
                continue
            if _inode(file) == inode:
                db.inode = inode
                self._sweep_if_free(name)
                return db
            db.close()
        raise StoreError(f"{link} was replaced {OPEN_ATTEMPTS} times while it was opened")

    def _sweep_if_free(self, name: str) -> None:
        """:meth:`_sweep` unless a swap is under way, or the lock cannot be had at all
        (a read-only home, say: it is read all the same)."""
        try:
            with self._swapping(name, wait=False) as free:
                if free:
                    self._sweep(name)
        except OSError:
            pass

    def open_fresh(self, name: str, locked: bool = False) -> SQLCipherDB:
        """A new generation, locked (``flock``) while it is built: a sweep leaves it be.
        It is made and locked while no swap of the view is under way (``locked``: the
        caller holds that lock), so a sweep finds none half made."""
        file = self.directory / f"{name}.{uuid.uuid4().hex}.db"
        with nullcontext() if locked else self._swapping(name):
            made = file.with_name(f"{file.name}.new")
            held = os.open(made, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(held, fcntl.LOCK_EX)
                os.rename(made, file)
            except BaseException:
                os.close(held)
                _remove(made)
                raise
        try:
            db = SQLCipherDB(file, self._key, bulk=True)
        except BaseException:
            os.close(held)
            _remove(file)
            raise
        db.held, db.inode = held, os.fstat(held).st_ino
        return db

    def swap(self, fresh: ViewDB, name: str) -> None:
        """The fresh database becomes the live one: ``NAME.db`` is replaced (atomically)
        by a link to it, and the former live file deleted. SQLite follows the link: each
        generation has its own write-ahead log beside it. A process that has the former
        one open reads it to the end of what it does, and opens the new one once it sees
        that the name leads elsewhere (:meth:`SQLCipherDB.replaced`).

        Swaps of a view take turns (a lock file), and each deletes what crashes left.

        (Copying the fresh database into the live file with SQLite's backup wrote it
        twice more, a sixth of a rebuild, and held readers off meanwhile; renaming it
        over the live file let a process that had the live one open leave its
        write-ahead log beside the new file.)"""
        with self._swapping(name):
            self._swap(fresh, name)

    def _swap(self, fresh: ViewDB, name: str) -> None:
        assert isinstance(fresh, SQLCipherDB) and fresh.held is not None
        fresh.commit_all()
        fresh.execute("PRAGMA journal_mode=WAL")  # as a live file is (SQLite keeps it)
        fresh.close()
        try:
            os.fsync(fresh.held)  # written without syncs: on disk before it is live
        finally:  # before it is live: closing it would drop this process's SQLite locks
            os.close(fresh.held)  # on it (POSIX); sweeps wait for this swap's lock
        link = self.path(name)
        former = Path(os.path.realpath(link)) if link.is_symlink() else None
        renamed = link.with_name(f"{fresh.file.name}.link")
        renamed.symlink_to(fresh.file.name)
        os.replace(renamed, link)
        sync_directory(self.directory)
        if former is not None:  # not opened to see if it is held (see _held)
            _remove(former)
        self._sweep(name)

    def _sweep(self, name: str) -> None:
        """Delete, with the swap lock held, what is left of ``name`` beside its live
        file: the former live file (and the write-ahead log it had as a file before
        generations), generations a crash left (not those being built: their builders
        hold them locked), their write-ahead logs, links never swapped in, and the
        fresh files of earlier versions."""
        link = self.path(name)
        live = Path(os.path.realpath(link))
        for path in self.directory.iterdir():
            found = _LEFT.fullmatch(path.name)
            if found is None or found["name"] != name or path == live:
                continue
            if found["end"] in ("-wal", "-shm"):
                if not path.with_name(path.name[:-4]).exists():
                    path.unlink(missing_ok=True)
            elif found["old"] in ("-wal", "-shm"):
                if link.is_symlink():  # not the log of a live file of before
                    path.unlink(missing_ok=True)
            elif found["end"] or found["old"] or not _held(path):
                _remove(path)

    @contextmanager
    def _swapping(self, name: str, wait: bool = True) -> Iterator[bool]:
        """Hold the view's swap lock (without ``wait``: if it is free; says whether)."""
        lock = os.open(self.directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(lock)

    def discard(self, fresh: ViewDB) -> None:
        assert isinstance(fresh, SQLCipherDB) and fresh.held is not None
        try:
            fresh.close()  # what failed aside in it is raised: it is deleted all the same
        finally:
            _remove(fresh.file)
            os.close(fresh.held)

    def drop(self, name: str) -> None:
        """Replace the live database by an empty one (see :meth:`swap`)."""
        self.swap(self.open_fresh(name), name)


OPEN_ATTEMPTS = 100
_LEFT = re.compile(
    r"(?P<name>[^.]+)(?:\.[0-9a-f]{32}\.db(?P<end>\.link|\.new|-wal|-shm)?"
    r"|\.db(?P<old>\.rebuild|\.verify|\.drop|\.link|-wal|-shm))"
)
"""What :meth:`SQLCipherViewStore._sweep` may delete: a generation, with what may be
beside it; the fresh files, link and write-ahead log of a view of an earlier version."""


def _held(path: Path) -> bool:
    """Does a process hold ``path`` locked (``flock``: it is building it)? Closing the
    descriptor this opens drops any SQLite lock this process has on the file (POSIX):
    only a fresh file's builder has it open, and nobody else reads a fresh file."""
    try:
        descriptor = os.open(path, os.O_RDWR)
    except OSError:
        return True  # gone, or not ours to judge
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def _inode(path: Path) -> int:
    """The inode of the file at ``path`` (0: none there)."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return 0


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


def _remove(path: Path) -> None:
    """Delete a database and its write-ahead log."""
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
