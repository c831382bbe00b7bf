"""The people whose personal data the log holds, each with a key of their own.

A value declared ``Of`` a person (:class:`~eventpile.domain.events.Of`) is sealed in
the log under that person's key, which lives in the log too, as the
:class:`PersonKeyIssued` event of a stream of its own (its id a keyed hash of the
person: the log does not name them). Forgetting a person deletes that stream and
records :class:`PersonForgotten`: their values read
:data:`~eventpile.domain.events.FORGOTTEN` from then on, everywhere
(:mod:`eventpile.commands.forget`).
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Self

from eventpile.domain.aggregate import Aggregate
from eventpile.domain.events import DomainEvent


class PersonKeyIssued(DomainEvent):
    """A new key for a person's values (one installation's: a stream may hold several,
    from installations that met the person apart before they synced)."""

    key: str
    """The 256-bit key, in hex."""

    def describe(self) -> str:
        return "Person's key issued"


class PersonForgotten(DomainEvent):
    """A person was forgotten: the key streams ``people`` were deleted with this event."""

    people: tuple[uuid.UUID, ...]

    def describe(self) -> str:
        return "Person forgotten"


class Person(Aggregate):
    """A person's keys (or the record of a forgetting), by id."""

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (PersonKeyIssued, PersonForgotten)

    keys: dict[uuid.UUID, bytes] = {}
    """By the id of the event that issued it."""

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        return cls(id=event.originator_id).evolve(event)

    def evolve(self, event: DomainEvent) -> Self:
        if isinstance(event, PersonKeyIssued):
            return self.model_copy(
                update={"keys": {**self.keys, event.event_id: bytes.fromhex(event.key)}}
            )
        return self
