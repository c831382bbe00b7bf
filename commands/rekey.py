"""A new data key: what is written from now on is sealed with it, the events sealed
with the old one are sealed anew, and the old key is destroyed when none is left.

``eventpile rekey`` adds the key to the key file (which asks the passphrase: the key
is wrapped by it) and keys the views anew (:mod:`eventpile.store.keys`); then it runs
:class:`Rekey`, this module's operation: a pass over the log that seals each event
still under an old key with the current one, a page per transaction, each row only if
it is still what was read (so it runs beside other commands, and two runs at once do
each row once). Killed, it is taken up where it stopped: by ``eventpile rekey`` again,
or by the worker once its lease runs out (it skips what is done already). When no
event is left under an old key, the old keys leave the key file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.eventlog import EventLog
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent
from eventpile.store.cipher import EventCipher
from eventpile.store.keys import retire_keys
from eventpile.store.mapper import PydanticMapper, RowReader

PAGE = 2000


class Rekey(Command):
    """Seal every event still under an old data key with the current one, then destroy
    the old keys."""

    undoable = False
    outside_effects = True  # it rewrites rows: recorded as started first, resumed if killed

    def describe(self) -> str:
        return "Re-encrypt the log under the new data key"


def refuse_if_syncing(app: EventLog, doing: str = "a rekey", because: str = "") -> None:
    """Refuse ``doing`` on a home that syncs with other installations: they share its keys,
    and would be cut off from what it writes under new ones (a hand-over of new keys to
    them is not built yet)."""
    synced = (
        app.current("operations")
        .execute("SELECT 1 FROM operations WHERE command = 'Sync' LIMIT 1")
        .fetchone()
    )
    if synced or cast(RowReader, app.recorder).received_upto():
        raise DomainError(
            f"this home syncs with other installations, which share its keys: {doing} "
            f"would cut them off from what it writes next{because} (handing them new keys "
            "is not built yet); nothing was changed"
        )


def require_current_keys(app: EventLog) -> None:
    """From now on, the database refuses what a process that holds replaced keys writes."""
    ring = app.keyring
    cast(RowReader, app.recorder).require_key((ring.current, ring.people_current))


def reseal_stale(ctx: Context, topics: Sequence[type[DomainEvent]]) -> tuple[int, int]:
    """Seal anew with the current key every event (of ``topics``; empty: all) sealed with
    a key that was replaced, a page per transaction, each row only if it is still what
    was read; again over what was written meanwhile, until a pass finds nothing old.
    How many events were read, and how many sealed anew."""
    app = ctx.app
    rows = cast(RowReader, app.recorder)
    cipher = cast(EventCipher, cast(PydanticMapper, app.mapper).event_cipher)
    stored = [topic for t in topics for topic in app.registry.stored_topics(t)]
    resealed = scanned = position = 0
    while True:
        found, end = 0, app.max_position()
        while position < end:
            page = rows.select_rows(position, end, stored, PAGE)
            if not page:
                break
            old = [row for row in page if cipher.stale(row[4], row[3])]
            if old:
                found += len(old)
                resealed += rows.replace_states(
                    [
                        (p, state, cipher.reseal(state, oid, v, topic))
                        for p, oid, v, topic, state in old
                    ]
                )
            scanned += len(page)
            position = page[-1][0]
            ctx.progress(position, end, f"{scanned:,} events read, {resealed:,} sealed anew")
            ctx.flush(catch_up=False)  # the progress, or a renewed lease, in the log
        if not found:
            return scanned, resealed


@handles(Rekey)
def rekey(command: Rekey, ctx: Context) -> Outcome:
    app = ctx.app
    refuse_if_syncing(app)
    ring = app.keyring
    on_disk = json.loads(app.home.key_file.read_bytes())
    if int(on_disk["current"]) != ring.current:
        raise DomainError(
            f"this process holds data key {ring.current}, the home's key file "
            f"{on_disk['current']}: run it again (a worker: restart it)"
        )
    require_current_keys(app)
    scanned, resealed = reseal_stale(ctx, ())
    retired = sorted(set(ring.keys) - {ring.current})
    if retired:
        retire_keys(app.home.key_file, ring)
    message = f"Re-encrypted {resealed:,} of {scanned:,} events under data key {ring.current}" + (
        f"; destroyed key {', '.join(map(str, retired))}" if retired else ""
    )
    result = {"events": scanned, "resealed": resealed, "key": ring.current, "retired": retired}
    return Outcome(message, result)
