"""The people whose personal data the log holds: forgetting one.

A value declared ``Of`` a person (:class:`~eventpile.domain.events.Of`) is sealed in
the log under that person's key (:mod:`eventpile.store.people`). Forgetting them
destroys the key, and records :class:`PersonForgotten` in a stream of its own: every
installation that reads it no longer derives the key, and each view that holds
personal data is made anew from the log (:mod:`eventpile.commands.forget`).
"""

from __future__ import annotations

from typing import ClassVar, Self

from eventpile.domain.aggregate import Aggregate, DomainError
from eventpile.domain.events import DomainEvent, person_of


def address_of(text: str) -> str:
    """An email address as a person is known by (lower-cased); refused if ``text`` is
    anything else (a display name with it, say)."""
    person = person_of(text)
    if person is None or person != text.strip().lower():
        raise DomainError(f"{text!r} is not an email address (like name@example.org)")
    return person


class PersonForgotten(DomainEvent):
    """The keys of ``people`` (64-bit ids in hex: keyed hashes, which do not name them)
    were destroyed."""

    people: tuple[str, ...]

    def describe(self) -> str:
        return "Person forgotten"

    def ids(self) -> list[int]:
        return [int(person, 16) for person in self.people]


class Forgetting(Aggregate):
    """The record of one forgetting (a stream of one event)."""

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (PersonForgotten,)

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        return cls(id=event.originator_id)
