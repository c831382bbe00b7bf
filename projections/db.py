"""Encrypted projection databases: SQLCipher files keyed with a raw 256-bit key.

A raw key (``x'…'``) skips SQLCipher's own key derivation: the key already comes
from the data key, so opening a view costs no extra KDF time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlcipher3

from store.errors import StoreError, WrongPassphrase

Connection = Any  # sqlcipher3.Connection: the module ships no type information


def connect(path: Path, key: bytes, *, bulk: bool = False) -> Connection:
    """Open (or create) the SQLCipher database at ``path``.

    ``bulk`` is for a side-by-side rebuild: no journal, no syncs until the swap.
    """
    db = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher3.DatabaseError:
        db.close()
        raise WrongPassphrase(
            f"{path} cannot be opened with this key (damaged or foreign)"
        ) from None
    if bulk:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
    else:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(
        "CREATE TABLE IF NOT EXISTS tracking ("
        "name TEXT PRIMARY KEY, position INTEGER NOT NULL, schema INTEGER NOT NULL)"
    )
    return db


def checkpoint_close(db: Connection) -> None:
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def read_position(db: Connection, name: str) -> tuple[int, int] | None:
    """``(position, schema)`` of projection ``name``, or None if never run."""
    row = db.execute("SELECT position, schema FROM tracking WHERE name=?", (name,)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


class ViewError(StoreError):
    pass
