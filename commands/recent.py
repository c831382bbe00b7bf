"""The events an application appended last, kept for the catch-up right after."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventpile.domain.events import DomainEvent, kind
from eventpile.projections.base import Page, Topics

if TYPE_CHECKING:
    from eventpile.commands.eventlog import EventLog

Known = tuple[bytes, DomainEvent]
"""An event this process wrote, and the hash of its row."""


class RecentWrites:
    """The events this application appended last (up to :data:`LIMIT`), by position: a
    catch-up right after a command takes them from here instead of reading and
    decrypting them again. Where another writer's events lie among them, the log is
    read, and only that writer's rows (and any of ours changed since) are decrypted.
    Other reads (a rebuild, ``verify``) go to the log."""

    LIMIT = 20_000

    def __init__(self, log: EventLog):
        self.log = log
        self.positions: list[int] = []
        """The positions of :attr:`events`, ascending."""
        self.events: dict[int, Known] = {}
        """Each event with the hash of the row it was written as (see
        :func:`~eventpile.store.seals.row_hash`): a row changed since is decrypted."""

    def add(
        self, positions: list[int], events: Sequence[DomainEvent], hashes: Sequence[bytes]
    ) -> None:
        if len(positions) != len(events):  # (a recorder that does not say where)
            self.clear()
            return
        written = sorted(
            zip(positions, zip(hashes, events, strict=True), strict=True),
            key=lambda pair: pair[0],
        )
        if self.positions and written and written[0][0] <= self.positions[-1]:
            self.clear()  # not after the last: the log is not the one they were written to
        self.positions += (position for position, _ in written)
        self.events.update(written)
        if len(self.positions) > self.LIMIT:
            for position in self.positions[: -self.LIMIT]:
                del self.events[position]
            del self.positions[: -self.LIMIT]

    def clear(self) -> None:
        self.positions.clear()
        self.events.clear()

    def max_position(self) -> int:
        return self.log.max_position()

    def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page:
        low, high = bisect_right(self.positions, after), bisect_right(self.positions, upto)
        if high - low != upto - after:  # not all ours
            return self.log.read(after, upto, topics, limit, known=self.events)
        page = [(p, self.events[p][1]) for p in self.positions[low:high]]
        return [(p, e) for p, e in page if not topics or kind(e) in topics][:limit]
