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

import gc
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Protocol

from domain.events import DomainEvent
from projections.db import ViewDB, ViewStore, read_position, write_position

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
    def create(self, db: ViewDB) -> None:
        """Create the tables (idempotently)."""

    @abstractmethod
    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        """Fold one event into the tables, inside the caller's transaction."""

    def apply_page(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """Fold a page of ``(position, event)``, in order, in one transaction."""
        for position, event in events:
            self.apply(db, event, position)

    @abstractmethod
    def content_queries(self) -> Sequence[str]:
        """SELECTs (with ORDER BY) whose rows are the whole content of the view."""


@dataclass(frozen=True)
class RunReport:
    events: int
    elapsed_s: float


Progress = Callable[[int, int], None]


class View:
    """One projection and its database in a :class:`ViewStore`."""

    def __init__(self, projection: Projection, store: ViewStore):
        self.projection = projection
        self.store = store
        self._db: ViewDB | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def db(self) -> ViewDB:
        if self._db is None:
            db = self._open(self.store.open(self.name))
            tracked = read_position(db, self.name)
            if tracked is not None and tracked[1] != self.projection.schema:
                db.close()
                self.store.drop(self.name)
                db = self._open(self.store.open(self.name))
            self._db = db
        return self._db

    def _open(self, db: ViewDB) -> ViewDB:
        self.projection.create(db)
        return db

    @property
    def position(self) -> int:
        tracked = read_position(self.db, self.name)
        return 0 if tracked is None else tracked[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def catch_up(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        return _fold(self.db, self.projection, source, source.max_position(), progress)

    def rebuild(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        """Build from scratch beside the live view, then swap it in."""
        fresh = self._open(self.store.open_fresh(self.name, "rebuild"))
        try:
            report = _fold(fresh, self.projection, source, source.max_position(), progress)
        except BaseException:
            self.store.discard(fresh, self.name, "rebuild")
            raise
        self.close()
        self.store.swap(fresh, self.name, "rebuild")
        return report

    def verify(self, source: EventSource) -> bool:
        """Is the live view equal to a fresh fold of the log up to its position?"""
        self.catch_up(source)
        fresh = self._open(self.store.open_fresh(self.name, "verify"))
        try:
            _fold(fresh, self.projection, source, self.position, None)
            return _digest(fresh, self.projection) == self.digest()
        finally:
            self.store.discard(fresh, self.name, "verify")

    def digest(self) -> str:
        """A hash of the view's whole content."""
        return _digest(self.db, self.projection)


def _fold(
    db: ViewDB,
    projection: Projection,
    source: EventSource,
    upto: int,
    progress: Progress | None,
) -> RunReport:
    """Apply the events after the tracked position, a page per transaction."""
    started, applied = time.perf_counter(), 0
    while True:
        with gc_paused(), db.transaction():
            tracked = read_position(db, projection.name)
            position = 0 if tracked is None else tracked[0]
            if position >= upto:
                break
            batch = source.read(position, upto, projection.topics, PAGE)
            projection.apply_page(db, batch)
            new_position = batch[-1][0] if len(batch) == PAGE else upto
            write_position(db, projection.name, new_position, projection.schema)
        applied += len(batch)
        if progress is not None:
            progress(new_position, upto)
    return RunReport(applied, time.perf_counter() - started)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (reference counting still frees memory).

    Bulk work makes many acyclic objects (events); the collector scanning them and
    everything else long-lived costs a quarter of decoding a page of events.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _digest(db: ViewDB, projection: Projection) -> str:
    digest = hashlib.sha256()
    for query in projection.content_queries():
        digest.update(query.encode())
        for row in db.execute(query):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()
