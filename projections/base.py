"""Projections are folds over the event log into encrypted read models.

A :class:`Projection` says which events it reads, how to create its tables and
how to apply one event. A :class:`View` is one projection in its own database:
``catch_up`` reads the notifications after its tracking position and applies
them together with the new position in one transaction (exactly once, and safe
against a crash or a second process). ``rebuild`` runs the very same fold from
position 0 into a new file beside the live one and swaps it in; ``verify``
builds a fresh copy up to the live position and compares their contents.
"""

from __future__ import annotations

import hashlib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from domain.events import DomainEvent
from projections.db import Connection, checkpoint_close, connect, read_position

PAGE = 2000


class EventSource(Protocol):
    """Where projections read events from: the application's notification log."""

    def max_position(self) -> int: ...

    def read(
        self, after: int, upto: int, topics: Sequence[type[DomainEvent]], limit: int
    ) -> list[tuple[int, DomainEvent]]: ...


class Projection(ABC):
    """A read model as a fold over the log."""

    name: ClassVar[str]
    schema: ClassVar[int] = 1
    """Bump when the tables or the fold change: the view is then rebuilt."""
    topics: ClassVar[tuple[type[DomainEvent], ...]] = ()
    """The event classes this projection reads (empty: all of them)."""

    @abstractmethod
    def create(self, db: Connection) -> None:
        """Create the tables (idempotently)."""

    @abstractmethod
    def apply(self, db: Connection, event: DomainEvent, position: int) -> None:
        """Fold one event into the tables, inside the caller's transaction."""

    @abstractmethod
    def content_queries(self) -> Sequence[str]:
        """SELECTs (with ORDER BY) whose rows are the whole content of the view."""


@dataclass(frozen=True)
class RunReport:
    events: int
    elapsed_s: float


Progress = Callable[[int, int], None]


class View:
    """One projection kept in its own SQLCipher database."""

    def __init__(self, projection: Projection, path: Path, key: bytes):
        self.projection = projection
        self.path = path
        self._key = key
        self._db: Connection | None = None

    @property
    def db(self) -> Connection:
        if self._db is None:
            self._db = self._open(self.path)
            tracked = read_position(self._db, self.projection.name)
            if tracked is not None and tracked[1] != self.projection.schema:
                self._db.close()
                self._db = None
                _remove_db(self.path)
                return self.db
        return self._db

    def _open(self, path: Path, *, bulk: bool = False) -> Connection:
        db = connect(path, self._key, bulk=bulk)
        self.projection.create(db)
        return db

    @property
    def position(self) -> int:
        tracked = read_position(self.db, self.projection.name)
        return 0 if tracked is None else tracked[0]

    def close(self) -> None:
        if self._db is not None:
            checkpoint_close(self._db)
            self._db = None

    def catch_up(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        return _fold(self.db, self.projection, source, source.max_position(), progress)

    def rebuild(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        """Build from scratch beside the live view, then swap it in."""
        fresh = self.path.with_name(self.path.name + ".rebuild")
        report, db = self._build(fresh, source, source.max_position(), progress)
        db.execute("PRAGMA journal_mode=WAL")
        db.close()
        self.close()
        _remove_db(self.path)
        os.replace(fresh, self.path)
        return report

    def verify(self, source: EventSource) -> bool:
        """Is the live view equal to a fresh fold of the log up to its position?"""
        self.catch_up(source)
        fresh = self.path.with_name(self.path.name + ".verify")
        _, db = self._build(fresh, source, self.position, None)
        try:
            return _digest(db, self.projection) == _digest(self.db, self.projection)
        finally:
            db.close()
            fresh.unlink(missing_ok=True)

    def digest(self) -> str:
        return _digest(self.db, self.projection)

    def _build(
        self, path: Path, source: EventSource, upto: int, progress: Progress | None
    ) -> tuple[RunReport, Connection]:
        path.unlink(missing_ok=True)
        db = self._open(path, bulk=True)
        try:
            return _fold(db, self.projection, source, upto, progress), db
        except BaseException:
            db.close()
            path.unlink(missing_ok=True)
            raise


def _fold(
    db: Connection,
    projection: Projection,
    source: EventSource,
    upto: int,
    progress: Progress | None,
) -> RunReport:
    """Apply the events after the tracked position, a page per transaction."""
    started, applied = time.perf_counter(), 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            tracked = read_position(db, projection.name)
            position = 0 if tracked is None else tracked[0]
            if position >= upto:
                db.execute("ROLLBACK")
                break
            batch = source.read(position, upto, projection.topics, PAGE)
            for event_position, event in batch:
                projection.apply(db, event, event_position)
            new_position = batch[-1][0] if len(batch) == PAGE else upto
            db.execute(
                "INSERT INTO tracking VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE "
                "SET position=excluded.position, schema=excluded.schema",
                (projection.name, new_position, projection.schema),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied += len(batch)
        if progress is not None:
            progress(new_position, upto)
    return RunReport(applied, time.perf_counter() - started)


def _digest(db: Connection, projection: Projection) -> str:
    digest = hashlib.sha256()
    for query in projection.content_queries():
        digest.update(query.encode())
        for row in db.execute(query):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
