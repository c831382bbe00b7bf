"""Pydantic events to ``eventsourcing`` stored events and back.

Serialises with pydantic's JSON serializer, parses with pydantic-core's parser (as
fast as orjson here, and exact for integers beyond 64 bits) and validates with
the event model, upcasts old stored versions (``class_version`` with
``upcast_vN_vN+1`` methods, which the library's own mapper does for its events),
compresses only payloads large enough to pay for it, seals the values ``Of`` a
person under that person's key (:mod:`eventpile.store.people`), and seals each
payload to its row with :class:`eventpile.store.cipher.EventCipher`. A row's topic
names its event's type to the keys' holders alone (:mod:`eventpile.store.topics`).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, Protocol, cast

from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from pydantic_core import from_json

from eventpile.domain.events import ENVELOPE, DomainEvent, ForeignEvent, forgetting
from eventpile.domain.people import PersonForgotten
from eventpile.store.cipher import COMPRESSED, EventCipher
from eventpile.store.errors import StoreError, UnknownEvent
from eventpile.store.people import PEOPLE_FRAME, PersonKeys, head_of
from eventpile.store.topics import StoredTopics

# zlib (level 1) costs ~40 µs to compress and ~14 µs to decompress a 2.7 KB indexed
# message here and saves ~45%: more than the whole budget of an append (33 µs) or a
# rebuild (11 µs) per event. Only rare, large payloads (big operation results) pay.
COMPRESS_OVER: Final = 8192
_ROW_FIELDS: Final = {"originator_id", "originator_version"}
_ROW_FIELDS_AND_BORN: Final = {*_ROW_FIELDS, "born"}

Row = tuple[int, str, int, str, bytes]
"""A notification as a plain tuple: ``(position, originator_id, version, topic, state)``."""
ExportRow = tuple[int, str, int, str, bytes, str | None, int | None]
"""A :data:`Row` and where it came from: ``origin`` (hex) and ``seq`` (its position in
the origin's log) for an event a sync brought in, ``None, None`` for one written here."""


def found_and_end(rows: Sequence[tuple[Any, ...]]) -> tuple[list[Row], int]:
    """The rows of a query that joins what it found to the log's end (one row, its last
    column, with nothing found: the rest NULL): what it found, and that end."""
    return [cast(Row, row[:5]) for row in rows if row[0] is not None], rows[0][5] or 0


class RowReader(Protocol):
    """Our recorders: notifications as :data:`Row` tuples, no object per row, the
    events of many streams in one query, and streams purged as an append commits."""

    def select_streams(self, originator_ids: Collection[uuid.UUID]) -> list[StoredEvent]: ...

    def select_rows(
        self, after: int, upto: int, topics: Sequence[str], limit: int
    ) -> list[Row]: ...

    def select_export(self, after: int, upto: int, limit: int) -> list[ExportRow]: ...

    def forgettings(self, after: int) -> tuple[list[Row], int]: ...

    def received_upto(self, upto: int | None = None) -> dict[str, int]: ...

    def stream_ends(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]: ...

    def last_positions(self, originator_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]: ...

    def insert_events(
        self, stored_events: Sequence[StoredEvent], *, received: Sequence[tuple[str, int]] = ()
    ) -> Sequence[int] | None: ...

    def purge_streams(
        self, stored_events: Sequence[StoredEvent], purge: Mapping[uuid.UUID, int]
    ) -> Sequence[int] | None: ...

    def replace_states(self, rows: Sequence[tuple[int, bytes, bytes]]) -> int: ...

    def require_key(self, key_id: int) -> None: ...

    def reclaim(self) -> bool: ...


class _Unused(Transcoder):
    """The library's mapper wants a transcoder; pydantic does the transcoding here."""

    def encode(self, obj: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        raise NotImplementedError


class PydanticMapper(Mapper[uuid.UUID]):
    """Stored events of the classes ``topics`` knows (a topic never imports a module)."""

    def __init__(
        self,
        topics: StoredTopics,
        cipher: EventCipher | None = None,
        people: PersonKeys | None = None,
    ):
        super().__init__(transcoder=_Unused())
        self.topics = topics
        self.event_cipher = cipher
        self.people = people

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        event = cast(DomainEvent, domain_event)
        cls = type(event)
        if cls.forgotten:
            raise StoreError(f"{event.describe()}: its person was forgotten, it is not written")
        topic = self.topics.stored(cls)
        exclude = _ROW_FIELDS if event.born else _ROW_FIELDS_AND_BORN
        if self.people is not None and cls.owned_fields():
            payload = self.people.seal(event, exclude)
        else:
            payload = event.model_dump_json(exclude=exclude).encode()
        flags = 0
        if len(payload) > COMPRESS_OVER:
            payload, flags = zlib.compress(payload, 1), COMPRESSED
        if self.event_cipher is not None:
            payload = self.event_cipher.seal(
                payload,
                event.originator_id,
                event.originator_version,
                topic,
                flags,
                cls.class_version,
            )
        elif flags or cls.class_version > 1:
            payload = bytes([0xFF, flags]) + cls.class_version.to_bytes(2, "big") + payload
        return StoredEvent(
            originator_id=event.originator_id,
            originator_version=event.originator_version,
            topic=topic,
            state=payload,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEvent:
        return self.decode(
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.topic,
            stored_event.state,
        )

    def decode(
        self,
        originator_id: uuid.UUID | str,
        version: int,
        topic: str,
        state: bytes,
        *,
        foreign: bool = False,
    ) -> DomainEvent:
        """The event of a stored row (its id a UUID or its text: pydantic converts it).

        The row is authenticated before its topic is resolved to a class. A topic that
        names none of the classes this mapper knows is refused (:class:`UnknownEvent`),
        or with ``foreign`` passed on as a :class:`ForeignEvent`."""
        flags, class_version = 0, 1
        if self.event_cipher is not None:
            flags, class_version, state = self.event_cipher.open(
                state, originator_id, version, topic
            )
        elif state[:1] == b"\xff":
            flags, class_version, state = state[1], int.from_bytes(state[2:4], "big"), state[4:]
        topic = self.topics.reveal(topic)
        try:
            cls = self.topics.types.event_class(topic)
        except UnknownEvent:
            if not foreign:
                raise
            cls = ForeignEvent
        if flags & COMPRESSED:
            state = zlib.decompress(state)
        forgotten = frozenset[str]()
        data: dict[str, Any]
        if state[:1] != PEOPLE_FRAME:
            data = from_json(state)
        elif self.people is None or cls is ForeignEvent:  # passed on as it is
            data = head_of(state)[0]
        else:
            data, forgotten = self.people.open(state, cls.owned_fields())
        data["originator_id"] = originator_id
        data["originator_version"] = version
        if cls is ForeignEvent:
            envelope = {k: data.pop(k) for k in ENVELOPE if k in data}
            return ForeignEvent.model_validate({**envelope, "topic": topic, "data": data})
        while class_version < cls.class_version:
            getattr(cls, f"upcast_v{class_version}_v{class_version + 1}")(data)
            class_version += 1
        if forgotten:
            return forgetting(cls, forgotten).model_validate(data)
        event = cls.model_validate(data)
        if isinstance(event, PersonForgotten) and self.people is not None:
            self.people.forget(event.ids())  # read here first: from now on, not derived
        return event
