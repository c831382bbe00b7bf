"""Sync: installations of one user exchange their events through a folder, or over
HTTP with one that serves its own (:mod:`eventpile.commands.serve`).

Each installation keeps its own log; a sync sends what this one's log has that its
folder does not yet (see :mod:`eventpile.store.segments`), and takes what the
others' folders have that this log does not. An event is the same event everywhere:
it keeps its id, time, origin and operation, and its row's state as sealed (the
installations share the data keys), checked to open before it is stored. Each
installation takes each event once: it keeps, beside the log, where every event it
received came from (``origin``, ``seq``), so an event met again (a segment read
twice, an event relayed by two peers) is a duplicate.

An event received for a stream that has events written here meanwhile goes at the
end of the stream, sealed anew for that row, and remembers the version its origin
wrote it at (:attr:`~eventpile.domain.events.DomainEvent.stamp`): events written at
the same time on two installations apply in either order, so an aggregate's
decisions that pick a winner compare stamps. Operations stay where they run: only
the installation that requested an operation runs it (or, for the second stage of
an answered question, the one that ran the first).
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, cast

from eventsourcing.persistence import IntegrityError, StoredEvent

from eventpile.commands.base import Command, Outcome, Retryable, handles
from eventpile.commands.context import Context
from eventpile.commands.eventlog import EventLog
from eventpile.commands.operations import RetryPolicy
from eventpile.domain.events import Private
from eventpile.domain.operation import Operation, OperationsPurged
from eventpile.domain.people import PersonForgotten
from eventpile.projections.queue import operation_events
from eventpile.store.cipher import COMPRESSED, EventCipher
from eventpile.store.errors import TamperedData
from eventpile.store.mapper import ExportRow, PydanticMapper, RowReader
from eventpile.store.people import born_at
from eventpile.store.remote import RemoteFiles, Unreachable
from eventpile.store.segments import Folder, FolderError, Head, LocalFiles, Record, Segment

SEGMENT_EVENTS = 5000
"""Events per segment file (and per transaction that applies one)."""
ATTEMPTS = 5
"""Tries at applying a segment while this installation's own commands write the same streams."""


class Sync(Command):
    """Exchange events with the other installations that use a folder, or with the
    installation at a URL (``eventpile serve --sync``): one that does not answer is
    tried again later (the queue's worker does)."""

    undoable = False
    retry: ClassVar[RetryPolicy | None] = RetryPolicy(max_attempts=10, base_s=30.0)
    folder: Annotated[str, Private]
    """A folder's absolute path, or an ``http://`` or ``https://`` URL."""

    def describe(self) -> str:
        return "Sync with other installations"


@dataclass
class Report:
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    peers: int = 0
    sent_upto: int = 0
    """The position in this log up to which the folder holds this log's events (what a
    purge keeps after it, see :mod:`eventpile.commands.retention`)."""
    waiting: dict[str, str] = field(default_factory=dict)
    """By peer (short id), why some of its events could not be taken yet."""
    unknown: dict[str, int] = field(default_factory=dict)
    """By type name, the events received of types this version does not know."""

    def result(self) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "sent": self.sent,
            "received": self.received,
            "duplicates": self.duplicates,
            "peers": self.peers,
            "sent_upto": self.sent_upto,
        }
        return {**counts, "unknown": self.unknown} if self.unknown else counts


def said(operation: Operation) -> tuple[dict[str, Any], str]:
    """What a command line prints of a sync: its JSON document and its line for people
    (for one left retrying, why and when it is tried again)."""
    data = {"operation_id": operation.id.hex, "status": operation.status, **operation.result}
    line = operation.message
    if operation.retry_at is not None:  # the other installation did not answer
        data["error"], data["retry_at"] = operation.error, operation.retry_at.isoformat()
        line = f"{operation.error}: tried again at {operation.retry_at:%H:%M:%S} UTC by the worker"
    return data, line


def is_url(where: str) -> bool:
    return where.startswith(("http://", "https://"))


@handles(Sync)
def sync(command: Sync, ctx: Context) -> Outcome:
    try:
        report = Exchange(ctx.app, command.folder, ctx.progress).run()
    except Unreachable as error:
        raise Retryable(str(error)) from error
    message = (
        f"Synced with {report.peers} other installation{'s' * (report.peers != 1)}: "
        f"{report.sent:,} events sent, {report.received:,} received"
    )
    if report.duplicates:
        message += f" ({report.duplicates:,} already here)"
    for peer, why in sorted(report.waiting.items()):
        message += f"; {peer}: {why}"
    if report.unknown:
        kinds = ", ".join(f"{n:,} {name}" for name, n in sorted(report.unknown.items()))
        message += (
            f"; kept {kinds}: events of types this version does not know (written by a "
            "newer one), not applied until an upgrade and `rebuild`"
        )
    return Outcome(message, report.result())


class Exchange:
    """One sync of an application's log with a folder."""

    def __init__(self, app: EventLog, where: str, progress: Any = None):
        self.app = app
        self.origin = app.keyring.installation_id
        self.remote = (
            RemoteFiles(where, app.keyring.purpose_key("sync over http"), self.origin)
            if is_url(where)
            else None
        )
        files = self.remote or LocalFiles(Path(where).expanduser())
        self.folder = Folder(files, app.keyring.purpose_key("sync"), self.origin)
        self.rows = cast(RowReader, app.recorder)
        self.cipher = cast(EventCipher, cast(PydanticMapper, app.mapper).event_cipher)
        self.topics = app.topics
        self.purges = frozenset(self.topics.matching([OperationsPurged]))
        self.operations = frozenset(self.topics.matching(operation_events())) - self.purges
        """The topics of the events of operations' own streams."""
        self.progress = progress or (lambda done, total=None, message="": None)
        self.report = Report()
        self.heads: dict[str, Head | None] = {}
        """The other installations' heads, as this sync read them (by hex id)."""

    def run(self) -> Report:
        if self.remote is not None:
            self.remote.run()  # the server's latest events into its folder
        self.receive()
        if self.remote is None:  # (a server keeps its own key file: a home's)
            self.folder.publish_keys(self.app.home.key_file, self.app.keyring)
        self.send()
        if self.remote is not None:
            self.remote.run()  # and ours into its log
        return self.report

    # receiving ------------------------------------------------------------

    def known(self) -> dict[str, int]:
        """By origin, the last of its events this log has (its own: the log's end)."""
        return {**self.rows.received_upto(), self.origin.hex: self.app.max_position()}

    def receive(self) -> None:
        """Apply every peer's segments that this log has not, each once its
        ``requires`` are here (a peer's events may follow a third one's)."""
        known = self.known()
        self.read_before = dict(known)
        todo: dict[uuid.UUID, list[tuple[int, int]]] = {}
        for peer in self.folder.origins():
            if peer == self.origin:
                continue
            self.report.peers += 1
            head = self.heads[peer.hex] = self.folder.head(peer)
            if head is not None and head.news_for(known):
                todo[peer] = self.folder.segments(peer, known.get(peer.hex, 0))
                reached = todo[peer][-1][1] if todo[peer] else known.get(peer.hex, 0)
                if reached < head.end:
                    self.report.waiting[peer.hex[:8]] = (
                        f"its events up to {head.end} are not all in the folder yet"
                    )
        moved = True
        while moved:
            moved = False
            for peer, ranges in todo.items():
                while ranges:
                    segment = self.folder.read(peer, *ranges[0])
                    missing = {o for o, s in segment.requires.items() if known.get(o, 0) < s}
                    if missing:
                        self.report.waiting[peer.hex[:8]] = (
                            "its events follow events of "
                            f"{', '.join(sorted(o[:8] for o in missing))} not here yet"
                        )
                        break
                    self.apply(segment, known)
                    self.report.waiting.pop(peer.hex[:8], None)
                    ranges.pop(0)
                    moved = True
        self.app.catch_up()

    def apply(self, segment: Segment, known: dict[str, int]) -> None:
        """Append the segment's events this log does not have, in one transaction."""
        for attempt in range(ATTEMPTS):
            fresh = [r for r in segment.records if r.seq > known.get(r.origin, 0)]
            ends = self.rows.stream_ends({r.originator_id for r in fresh})
            stored, received = [], []
            for r in fresh:
                version = ends.get(r.originator_id, 0) + 1
                ends[r.originator_id] = version
                stored.append(self.reseal(r, version))
                received.append((r.origin, r.seq))
            self.forget(fresh)
            try:
                if stored:
                    self.rows.insert_events(stored, received=received)
            except IntegrityError:  # a command here wrote one of these streams meanwhile
                if attempt == ATTEMPTS - 1:
                    raise
                known.update(self.known())
                continue
            self.report.received += len(stored)
            for r in fresh:
                if not self.topics.knows(r.topic):
                    name = self.topics.reveal(r.topic).rpartition(":")[2]
                    self.report.unknown[name] = self.report.unknown.get(name, 0) + 1
            self.report.duplicates += sum(
                1  # not counted: the writer's own events of a segment read again
                for r in segment.records
                if r.origin != segment.origin.hex or r.seq > self.read_before.get(r.origin, 0)
            ) - len(stored)
            for origin, seq in received:
                known[origin] = max(known.get(origin, 0), seq)
            self.progress(self.report.received, None, "receiving")
            return

    def forget(self, records: list[Record]) -> None:
        """Destroy the keys of the people that the records forget, before they are
        stored: what a peer forgot is forgotten here as it arrives."""
        forgotten = self.topics.matching([PersonForgotten])
        for r in records:
            if r.topic in forgotten:
                event = self.app.mapper.to_domain_event(
                    StoredEvent(r.originator_id, r.version, r.topic, r.state)
                )
                self.app.forget_keys(cast(PersonForgotten, event).ids())

    def reseal(self, record: Record, version: int) -> StoredEvent:
        """The record's event at ``version`` of its stream here: its state as it came (it
        is sealed for that row) or, placed at another version than its writer's, sealed
        anew for its row, keeping the version its origin wrote it at as ``born``; or
        under its topic hidden, as every event is written here, if an older version's
        log holds it in plaintext. Either way it is opened first: what does not open with
        this home's keys is refused."""
        state = record.state
        try:
            flags, class_version, plaintext = self.cipher.open(
                state, record.originator_id, record.version, record.topic
            )
        except TamperedData as error:
            raise FolderError(
                f"sync folder {self.folder.files.where}: an event of {record.origin[:8]} "
                f"does not open with this home's keys ({error})"
            ) from None
        topic = self.topics.hidden(record.topic)
        if version != record.version:
            compressed = flags & COMPRESSED
            plaintext = born_at(
                zlib.decompress(plaintext) if compressed else plaintext, record.version
            )
            if compressed:
                plaintext = zlib.compress(plaintext, 1)
        if version != record.version or topic != record.topic:
            state = self.cipher.seal(
                plaintext, record.originator_id, version, topic, flags, class_version
            )
        return StoredEvent(
            originator_id=record.originator_id,
            originator_version=version,
            topic=topic,
            state=state,
        )

    # sending --------------------------------------------------------------

    def send(self) -> None:
        """Write a segment of what this log has past this installation's head (a sync's
        own record stays here: each installation has its own history of syncs)."""
        head = self.folder.head(self.origin)
        scanned, end = (head.last if head else 0), self.app.max_position()
        if scanned > end:
            raise FolderError(
                f"this log ends at {end} but its folder in {self.folder.files.where} says it "
                f"sent up to {scanned}: the home is an older copy (restored, or its last "
                "writes lost); sync it as a new installation (join) instead"
            )
        chain, exported = (head.end, dict(head.exported)) if head else (0, {})
        # what each installation's own folder holds of its own events needs no relaying
        held = {o: h.exported.get(o, 0) for o, h in self.heads.items() if h is not None}
        while scanned < end:
            rows = self.rows.select_export(scanned, end, SEGMENT_EVENTS)
            last = rows[-1][0]
            syncs = self.syncs(
                {row[1] for row in rows if row[5] is None and row[3] in self.operations}
            )
            records, requires = [], {}
            for row in rows:
                origin, seq = row[5], row[6]
                if origin is None and (row[1] in syncs or row[3] in self.purges):
                    continue  # this installation's own history
                if origin is not None and seq is not None and seq <= held.get(origin, 0):
                    requires[origin] = seq  # in its origin's folder: readers take it there
                    continue
                records.append(self.record(row))
            if records:
                self.folder.write(Segment(self.origin, chain, last, records, requires))
                chain = last
                exported.update((r.origin, r.seq) for r in records)
                self.report.sent += len(records)
                self.progress(self.report.sent, None, "sending")
            scanned = last
        self.report.sent_upto = scanned
        now = Head(scanned, chain, exported, self.rows.received_upto())
        if head is None or now.settles(head, SEGMENT_EVENTS):
            self.folder.write_head(now)

    def record(self, row: ExportRow) -> Record:
        """A row of this log as a segment carries it: from its origin, or from here."""
        position, oid, version, topic, state, origin, seq = row
        return Record(
            origin or self.origin.hex, seq or position, uuid.UUID(str(oid)), version, topic, state
        )

    def syncs(self, operation_ids: set[str]) -> set[str]:
        """Which of these operations of this installation's (ids as the log gives them)
        are syncs: their streams folded (a few per batch), not a view caught up first."""
        ids = {uuid.UUID(str(i)): i for i in operation_ids}
        states = self.app.load_many(Operation, ids)
        return {ids[i] for i, state in states.items() if state and state.command == "Sync"}
