"""Latest-wins registers in a view: what two installations wrote at once, settled alike.

Events written apart on two installations reach each in another order after a sync.
A view that sets a value from each event as it comes would end different on each;
one that keeps, per value (a *register*: a key and a name), the stamp of the write
in effect (:attr:`~eventpile.domain.events.DomainEvent.stamp`) and lets only a later
write replace it ends the same, whatever the order. The aggregate side is
:meth:`eventpile.domain.aggregate.Aggregate.write`.

A projection that uses them creates :data:`SCHEMA`, calls :func:`write` for each
register an event writes, and changes its own tables only where the event won.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from eventpile.domain.events import DomainEvent
from eventpile.store.views import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS registers (
    key TEXT NOT NULL, register TEXT NOT NULL, stamp TEXT NOT NULL, value TEXT,
    PRIMARY KEY (key, register)
) WITHOUT ROWID;
"""
"""The table of the registers."""


def stamp_text(event: DomainEvent) -> str:
    """The event's stamp as text that sorts as the stamp does."""
    version, event_id = event.stamp
    return f"{version:016x}{event_id.hex}"


Write = tuple[str, str, DomainEvent, str | None]
"""A write of a register: ``(key, register, event, value)``."""
KEYS_PER_READ = 500


def write(db: ViewDB, key: str, register: str, event: DomainEvent, new: str | None) -> bool:
    """Write ``new`` to the register if ``event`` is its latest write (True), else leave it."""
    return event.event_id in write_many(db, [(key, register, event, new)])


def write_many(db: ViewDB, writes: Sequence[Write]) -> set[uuid.UUID]:
    """:func:`write` each, in order, with one read and one write of the table (a page of
    a view's events): the ids of the events that are their register's latest write."""
    held: dict[tuple[str, str], str] = {}
    wanted: dict[str, set[str]] = {}
    for key, register, _, _ in writes:
        wanted.setdefault(register, set()).add(key)
    for register, keys in wanted.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), KEYS_PER_READ):
            chunk = ordered[start : start + KEYS_PER_READ]
            rows = db.execute(
                f"SELECT key, stamp FROM registers WHERE register=? "
                f"AND key IN ({','.join('?' * len(chunk))})",
                (register, *chunk),
            )
            held.update(((key, register), stamp) for key, stamp in rows)
    won: dict[tuple[str, str], tuple[str, str | None]] = {}
    winners: set[uuid.UUID] = set()
    for key, register, event, new in writes:
        stamp = stamp_text(event)
        if held.get((key, register), "") < stamp:
            held[key, register] = stamp
            won[key, register] = (stamp, new)
            winners.add(event.event_id)
    if won:
        db.executemany(
            "INSERT INTO registers VALUES (?, ?, ?, ?) ON CONFLICT (key, register) DO UPDATE "
            "SET stamp=excluded.stamp, value=excluded.value",
            [(key, register, stamp, new) for (key, register), (stamp, new) in won.items()],
        )
    return winners


def value(db: ViewDB, key: str, register: str) -> str | None:
    """The value in effect of a register (None if nothing wrote it)."""
    row = _read(db, key, register)
    return None if row is None else row[1]


def _read(db: ViewDB, key: str, register: str) -> tuple[str, str | None] | None:
    row = db.execute(
        "SELECT stamp, value FROM registers WHERE key=? AND register=?", (key, register)
    ).fetchone()
    return None if row is None else (row[0], row[1])
