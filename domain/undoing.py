"""What an aggregate's ``still_possible`` may read while undo decides a compensation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from eventpile.domain.events import DomainEvent

if TYPE_CHECKING:
    from eventpile.domain.aggregate import Aggregate

A = TypeVar("A", bound="Aggregate")
T = TypeVar("T")


class Undoing(Protocol):
    """An undo or redo being decided, as far as the aggregates' checks need it."""

    @property
    def pending(self) -> Sequence[DomainEvent]:
        """What this undo has recorded so far (not yet written)."""
        ...

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        """An aggregate's state as this undo leaves it (stored events plus ``pending``)."""
        ...

    def view(self, name: str) -> Any:
        """The database of one of the application's views, caught up with the log
        (without ``pending``)."""
        ...

    def memo(self, key: object, make: Callable[[], T]) -> T:
        """A value kept for the whole undo under ``key`` (made by ``make`` once)."""
        ...
