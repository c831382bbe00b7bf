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

from eventpile.domain.events import DomainEvent
from eventpile.store.views import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS registers (
    key TEXT NOT NULL, register TEXT NOT NULL, stamp TEXT NOT NULL, value TEXT,
    PRIMARY KEY (key, register)
);
"""


def stamp_text(event: DomainEvent) -> str:
    """The event's stamp as text that sorts as the stamp does."""
    version, event_id = event.stamp
    return f"{version:016x}{event_id.hex}"


def write(db: ViewDB, key: str, register: str, event: DomainEvent, new: str | None) -> bool:
    """Write ``new`` to the register if ``event`` is its latest write (True), else leave it."""
    stamp = stamp_text(event)
    row = _read(db, key, register)
    if row is not None and row[0] >= stamp:
        return False
    db.execute(
        "INSERT INTO registers VALUES (?, ?, ?, ?) ON CONFLICT (key, register) DO UPDATE "
        "SET stamp=excluded.stamp, value=excluded.value",
        (key, register, stamp, new),
    )
    return True


def value(db: ViewDB, key: str, register: str) -> str | None:
    """The value in effect of a register (None if nothing wrote it)."""
    row = _read(db, key, register)
    return None if row is None else row[1]


def _read(db: ViewDB, key: str, register: str) -> tuple[str, str | None] | None:
    row = db.execute(
        "SELECT stamp, value FROM registers WHERE key=? AND register=?", (key, register)
    ).fetchone()
    return None if row is None else (row[0], row[1])
