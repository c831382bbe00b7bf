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
from typing import cast

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.eventlog import EventLog
from eventpile.domain.aggregate import DomainError
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


def refuse_if_syncing(app: EventLog) -> None:
    """Refuse a rekey of a home that syncs with other installations: they share its data
    keys, and would be cut off from what it writes under the new one (not yet built)."""
    synced = (
        app.current("operations")
        .execute("SELECT 1 FROM operations WHERE command = 'Sync' LIMIT 1")
        .fetchone()
    )
    if synced or cast(RowReader, app.recorder).received_upto():
        raise DomainError(
            "this home syncs with other installations, which share its data keys: a rekey "
            "would cut them off from what it writes next (a rekey that hands them the new "
            "key is not built yet); nothing was changed"
        )


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
    rows = cast(RowReader, app.recorder)
    cipher = cast(EventCipher, cast(PydanticMapper, app.mapper).event_cipher)
    rows.require_key(cipher.current)  # a process with the old key writes nothing now
    resealed = scanned = position = 0
    while True:  # again over what was written meanwhile, until a pass finds nothing old
        found, end = 0, app.max_position()
        while position < end:
            page = rows.select_rows(position, end, (), PAGE)
            if not page:
                break
            old = [row for row in page if cipher.key_of(row[4]) != cipher.current]
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
            break
    retired = sorted(set(ring.keys) - {ring.current})
    if retired:
        retire_keys(app.home.key_file, ring)
    message = f"Re-encrypted {resealed:,} of {scanned:,} events under data key {ring.current}" + (
        f"; destroyed key {', '.join(map(str, retired))}" if retired else ""
    )
    result = {"events": scanned, "resealed": resealed, "key": ring.current, "retired": retired}
    return Outcome(message, result)
