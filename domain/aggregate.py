"""The decider shape: an aggregate's state is a fold of its events.

An :class:`Aggregate` is an immutable pydantic model. ``start`` builds the state
from the stream's first event, ``evolve`` returns the state after one more event,
and decision methods return new events without changing anything. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from domain.events import DomainEvent


class DomainError(ValueError):
    """A command was refused by the rules of an aggregate; nothing happened."""


class Aggregate(BaseModel):
    """Base class of aggregate states."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    version: int = 0

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        """The state after the first event of a stream."""
        raise DomainError(f"{cls.__name__} {event.originator_id} cannot start with {event}")

    def evolve(self, event: DomainEvent) -> Self:
        """The state after one more event (``self`` when the event changes nothing)."""
        return self

    def event(self, event_class: type[E], n: int = 1, **fields: Any) -> E:
        """The ``n``-th new event of this aggregate's stream."""
        return event_class(originator_id=self.id, originator_version=self.version + n, **fields)

    def apply(self, event: DomainEvent) -> Self:
        """``evolve`` plus the stream position."""
        if event.originator_version != self.version + 1:
            raise DomainError(
                f"event {event.originator_version} does not follow version {self.version}"
            )
        return self.evolve(event).model_copy(update={"version": event.originator_version})


A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=DomainEvent)


def fold(cls: type[A], events: Iterable[DomainEvent], state: A | None = None) -> A | None:
    """The state of an aggregate after ``events`` (``None`` for an empty stream)."""
    for event in events:
        if state is None:
            state = cls.start(event).model_copy(update={"version": event.originator_version})
        else:
            state = state.apply(event)
    return state


def first_event(cls: type[E], originator_id: uuid.UUID, **fields: Any) -> E:
    """The event that starts a new stream."""
    return cls(originator_id=originator_id, originator_version=1, **fields)
