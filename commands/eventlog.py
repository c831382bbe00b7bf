"""The store facade: one home's encrypted event log and its views.

:class:`EventLog` is the ``eventsourcing`` Application underneath eventpile's: it
writes events (sealed by our mapper, in one transaction per call), reads streams
and pages of the log, folds aggregate states, and keeps the application's views
caught up. The backend (SQLite or PostgreSQL) is the home's; this module does
not ask which.
"""

from __future__ import annotations

import re
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast

from eventsourcing.application import Application as LibraryApplication
from eventsourcing.persistence import RecordConflictError

from eventpile.commands.recent import Known, RecentWrites
from eventpile.commands.registry import Registry
from eventpile.domain.aggregate import Aggregate, DomainError, fold, required
from eventpile.domain.events import DomainEvent, operation_scope, utcnow
from eventpile.domain.people import PersonForgotten
from eventpile.projections.base import Page, Projection, RunReport, Topics, View, catch_up_together
from eventpile.store.backend import Waiter
from eventpile.store.cipher import RETIRED_KEY, EventCipher
from eventpile.store.errors import StoreError, TamperedData
from eventpile.store.home import Home
from eventpile.store.keys import Keyring, puncture_people
from eventpile.store.mapper import PydanticMapper, RowReader
from eventpile.store.people import PersonKeys, Tree
from eventpile.store.seals import PURPOSE, Head, Seal, Sealer, Sealing, row_hash
from eventpile.store.topics import TOPIC_PURPOSE, PlainTopics, StoredTopics
from eventpile.store.views import ViewDB

A = TypeVar("A", bound=Aggregate)


class Conflict(Exception):
    """Another writer appended to one of the same streams first (the message says which
    records, by kind: "another command changed 3 messages at the same time")."""


def _kind_of(registry: Registry, event_type: type[DomainEvent]) -> str:
    """What a user calls the record an event changes: its aggregate's name, in words."""
    try:
        name = registry.aggregate_of(event_type).__name__
    except DomainError:
        return "record"
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _unbroken(events: Iterable[DomainEvent]) -> Iterator[DomainEvent]:
    """A stream's events, each the version after the last (:class:`TamperedData`, one
    line, at a gap: a row deleted from the log; its deleted last events show in
    ``verify`` only)."""
    version = 0
    for event in events:
        if event.originator_version != version + 1:
            raise TamperedData(
                f"the log has lost events of record {event.originator_id}: versions "
                f"{version + 1:,} to {event.originator_version - 1:,} are missing "
                "(`eventpile verify` says where)"
            )
        version = event.originator_version
        yield event


def _stop_at(problems: list[str]) -> None:
    """Refuse to read on (:class:`TamperedData`, one line) at the first of ``problems``."""
    if problems:
        raise TamperedData(f"{problems[0]}; nothing was read past it (`eventpile verify` says all)")


def registry_of(app_class: type[EventLog]) -> Registry:
    """The registry of an application class, made from its class attributes once."""
    found = app_class.__dict__.get("_registry")
    if found is None:
        found = app_class._registry = Registry(app_class)
    return found


class EventLog(LibraryApplication[uuid.UUID]):
    """One home's event store and views, for the application class's registry.

    Give each thread its own instance: its view connections and the events it keeps
    in memory for catching up are not guarded for use by several threads at once.
    (Any number of instances and processes may share one home.)
    """

    name = "eventpile"
    _deferring = False
    _head_saved: Seal | None = None
    _registry: ClassVar[Registry | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every application shares one store, whose tables the name prefixes.
        if "name" not in cls.__dict__:
            cls.name = EventLog.name

    def __init__(
        self,
        home: Home,
        keyring: Keyring,
        env: dict[str, str] | None = None,
        *,
        projections: Iterable[type[Projection]] = (),
        clock: Callable[[], datetime] = utcnow,
    ):
        self.home = home
        self.keyring = keyring
        self.clock = clock
        self.registry = registry_of(type(self))
        backend = home.backend()
        backend.check_log()
        super().__init__({**backend.settings(), **(env or {})})
        self.head = Head(home.head_file)
        recorder = cast(Sealing, self.recorder)
        recorder.sealer, recorder.head = Sealer(keyring.purpose_key(PURPOSE)), self.head
        store = backend.view_store(keyring)
        self._backend = backend
        self._waiter: Waiter | None = None
        self.written = RecentWrites(self)
        wanted = dict.fromkeys((*self.registry.projections, *projections))
        self.views = {p.name: View(p(), store) for p in wanted}
        self._heeded = 0
        """The position of the last forgetting heeded."""
        self._heeded_upto = 0
        """Every forgetting up to this position was heeded (the log's end then)."""
        self._checked = (0, 0)
        """The log's positions from here (after the first) to there were found whole by
        this process."""
        self.heed_forgettings()

    def construct_mapper(self) -> PydanticMapper:
        self.people = PersonKeys(self.keyring)
        # a home made before people had keys: its tree derives from a data key, which a
        # rekey destroys; it seals nothing per person (and forgets nobody)
        sealing = self.people if self.keyring.people_key is not None else None
        topics = StoredTopics(self.registry, self.keyring.purpose_key(TOPIC_PURPOSE))
        return PydanticMapper(topics, EventCipher(self.keyring), sealing)

    def heed_forgettings(self) -> int:
        """Stop deriving the keys of the people forgotten since this process last looked
        (by another process, another machine on the same database, or a peer whose
        forgetting a sync brought): in this process, and in the home's key file (if it
        cannot be written, this process still forgets them, and tries again next time).
        The log's end, read with them (see :meth:`max_position`)."""
        rows, end = cast(RowReader, self.recorder).forgettings(self._heeded)
        if not rows:
            self._heeded_upto = end
            return end
        decode = cast(PydanticMapper, self.mapper).decode
        ids = [i for row in rows for i in cast(PersonForgotten, decode(*row[1:])).ids()]
        self.people.forget(ids)
        self.written.clear()  # what it holds of them was opened before
        if self.keyring.people_key is not None:
            on_file = Tree.from_bytes(self.keyring.people_tree())
            if any(on_file.key(i) is not None for i in ids):
                try:
                    self.forget_keys(ids)
                except OSError as error:
                    warnings.warn(
                        f"the key file still derives a person forgotten: {error}", stacklevel=2
                    )
                    return end
        self._heeded, self._heeded_upto = rows[-1][0], end
        return end

    def forget_keys(self, ids: Collection[int]) -> None:
        """Destroy the people's keys of ``ids``: in the key file (see
        :func:`~eventpile.store.keys.puncture_people`), and in this process."""

        def punctured(tree: bytes) -> bytes:
            return Tree.from_bytes(tree).punctured(ids).to_bytes()

        self.keyring = puncture_people(self.home.key_file, self.keyring, punctured)
        self.people.forget(ids)
        self.written.clear()  # what it holds of them opened before

    def scope(self, operation_id: uuid.UUID) -> AbstractContextManager[None]:
        """Events made inside belong to ``operation_id``, come from this installation and
        are stamped with this application's clock."""
        return operation_scope(operation_id, self.keyring.installation_id, self.clock)

    def close(self) -> None:
        """Close the views (each: what one raises, the first, is raised once all are
        closed), the waiter and the log."""
        self.save_head()
        failed: BaseException | None = None
        for view in self.views.values():
            try:
                view.close()
            except Exception as error:  # a view's page that failed to commit aside
                failed = failed or error
        if self._waiter is not None:
            self._waiter.close()
        super().close()
        if failed is not None:
            raise failed

    # the event store ------------------------------------------------------

    def append(
        self, events: Sequence[DomainEvent], *, purge: Mapping[uuid.UUID, int] | None = None
    ) -> list[int]:
        """Write events in one transaction (which deletes the streams of ``purge``, each
        ending at the version given, see :mod:`eventpile.commands.retention`); their
        notification ids (log positions). :class:`Conflict` if a writer came first."""
        stored = [self.mapper.to_stored_event(e) for e in events]
        try:
            if purge:
                ids = cast(RowReader, self.recorder).purge_streams(stored, purge)
            else:
                ids = self.recorder.insert_events(stored)
        except RecordConflictError as e:
            if RETIRED_KEY in str(e):
                raise StoreError(
                    "the home's data key was replaced (`eventpile rekey` ran since this "
                    "process read its keys): nothing was written; run the command again "
                    "(another machine or installation needs the new keys.json)"
                ) from None
            raise Conflict(self._overtaken(events)) from None
        positions = list(ids or ())
        # the hashes of the rows, from their seal (where there is none, the events are
        # decrypted again where another writer's lie among them)
        seal = cast(Sealing, self.recorder).written_seal
        hashes = seal.hashes() if seal is not None else {}
        self.written.add(positions, events, [hashes.get(p, b"") for p in positions])
        return positions

    def _overtaken(self, events: Sequence[DomainEvent]) -> str:
        """Which records ``events`` change another writer changed first, in words."""
        tried: dict[uuid.UUID, DomainEvent] = {}
        for event in events:
            tried.setdefault(event.originator_id, event)
        ends = cast(RowReader, self.recorder).stream_ends(tried)
        moved = Counter(
            _kind_of(self.registry, type(event))
            for stream, event in tried.items()
            if ends.get(stream, 0) >= event.originator_version
        )
        if not moved:
            return "another command wrote the same records at the same time"
        names = [f"{n:,} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(moved.items())]
        return f"another command changed {' and '.join(names)} at the same time"

    def check_log(self) -> list[str] | None:
        """What is wrong with the log: rows deleted, changed, moved or added, seals
        missing, the log cut (see :mod:`eventpile.store.seals`); ``[]`` if it is whole;
        None if it has no seals yet (written before them: its next write seals it)."""
        head = self.head.load()  # first: what it names is in any state of the log after
        end = self.max_position()  # and this: the check's snapshot holds every row up to it
        problems, last, macs = cast(Sealing, self.recorder).check()
        if last is None and head is None:
            return None
        problems += self.head.problems(head, last, macs)
        if not problems:
            self._checked = (0, end)
        return problems

    def stream(self, aggregate_id: uuid.UUID) -> Iterator[DomainEvent]:
        """The events of one aggregate, oldest first."""
        return _unbroken(cast(Iterator[DomainEvent], self.events.get(aggregate_id)))

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        return fold(cls, self.stream(aggregate_id))

    def require(self, cls: type[A], aggregate_id: uuid.UUID, what: str = "") -> A:
        """The state of an aggregate that must exist (refused with "there is no …" if not)."""
        return required(self.load(cls, aggregate_id), cls, aggregate_id, what)

    def load_many(self, cls: type[A], ids: Collection[uuid.UUID]) -> dict[uuid.UUID, A | None]:
        """The states of several aggregates, read in one query, not one each."""
        streams: dict[uuid.UUID, list[DomainEvent]] = {aggregate_id: [] for aggregate_id in ids}
        to_event = cast(PydanticMapper, self.mapper).to_domain_event
        for stored in cast(RowReader, self.recorder).select_streams(ids):
            streams[uuid.UUID(str(stored.originator_id))].append(to_event(stored))
        return {
            aggregate_id: fold(cls, _unbroken(events)) for aggregate_id, events in streams.items()
        }

    def max_position(self) -> int:
        """The log's end, the people forgotten up to there heeded first (one query: the
        catch-up of a view, which reads the end before the events, heeds them with it)."""
        return self.heed_forgettings()

    @property
    def topics(self) -> StoredTopics:
        """What the log's rows hold for the types of events (see :class:`StoredTopics`)."""
        return cast(PydanticMapper, self.mapper).topics

    def wait_for_events(self, after: int, timeout: float) -> int:
        """The log's end once it passes ``after`` (another process wrote), or after
        ``timeout`` s (woken by the backend: a notification, or a look every so often)."""
        deadline = time.monotonic() + timeout
        if self._waiter is None:
            self._waiter = self._backend.waiter()
        while True:
            position = self.max_position()
            remaining = deadline - time.monotonic()
            if position > after or remaining <= 0:
                return position
            self._waiter.wait(remaining)

    def read(
        self,
        after: int,
        upto: int,
        topics: Topics,
        limit: int,
        known: Mapping[int, Known] | None = None,
    ) -> Page:
        """The notification log from ``after`` to ``upto``: every event (another
        application's as a :class:`ForeignEvent`), or only those of ``topics``; one that
        ``known`` holds (this process wrote it) is taken from there, not decrypted, if its
        row is still the one written (the same hash). People forgotten up to ``upto`` are
        heeded first (a rebuild reads here), if this process has not looked that far."""
        if upto > self._heeded_upto:
            self.heed_forgettings()
        self._check_crossing(after, upto)
        plain = after < cast(PlainTopics, self.recorder).plain_topics_upto()
        stored = self.topics.matching(topics, plain=plain)
        rows = cast(RowReader, self.recorder).select_rows(after, upto, stored, limit)
        decode = cast(PydanticMapper, self.mapper).decode
        known = known or {}
        return [
            (row[0], kept[1])
            if (kept := known.get(row[0])) is not None and kept[0] == row_hash(*row)
            else (row[0], decode(*row[1:], foreign=True))
            for row in rows
        ]

    def _check_crossing(self, after: int, upto: int) -> None:
        """Stop (:class:`TamperedData`, one line) at damage among the positions a read
        crosses that this process has not found whole yet: a row deleted there, or one no
        seal holds; or at the log cut before this home's head (see
        :meth:`Sealing.check_range`; a row changed there fails to decrypt as it is read)."""
        low, high = self._checked
        start = max(after, high) if low <= after <= high else after
        recorder = cast(Sealing, self.recorder)
        if start >= upto:  # found whole already: the head alone
            _stop_at(recorder.check_head())
            return
        _stop_at(recorder.check_range(start, upto))
        self._checked = (low, upto) if start == high else (start, upto)

    def all_events(self) -> Iterable[tuple[int, DomainEvent]]:
        position, upto = 0, self.max_position()
        while position < upto:
            page = self.read(position, upto, (), 1000)
            yield from page
            position = page[-1][0]

    # the views ------------------------------------------------------------

    def view(self, name: str) -> View:
        return self.views[name]

    def current(self, name: str) -> ViewDB:
        """The database of view ``name``, caught up with the log first (the people
        forgotten up to its end heeded, as :meth:`max_position` does)."""
        view = self.views[name]
        view.catch_up(self.written)
        return view.db

    def catch_up(self) -> dict[str, RunReport]:
        """Bring every view up to date (nothing within :meth:`deferring_catch_up`)."""
        if self._deferring:
            return {}
        _stop_at(cast(Sealing, self.recorder).check_head())
        reports = catch_up_together(list(self.views.values()), self.written)
        self.written.clear()
        self.save_head()
        return reports

    def save_head(self) -> None:
        """Keep the last seal this process wrote as the home's head (once a command's
        writes are done: each catch-up, and on closing)."""
        seal = cast(Sealing, self.recorder).written_seal
        if seal is None or seal == self._head_saved:
            return
        try:
            self.head.save(seal)
        except OSError as error:  # an older head still anchors the log up to there
            warnings.warn(f"the log's head was not saved: {error}", stacklevel=2)
            return
        self._head_saved = seal

    @contextmanager
    def deferring_catch_up(self) -> Iterator[None]:
        """Within, :meth:`catch_up` does nothing, so commands return before the views
        have their writes: for a worker, which catches every view up once per batch of
        operations instead of twice per operation (a handler still catches up a view it
        reads). The first catch-up after it brings every view up to date."""
        self._deferring, deferring = True, self._deferring
        try:
            yield
        finally:
            self._deferring = deferring
