"""The domain event base: frozen pydantic events with public and private fields.

Every event carries its identity (``event_id``), its place in its aggregate's
stream (``originator_id``, ``originator_version``), when it happened
(``timestamp``, aware UTC), where it happened (``origin``, the installation id)
and why (``operation_id``, the user operation that caused it). The last two are
filled in from the current :func:`operation_scope`, so decision code never passes
them around.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from functools import cache, lru_cache
from typing import Annotated, Any, ClassVar, Final, cast

from annotated_types import Ge
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python


class _PrivateMarker:
    """Field metadata: the value is personal data (``Annotated[str, Private]``)."""

    def __repr__(self) -> str:
        return "Private"


Private: Final = _PrivateMarker()


@dataclass(frozen=True)
class Of:
    """Field metadata: whose personal data a ``Private`` value is, so that forgetting that
    person makes it unreadable (``Annotated[str, Private, Of("sender")]``). ``owner``
    names a field of the same event that holds the person's email address (with a
    display name or not), or is :data:`STREAM`: the person is the event's aggregate (a
    contact, say). The store seals such values under that person's own key
    (:mod:`eventpile.store.people`)."""

    owner: str


STREAM: Final = "originator_id"
"""``Of(STREAM)``: the person a value belongs to is the aggregate the event is of."""
FORGOTTEN: Final = "[forgotten]"
"""What a text field of a person forgotten since reads (other fields read their default)."""


_uuid7_lock = threading.Lock()
_uuid7_last = 0


def uuid7() -> uuid.UUID:
    """A time-ordered random UUID (RFC 9562 version 7), increasing within a process.

    Its 48-bit millisecond time is followed by 74 random bits; an id made in the
    same millisecond as the last one (or after the clock stepped back) counts up
    from it instead (RFC 9562, 6.2), so ids sort in the order they were made.
    """
    global _uuid7_last
    value = (time.time_ns() // 1_000_000) << 74 | int.from_bytes(os.urandom(10), "big") >> 6
    with _uuid7_lock:
        if value <= _uuid7_last:
            value = _uuid7_last + 1
        _uuid7_last = value
    rand_a, rand_b = value >> 62 & 0xFFF, value & (1 << 62) - 1
    return uuid.UUID(int=(value >> 74) << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b)


def hashed_uuid(digest: bytes) -> uuid.UUID:
    """A UUID (RFC 9562 version 8) made of the first 122 bits of a hash."""
    value = int.from_bytes(digest[:16], "big")
    value = value & ~(0xF << 76) | 0x8 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    """Now, in UTC: the default clock of applications and event timestamps."""
    return datetime.now(UTC)


Clock = Callable[[], datetime]

_operation: ContextVar[uuid.UUID | None] = ContextVar("operation", default=None)
_origin: ContextVar[uuid.UUID | None] = ContextVar("origin", default=None)
_clock: ContextVar[Clock] = ContextVar("clock", default=utcnow)


@contextmanager
def operation_scope(
    operation_id: uuid.UUID, origin: uuid.UUID | None, clock: Clock = utcnow
) -> Iterator[None]:
    """Stamp every event created inside with this operation id and origin, and the time
    of ``clock`` (the application's, which also times leases and retries)."""
    tokens = (_operation.set(operation_id), _origin.set(origin), _clock.set(clock))
    try:
        yield
    finally:
        _operation.reset(tokens[0])
        _origin.reset(tokens[1])
        _clock.reset(tokens[2])


def _now() -> datetime:
    return _clock.get()()


def current_operation_id() -> uuid.UUID | None:
    return _operation.get()


def _current_origin() -> uuid.UUID | None:
    return _origin.get()


class DomainEvent(BaseModel):
    """Base class of every event: immutable, typed, serialisable, versioned.

    Subclasses set ``class_version`` above 1 when their schema changes and give
    static ``upcast_vN_vN+1(state: dict)`` methods that turn a stored older state
    into the next version's, in place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    class_version: ClassVar[int] = 1
    forgotten: ClassVar[frozenset[str]] = frozenset()
    """The fields of this event whose person was forgotten (see :func:`forgetting`)."""

    originator_id: uuid.UUID
    originator_version: int = Field(ge=1)
    event_id: uuid.UUID = Field(default_factory=uuid7)
    timestamp: AwareDatetime = Field(default_factory=_now)
    origin: uuid.UUID | None = Field(default_factory=_current_origin)
    operation_id: uuid.UUID | None = Field(default_factory=current_operation_id)
    born: Annotated[int, Ge(1)] | None = None
    """The version its origin wrote it at, where a sync placed it at another: after events
    of the same stream written elsewhere at the same time (see :attr:`stamp`)."""

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def date(self) -> str:
        """The timestamp as an RFC 2822 date."""
        return format_datetime(self.timestamp, usegmt=True)

    @property
    def stamp(self) -> tuple[int, uuid.UUID]:
        """The event's place in its stream as every installation sees it: the version it
        was written at (a Lamport clock: above every version its writer had seen) and,
        between events written at once on two installations, its id. Latest-wins
        decisions compare stamps, never the order events arrived in."""
        return (self.born or self.originator_version, self.event_id)

    @property
    def ts(self) -> float:
        """The timestamp as Unix seconds."""
        return self.timestamp.timestamp()

    def describe(self) -> str:
        """One human-readable line, built from public fields only."""
        return _words(self.type_name())

    def type_name(self) -> str:
        """The name of the event's class."""
        return type(self).__name__

    @classmethod
    def private_fields(cls) -> frozenset[str]:
        return _private_fields(cls)

    @classmethod
    def owned_fields(cls) -> dict[str, tuple[str, ...]]:
        """The fields declared ``Of`` a person, by the field that names the person."""
        return _owned_fields(cls)

    def person(self, owner: str) -> str | None:
        """Who the fields ``Of(owner)`` belong to: a lower-cased email address, or the
        aggregate's id for :data:`STREAM` (None: nobody, then they are not sealed apart)."""
        if owner == STREAM:
            return str(self.originator_id)
        return person_of(getattr(self, owner))


ENVELOPE: Final = frozenset(DomainEvent.model_fields)


class ForeignEvent(DomainEvent):
    """An authentic event of a class this application does not have: written by another
    application sharing the home (or a newer version). The notification log passes it
    on with its envelope, so that views of every event stay the same whichever
    application folds them; no aggregate of this application can take it."""

    topic: str
    data: Annotated[dict[str, Any], Private] = Field(default_factory=dict)

    def type_name(self) -> str:
        return self.topic.rpartition(":")[2]


@cache
def _private_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name
        for name, info in cls.model_fields.items()
        if any(isinstance(m, _PrivateMarker) for m in info.metadata)
    )


@cache
def _owned_fields(cls: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for name, info in cls.model_fields.items():
        for mark in info.metadata:
            if isinstance(mark, Of):
                found.setdefault(mark.owner, []).append(name)
    return {owner: tuple(names) for owner, names in found.items()}


def person_of(value: Any) -> str | None:
    """The person an address names (``"Ann <Ann@Example.org>"``: ``ann@example.org``)."""
    return _address(value) if isinstance(value, str) else None


@lru_cache(maxsize=4096)
def _address(text: str) -> str | None:
    address = parseaddr(text)[1].strip().lower()
    return address if "@" in address else None


@cache
def forgetting(cls: type[DomainEvent], fields: frozenset[str]) -> type[DomainEvent]:
    """``cls`` as it reads with ``fields`` forgotten: a subclass of the same name whose
    ``fields`` hold :data:`FORGOTTEN` (text) or their default, whatever their type's rules."""
    from pydantic import create_model

    placeholders: dict[str, Any] = {}
    for name in fields:
        info = cls.model_fields[name]
        default = FORGOTTEN if info.is_required() else info.get_default(call_default_factory=True)
        placeholders[name] = (Any, FORGOTTEN if isinstance(default, str) else default)
    forgotten = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **placeholders)
    forgotten.forgotten = fields
    forgotten.__qualname__ = f"{cls.__qualname__}[forgotten {','.join(sorted(fields))}]"
    return cast(type[DomainEvent], forgotten)


def kind(event: DomainEvent) -> type[DomainEvent]:
    """The class ``event`` was written as (of an event read forgotten: its base)."""
    cls = type(event)
    return cls.__mro__[1] if cls.forgotten else cls


def private_fields_of(model: type[BaseModel]) -> frozenset[str]:
    """Names of the fields of any pydantic model declared ``Private``."""
    return _private_fields(model)


def redact(model: BaseModel, replace: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The model as JSON values, each ``Private`` field (in nested models too) replaced.

    A private value becomes ``replace(value)`` (its JSON value), or is left out
    when ``replace`` is None.
    """
    private = private_fields_of(type(model))
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name not in private:
            out[name] = _redact_value(value, replace)
        elif replace is not None:
            out[name] = replace(to_jsonable_python(value))
    return out


def _redact_value(value: Any, replace: Callable[[Any], Any] | None) -> Any:
    if isinstance(value, BaseModel):
        return redact(value, replace)
    if isinstance(value, dict):
        return {to_jsonable_python(k): _redact_value(v, replace) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, replace) for v in value]
    return to_jsonable_python(value)


def _words(name: str) -> str:
    out = "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
    return out[:1].upper() + out[1:]
