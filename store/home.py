"""Where one user's data lives: the home directory and its files.

::

    $EVENTPILE_HOME/
        keys.json          data keys, wrapped by the passphrase (0600)
        events.sqlite3     the event store (AES-256-GCM per event)
        views/NAME.db      one SQLCipher database per projection
        database.url       only with PostgreSQL (0600): the database that holds the
                           events and views instead of the two above
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from store.errors import NotInitialised, StoreError
from store.keys import Keyring, create_key_file, open_key_file


def default_home() -> Path:
    """``$EVENTPILE_HOME``, else the per-user data directory."""
    configured = os.environ.get("EVENTPILE_HOME")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("eventpile"))


@dataclass(frozen=True)
class Home:
    """One user's data directory: ``init`` makes it, ``unlock`` opens its keys."""

    path: Path
    database_url: str | None = None
    """A ``postgresql://`` URL: the event store and views live there (see :attr:`database`)."""

    @property
    def key_file(self) -> Path:
        return self.path / "keys.json"

    @property
    def events_db(self) -> Path:
        return self.path / "events.sqlite3"

    @property
    def views(self) -> Path:
        return self.path / "views"

    @property
    def database_file(self) -> Path:
        return self.path / "database.url"

    @property
    def database(self) -> str | None:
        """The PostgreSQL URL of this home's store (given, else saved at init); None: SQLite."""
        if self.database_url:
            return self.database_url
        try:
            return self.database_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        return self.key_file.exists()

    def init(self, passphrase: str) -> Keyring:
        """Make the home; nothing is created if it is refused."""
        if self.exists():
            raise StoreError(f"{self.path} is already an eventpile home")
        if not passphrase:
            raise StoreError("the passphrase must not be empty")
        if self.events_db.exists() or (self.views.is_dir() and any(self.views.iterdir())):
            raise StoreError(
                f"{self.path} holds an event log or views but no keys.json: restore its "
                "keys.json (a new key could not read what is there)"
            )
        if self.database_url:
            from store.postgres import log_end

            if log_end(self.database_url):  # also checks that the URL is usable
                raise StoreError(
                    "that database already holds an event log: to share it, copy keys.json "
                    "and database.url from a home that uses it (its keys read its events)"
                )
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.views.mkdir(exist_ok=True, mode=0o700)
        if self.database_url:
            fd = os.open(self.database_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.database_url + "\n")
        return create_key_file(self.key_file, passphrase)

    def unlock(self, passphrase: str) -> Keyring:
        if not self.path.is_dir():
            raise NotInitialised(f"no eventpile home at {self.path}: run `eventpile init`")
        return open_key_file(self.key_file, passphrase)

    def check_log(self) -> None:
        """Refuse a home whose event log file is gone while views of it remain (opening
        the store would make a new, empty log beside them)."""
        if self.database is None and not self.events_db.exists() and any(self.views.glob("*.db")):
            raise StoreError(
                f"{self.events_db} is missing but the views hold what it had: restore it; to "
                "start again with an empty log, delete the views directory"
            )

    def log_end(self) -> int:
        """The last notification id in the event log (0 if empty), read cheaply."""
        import sqlite3

        if self.database:
            from store.postgres import log_end

            return log_end(self.database)
        if not self.events_db.exists():
            return 0
        db = sqlite3.connect(f"file:{self.events_db}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT max(rowid) FROM stored_events").fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()
