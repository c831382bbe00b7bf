"""Where one user's data lives: the home directory and its files.

::

    $EVENTPILE_HOME/
        keys.json          data keys, wrapped by the passphrase (0600)
        events.sqlite3     the event store (AES-256-GCM per event)
        views/NAME.db      one SQLCipher database per projection: a link to the live
                           file, views/NAME.GENERATION.db (with its write-ahead log),
                           swapped under views/NAME.lock (see
                           :meth:`eventpile.store.views.SQLCipherViewStore.swap`)
        log-head           the last seal of the log this home wrote (see
                           :mod:`eventpile.store.seals`)
        database.url       only with PostgreSQL (0600): the database that holds the
                           events instead of events.sqlite3 (the views stay here)
        agent.sock         while ``eventpile unlock`` holds the keys (0600, see
                           :mod:`eventpile.store.agent`)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eventpile.store.agent_protocol import SOCKET
from eventpile.store.errors import NotInitialised, StoreError
from eventpile.store.keys import (
    Keyring,
    change_passphrase,
    create_key_file,
    open_key_file,
    rotate_keys,
)
from eventpile.store.passphrase import KEY_FILE

if TYPE_CHECKING:
    from eventpile.store.backend import Backend


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
    """A ``postgresql://`` URL: the event store lives there (see :attr:`database`)."""

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def agent_socket(self) -> Path:
        return self.path / SOCKET

    @property
    def events_db(self) -> Path:
        return self.path / "events.sqlite3"

    @property
    def views(self) -> Path:
        return self.path / "views"

    @property
    def head_file(self) -> Path:
        """The home's anchor of its log: its last seal (:class:`~eventpile.store.seals.Head`)."""
        return self.path / "log-head"

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

    def backend(self) -> Backend:
        """Where this home's events and views are: its database if it names one, else
        SQLite files in the home (the only place that asks which)."""
        from eventpile.store.backend import PostgresBackend, SQLiteBackend

        url = self.database
        return SQLiteBackend(self) if url is None else PostgresBackend(self, url)

    def exists(self) -> bool:
        return self.key_file.exists()

    def init(self, passphrase: str, keys: Keyring | None = None) -> Keyring:
        """Make the home (with ``keys``: another installation of the user whose data keys
        those are, see :mod:`eventpile.commands.sync`); nothing is created if it is refused."""
        if self.exists():
            raise StoreError(f"{self.path} is already an eventpile home")
        if not passphrase:
            raise StoreError("the passphrase must not be empty")
        backend = self.backend()
        backend.check_new()
        self.head_file.unlink(missing_ok=True)  # of a log that is not this home's
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.views.mkdir(exist_ok=True, mode=0o700)
        backend.created()
        return create_key_file(self.key_file, passphrase, keys)

    def unlock(self, passphrase: str) -> Keyring:
        self._check_exists()
        return open_key_file(self.key_file, passphrase)

    def change_passphrase(self, old: str, new: str) -> Keyring:
        """The keys wrapped by ``new`` from now on; ``old`` is refused afterwards."""
        self._check_exists()
        return change_passphrase(self.key_file, old, new)

    def rekey(self, passphrase: str) -> Keyring:
        """A new current data key (unless a rekey is under way: then its keys), and the
        views keyed anew with it. The events are sealed anew by the ``Rekey`` operation
        (:mod:`eventpile.commands.rekey`), which an application opened with the keys
        returned runs, and which destroys the old keys at its end."""
        self._check_exists()
        ring = rotate_keys(self.key_file, passphrase)
        self.backend().rekey_views(ring)
        return ring

    def _check_exists(self) -> None:
        if not self.path.is_dir():
            raise NotInitialised(f"no eventpile home at {self.path}: run `eventpile init`")
