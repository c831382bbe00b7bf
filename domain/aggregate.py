"""The decider shape: an aggregate's state is a fold of its events.

An :class:`Aggregate` is an immutable pydantic model. ``start`` builds the state
from the stream's first event, ``evolve`` returns the state after one more event,
and decision methods return new events without changing anything. Pure: no I/O.

Undo appends, never deletes. An :class:`Invertible` event knows the event that
reverts it right after it happened (its ``inverse``, from the delta it recorded);
an aggregate's ``compensate`` says what reverts one of its past events now, given
its current state: only what is still in effect (``not_in_effect`` says why not).
What the compensation refers to beyond its own stream (another aggregate, a name
held in a view) is checked by the aggregate's ``still_possible``, which undo calls
with what it can read. ``event_types`` tells an application which aggregate an
event belongs to.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from eventpile.domain.events import DomainEvent

if TYPE_CHECKING:
    from eventpile.domain.undoing import Undoing


class DomainError(ValueError):
    """A command was refused by the rules of an aggregate; nothing happened."""


E = TypeVar("E", bound=DomainEvent)


class Invertible(DomainEvent):
    """A mutation event that can produce its compensating event from its own delta."""

    @abstractmethod
    def inverse(self, version: int) -> DomainEvent:
        """The event that reverts this one right after it, as ``version`` of its stream."""

    def follow(self, event_class: type[E], version: int, **fields: Any) -> E:
        """An event of this event's stream at ``version``."""
        return event_class(originator_id=self.originator_id, originator_version=version, **fields)


class Aggregate(BaseModel):
    """Base class of aggregate states."""

    model_config = ConfigDict(frozen=True)

    event_types: ClassVar[tuple[type[DomainEvent], ...]] = ()
    """The event classes (or their bases) of this aggregate's streams: how undo finds
    the aggregate of an event."""

    id: uuid.UUID
    version: int = 0
    stamps: dict[str, tuple[int, uuid.UUID]] = {}
    """By register (a field, or a field and a key), the stamp of the write in effect
    (see :meth:`write`)."""

    @classmethod
    def declares(cls, event_type: type[DomainEvent]) -> bool:
        """Is ``event_type`` (or one of its bases) among this aggregate's ``event_types``?"""
        return any(issubclass(event_type, declared) for declared in cls.event_types)

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        """The state after the first event of a stream."""
        raise DomainError(f"{cls.__name__} {event.originator_id} cannot start with {event}")

    def evolve(self, event: DomainEvent) -> Self:
        """The state after one more event (``self`` when the event changes nothing)."""
        return self

    def write(self, event: DomainEvent, register: str, **update: Any) -> Self:
        """The state with ``update`` if ``event`` is the latest write of ``register`` by
        :attr:`~eventpile.domain.events.DomainEvent.stamp`, else unchanged: for what two
        installations may change at once (a name, a flag), so that events applied in
        either order after a sync give one state. In one log, every event is the latest."""
        if register in self.stamps and event.stamp <= self.stamps[register]:
            return self
        return self.model_copy(update={**update, "stamps": {**self.stamps, register: event.stamp}})

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

    # undo -----------------------------------------------------------------

    def not_in_effect(self, event: Invertible) -> str | None:
        """Why what ``event`` (one of this stream's) did no longer holds now; None if it does.

        Right after ``event`` it holds. The default: it always does. The reason is
        shown and recorded as public data: no private values in it.
        """
        return None

    def compensate(self, event: DomainEvent) -> list[DomainEvent] | str:
        """What reverts ``event``, one of this stream's past events, this being the state now.

        The compensating events for what of it is still in effect, or why nothing is.
        By default the event's ``inverse`` unless ``not_in_effect`` gives a reason;
        override where later events change what the inverse must carry. Raises
        :class:`DomainError` for an event that cannot be reverted.
        """
        if not isinstance(event, Invertible):
            raise DomainError(f"{event.describe()}: this change cannot be undone")
        reason = self.not_in_effect(event)
        return reason if reason is not None else [event.inverse(self.version + 1)]

    @classmethod
    def still_possible(
        cls, compensation: list[DomainEvent], undoing: Undoing
    ) -> list[DomainEvent] | str:
        """What of ``compensation`` (events that revert a change of one of this aggregate's
        streams) may be recorded now, given what lies beyond the stream: other aggregates
        it refers to, names held in a view, as ``undoing`` shows them with what this undo
        has recorded so far. The events to record (the same, or changed), or why none may
        be (public words, as for ``not_in_effect``). The default: all of them.
        """
        return compensation


A = TypeVar("A", bound=Aggregate)


def fold(cls: type[A], events: Iterable[DomainEvent], state: A | None = None) -> A | None:
    """The state of an aggregate after ``events`` (``None`` for an empty stream)."""
    for event in events:
        if state is None:
            state = cls.start(event).model_copy(update={"version": event.originator_version})
        else:
            state = state.apply(event)
    return state


def required(state: A | None, cls: type[A], aggregate_id: uuid.UUID, what: str = "") -> A:
    """``state``, the state of an aggregate that must exist: refused (``DomainError``,
    "there is no …", ``what`` or the class's name) when it does not."""
    if state is None:
        raise DomainError(f"there is no {what or cls.__name__.lower()} {aggregate_id}")
    return state


def first_event(cls: type[E], originator_id: uuid.UUID, **fields: Any) -> E:
    """The event that starts a new stream."""
    return cls(originator_id=originator_id, originator_version=1, **fields)
