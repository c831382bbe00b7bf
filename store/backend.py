"""Where a home keeps its events and views: one backend, chosen in one place.

:meth:`Home.backend <eventpile.store.home.Home.backend>` is the one place that
looks at which it is: SQLite files in the home (the embedded default) or a
PostgreSQL database. A backend gives the ``eventsourcing`` settings of the event
store, the store of the views, a way to wait for other processes' writes and a
cheap look at the end of the log; nothing else in eventpile asks which it is. The
views are the same on both: SQLCipher files in the home.
"""

from __future__ import annotations

import os
import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventpile.store.errors import StoreError

if TYPE_CHECKING:
    from eventpile.store.home import Home
    from eventpile.store.keys import Keyring
    from eventpile.store.postgres import Listener
    from eventpile.store.views import ViewStore

POLL_S = 0.05
"""How often a process looks at a SQLite log while it waits for another's writes."""


@dataclass(frozen=True)
class Backend(ABC):
    """One home's event store; its views are SQLCipher files in the home on every backend
    (a machine's own, caught up from the log: nothing readable leaves it)."""

    home: Home

    @abstractmethod
    def settings(self) -> dict[str, str]:
        """The ``eventsourcing`` settings of the event store."""

    def view_store(self, keyring: Keyring) -> ViewStore:
        from eventpile.store.views import SQLCipherViewStore

        return SQLCipherViewStore(self.home.views, keyring.views_key())

    def rekey_views(self, keyring: Keyring) -> None:
        """Key the views under a retired key of ``keyring`` anew with its current one,
        before any opens them."""
        from eventpile.store.keys import view_keys
        from eventpile.store.views import rekey_views

        rekey_views(self.home.views, *view_keys(keyring))

    @abstractmethod
    def log_end(self) -> int:
        """The last position in the event log (0 if empty), read cheaply."""

    @abstractmethod
    def check_new(self) -> None:
        """Refuse to make a home over an event log its new keys could not read."""

    def created(self) -> None:  # noqa: B027  (most backends have nothing to save)
        """The home was just made: save what opening it again needs."""

    def check_log(self) -> None:
        """Refuse a home where eventpile could not keep its views (and, for a log in the
        home, one whose log is gone while views of it remain)."""
        if not os.access(self.home.path, os.W_OK):
            raise StoreError(
                f"{self.home.path} is not writable (a read-only disk, or another user's "
                "home): eventpile reads and writes its log and views there"
            )

    @abstractmethod
    def waiter(self) -> Waiter:
        """Something to sleep on until another process writes events."""


class Waiter(ABC):
    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return once another process may have written, or after ``timeout`` s."""

    def close(self) -> None:  # noqa: B027  (sleeping holds nothing)
        """Release what waiting holds."""


@dataclass(frozen=True)
class SQLiteBackend(Backend):
    """The events in ``events.sqlite3``."""

    def settings(self) -> dict[str, str]:
        return {
            "PERSISTENCE_MODULE": "eventpile.store.sqlite:Factory",
            "SQLITE_DBNAME": str(self.home.events_db),
        }

    def log_end(self) -> int:
        if not self.home.events_db.exists():
            return 0
        db = sqlite3.connect(f"file:{self.home.events_db}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT max(rowid) FROM stored_events").fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def check_new(self) -> None:
        views = self.home.views
        if self.home.events_db.exists() or (views.is_dir() and any(views.iterdir())):
            raise StoreError(
                f"{self.home.path} holds an event log or views but no keys.json: restore its "
                "keys.json (a new key could not read what is there)"
            )

    def check_log(self) -> None:
        """Opening the store would make a new, empty log beside the views; or could not
        open it at all (SQLite writes beside the log even to read it: its WAL index)."""
        super().check_log()
        if not self.home.events_db.exists() and any(self.home.views.glob("*.db")):
            raise StoreError(
                f"{self.home.events_db} is missing but the views hold what it had: restore "
                "it; to start again with an empty log, delete the views directory"
            )

    def waiter(self) -> Waiter:
        return _Sleep()


class _Sleep(Waiter):
    """SQLite has no notifications: look again every :data:`POLL_S` seconds."""

    def wait(self, timeout: float) -> None:
        time.sleep(min(POLL_S, timeout))


@dataclass(frozen=True)
class PostgresBackend(Backend):
    """The events in a PostgreSQL database that several machines share; the keys stay in
    each machine's home."""

    url: str

    def settings(self) -> dict[str, str]:
        from eventpile.store.postgres import settings

        return settings(self.url)

    def log_end(self) -> int:
        from eventpile.store.postgres import log_end

        return log_end(self.url)

    def check_new(self) -> None:
        if self.log_end():  # also checks that the URL is usable
            raise StoreError(
                "that database already holds an event log: to share it, copy keys.json "
                "and database.url from a home that uses it (its keys read its events)"
            )

    def created(self) -> None:
        fd = os.open(self.home.database_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.url + "\n")

    def waiter(self) -> Waiter:
        from eventpile.store.postgres import Listener

        return _Listen(Listener(self.url))


@dataclass(frozen=True)
class _Listen(Waiter):
    """Sleep until a writer's commit notifies the events table's channel."""

    listener: Listener

    def wait(self, timeout: float) -> None:
        self.listener.wait(timeout)

    def close(self) -> None:
        self.listener.close()
