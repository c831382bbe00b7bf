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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import ClassVar, Protocol

from eventpile.domain.events import DomainEvent, kind
from eventpile.domain.people import PersonForgotten
from eventpile.store.errors import DamagedView, StoreError
from eventpile.store.views import ViewBusy, ViewDB, ViewStore, read_position, write_position

PAGE = 2000
Page = list[tuple[int, DomainEvent]]
Topics = Sequence[type[DomainEvent]]


class EventSource(Protocol):
    """Where projections read events from: the application's notification log."""

    def max_position(self) -> int: ...

    def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page: ...


class Projection(ABC):
    """A read model as a fold over the log."""

    name: ClassVar[str]
    schema: ClassVar[int] = 1
    """Bump when the tables or the fold change: the view is then rebuilt."""
    topics: ClassVar[tuple[type[DomainEvent], ...]] = ()
    """The event classes this projection reads (empty: all of them)."""
    personal: ClassVar[bool] = False
    """Does it hold values ``Of`` a person? Then it is made anew from the log when one is
    forgotten (:class:`~eventpile.domain.people.PersonForgotten`), so that it holds none
    of theirs: their values read forgotten from the log from then on."""

    @classmethod
    def reads(cls) -> tuple[type[DomainEvent], ...]:
        """The event classes read from the log for it (empty: all of them)."""
        if cls.personal and cls.topics:
            return (*cls.topics, PersonForgotten)
        return cls.topics

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

    def problems(self, db: ViewDB) -> list[str]:
        """What the view holds that the rules of the domain say must not be (a fold of a
        log written by an earlier version, say), in words a person acts on. ``verify``
        reports them. None by default."""
        return []


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
        self.remade: str | None = None
        """Why the live file could not be opened, if it was made anew from the log here."""

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def db(self) -> ViewDB:
        if self._db is not None and self._db.replaced():  # rebuilt by another process
            self.close()
        if self._db is None:
            try:
                db = self._open(self.store.open(self.name))
            except DamagedView as damaged:  # the key opened the log: the view is
                self.remade = str(damaged)  # damaged, and made anew from the log
                self.store.drop(self.name)
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
        return _position(self.db, self.projection)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def catch_up(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        return catch_up_together([self], source, progress)[self.name]

    def rebuild(self, source: EventSource, progress: Progress | None = None) -> RunReport:
        """Build from scratch beside the live view, then swap it in."""
        return rebuild_together([self], source, progress)[self.name]

    def verify(self, source: EventSource) -> bool:
        """Is the live view equal to a fresh fold of the log up to its position? Not if
        its file was found damaged (and made anew)."""
        self.catch_up(source)
        if self.remade is not None:
            return False
        fresh = self._open(self.store.open_fresh(self.name))
        try:
            _fold([(fresh, self.projection)], source, self.position, None)
            return _digest(fresh, self.projection) == self.digest()
        finally:
            self.store.discard(fresh)

    def digest(self) -> str:
        """A hash of the view's whole content."""
        return _digest(self.db, self.projection)


def catch_up_together(
    views: Sequence[View], source: EventSource, progress: Progress | None = None
) -> dict[str, RunReport]:
    """``catch_up`` of several views, each page of the log read and decoded once for all.

    A personal view that reaches a person forgotten is made anew from the log instead
    (it stops before that event, so a crash meanwhile leaves it to do again)."""
    targets = [(view.db, view.projection) for view in views]
    remake: set[int] = set()
    reports = _fold(targets, source, None, progress, remake)
    found = {view.name: report for view, report in zip(views, reports, strict=True)}
    if remake:
        found.update(rebuild_together([views[n] for n in sorted(remake)], source))
    return found


def rebuild_together(
    views: Sequence[View], source: EventSource, progress: Progress | None = None
) -> dict[str, RunReport]:
    """``rebuild`` of several views, each page of the log read and decoded once for all."""
    _log_reaches(source, {view.name: view.position for view in views})
    fresh: list[ViewDB] = []
    try:
        for view in views:
            fresh.append(view._open(view.store.open_fresh(view.name)))
        targets = [(db, view.projection) for db, view in zip(fresh, views, strict=True)]
        reports = _fold(targets, source, source.max_position(), progress)
    except BaseException:
        for db, view in zip(fresh, views, strict=False):
            view.store.discard(db)
        raise
    for db, view in zip(fresh, views, strict=True):
        with suppress(Exception):  # a page of the live file that failed to commit: replaced
            view.close()
        view.store.swap(db, view.name)
        view.remade = None  # whatever the live file was, it is a fresh fold now
    return {view.name: report for view, report in zip(views, reports, strict=True)}


def _fold(
    targets: Sequence[tuple[ViewDB, Projection]],
    source: EventSource,
    upto: int | None,
    progress: Progress | None,
    remake: set[int] | None = None,
) -> list[RunReport]:
    """Apply the events after each view's tracked position, up to ``upto`` (None: the
    end of the log): a page of the log at a time, read once, then in one transaction
    per view with its new position.

    Positions are read once and then known from the writes; each transaction reads
    its view's position again (another process may have moved it) and trusts that.
    A view another process is writing is left for last, and waited for then: two
    workers catching up the same views at once each fold some of them, instead of
    one waiting while the other folds them all.
    With ``remake``, a personal view stops before a person forgotten, and its index
    joins ``remake`` (a fold from scratch passes none: what it reads is forgotten already).
    """
    started, applied = time.perf_counter(), [0] * len(targets)
    positions = [_position(db, projection) for db, projection in targets]
    if upto is None:
        names = [projection.name for _, projection in targets]
        upto = _log_reaches(source, dict(zip(names, positions, strict=True)))
    furthest = 0

    def report(end: int, upto: int) -> None:
        """``progress``, of the furthest page read (a second round reads from before it)."""
        nonlocal furthest
        if progress is not None and end > furthest:
            furthest = end
            progress(end, upto)

    with gc_paused():
        for wait in (False, True):
            busy = _fold_pages(targets, source, upto, report, remake, positions, applied, wait)
            if not busy:
                break
            for n in busy:  # where the process that was writing it left it
                positions[n] = max(positions[n], _position(*targets[n]))
    elapsed = time.perf_counter() - started
    return [RunReport(count, elapsed) for count in applied]


def _fold_pages(
    targets: Sequence[tuple[ViewDB, Projection]],
    source: EventSource,
    upto: int,
    progress: Progress,
    remake: set[int] | None,
    positions: list[int],
    applied: list[int],
    wait: bool,
) -> set[int]:
    """One round of :func:`_fold`: without ``wait``, the views another process is
    writing are left as they are, and returned."""
    busy: set[int] = set()
    while behind := [n for n, at in enumerate(positions) if at < upto and n not in busy]:
        start = min(positions[n] for n in behind)
        wanted = [targets[n][1].reads() for n in behind]
        topics = () if () in wanted else tuple(dict.fromkeys(t for ts in wanted for t in ts))
        batch = source.read(start, upto, topics, PAGE)
        end = batch[-1][0] if len(batch) == PAGE else upto
        for n in behind:
            db, projection = targets[n]
            forgot = None if remake is None else _forgotten_at(projection, batch, positions[n])
            try:
                if forgot is not None and remake is not None:
                    cut = [(p, e) for p, e in batch if p < forgot]
                    _, applied_now = _apply(db, projection, cut, start, forgot - 1, wait)
                    applied[n] += applied_now
                    positions[n] = upto
                    remake.add(n)
                    continue
                positions[n], count = _apply(db, projection, batch, start, end, wait)
            except ViewBusy:
                busy.add(n)
                continue
            applied[n] += count
        progress(end, upto)
    return busy


def _forgotten_at(projection: Projection, batch: Page, position: int) -> int | None:
    """The position of the first person forgotten in ``batch`` after ``position``, if the
    projection is personal."""
    if not projection.personal:
        return None
    return next((p for p, e in batch if p > position and isinstance(e, PersonForgotten)), None)


def _apply(
    db: ViewDB, projection: Projection, batch: Page, start: int, end: int, wait: bool
) -> tuple[int, int]:
    """Apply the events of ``batch`` (the log from ``start`` to ``end``) after the view's
    position, and its new position, in one transaction: ``(its position, events applied)``
    (without ``wait``, :class:`ViewBusy` if another process is writing the view)."""
    with db.transaction(wait):
        position = _position(db, projection)
        if not start <= position < end:
            return position, 0
        events = [
            (p, e)
            for p, e in batch
            if p > position and (not projection.topics or kind(e) in projection.topics)
        ]
        projection.apply_page(db, events)
        write_position(db, projection.name, end, projection.schema)
    return end, len(events)


def _log_reaches(source: EventSource, positions: dict[str, int]) -> int:
    """The end of the log, read after the views' ``positions``: a view past it applied
    events the log no longer has (:class:`StoreError`; it would not apply new ones)."""
    end = source.max_position()
    for name, position in positions.items():
        if position > end:
            raise StoreError(
                f"the view {name} holds the log up to position {position:,} but the event "
                f"log ends at {end:,}: the log was replaced or cut. Restore it; to keep this "
                "log instead, delete the views (they are made anew from it)"
            )
    return end


def _position(db: ViewDB, projection: Projection) -> int:
    tracked = read_position(db, projection.name)
    return 0 if tracked is None else tracked[0]


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
