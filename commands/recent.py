"""The events an application appended last, kept for the catch-up right after."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventpile.domain.events import DomainEvent, kind
from eventpile.projections.base import Page, Topics

if TYPE_CHECKING:
    from eventpile.commands.eventlog import EventLog


class RecentWrites:
    """The events this application appended last, while their positions run on without a
    gap: a catch-up right after a command takes them from here instead of reading and
    decrypting them again. Other reads (a rebuild, ``verify``) go to the log."""

    LIMIT = 20_000

    def __init__(self, log: EventLog):
        self.log = log
        self.events: Page = []

    def add(self, positions: list[int], events: Sequence[DomainEvent]) -> None:
        run = self.events
        if not positions or positions[-1] - positions[0] != len(positions) - 1:
            run.clear()  # another writer's events are in between: read them all
            return
        if run and run[-1][0] + 1 != positions[0]:
            run.clear()
        run += zip(positions, events, strict=True)
        del run[: -self.LIMIT]

    def clear(self) -> None:
        self.events.clear()

    def max_position(self) -> int:
        return self.log.max_position()

    def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page:
        run = self.events
        if not run or not run[0][0] <= after + 1 or upto > run[-1][0]:
            return self.log.read(after, upto, topics, limit)
        first = run[0][0]
        page = run[after + 1 - first : upto + 1 - first]
        return [(p, e) for p, e in page if not topics or kind(e) in topics][:limit]
