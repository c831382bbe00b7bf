"""Forgetting a person: their personal data becomes unreadable everywhere.

Values declared ``Of`` a person are sealed in the log under that person's own key
(:mod:`eventpile.store.people`). :meth:`Application.forget
<eventpile.commands.app.Application.forget>` first replaces the people's key in the key
file (it asks the passphrase: the new key is wrapped by it); then :class:`Forget`, this
module's operation:

1. deletes the person's key streams, in the transaction that appends
   :class:`~eventpile.domain.people.PersonForgotten` (as a purge deletes operations);
2. seals the other people's keys anew under the new people's key, and destroys the old
   one in the key file: a copy of the log from before (a backup, a sync segment) then
   opens for everyone else, but not for the person forgotten;
3. on its way out, each view that holds personal data (``Projection.personal``) is made
   anew from the log when it reaches the ``PersonForgotten`` event, so their values
   read :data:`~eventpile.domain.events.FORGOTTEN` there too.

Undo refuses to restore what it can no longer read. Killed, it is done again by the
same call (the rotation under way is taken up, what is deleted stays deleted).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, cast

from pydantic import Field

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.eventlog import Conflict
from eventpile.commands.rekey import refuse_if_syncing, require_current_keys, reseal_stale
from eventpile.domain.aggregate import DomainError, first_event
from eventpile.domain.people import PersonForgotten, PersonKeyIssued
from eventpile.store.keys import retire_people
from eventpile.store.mapper import RowReader

ATTEMPTS = 5
"""Deletions tried while other commands issue keys to the same people at once."""


class Forget(Command):
    """Delete the keys of some people (their key streams: keyed hashes, which do not name
    them, so the record of the forgetting does not), then destroy the old people's key."""

    undoable = False
    outside_effects = True  # it deletes and rewrites: recorded as started first
    people: Annotated[tuple[uuid.UUID, ...], Field(min_length=1, max_length=1000)]

    def describe(self) -> str:
        return "Forget a person" if len(self.people) == 1 else f"Forget {len(self.people)} keys"


def refuse_unless_rotated(ctx: Context) -> None:
    """The people's key must have been replaced (by :meth:`Application.forget`) and this
    process must hold the key file's current one."""
    ring = ctx.app.keyring
    on_disk = json.loads(ctx.app.home.key_file.read_bytes()).get("people", {})
    if len(ring.people_keys()) < 2 and int(on_disk.get("current", 0)) == ring.people_current:
        raise DomainError(
            "forgetting replaces the people's key first: use `eventpile forget` (or "
            "Application.forget), which asks for the passphrase"
        )
    if int(on_disk.get("current", 0)) != ring.people_current:
        raise DomainError(
            "this process does not hold the key file's current people's key: run it again "
            "(a worker: restart it)"
        )


@handles(Forget)
def forget(command: Forget, ctx: Context) -> Outcome:
    app = ctx.app
    refuse_if_syncing(app, "forgetting a person", ", and keep the person's key")
    refuse_unless_rotated(ctx)
    require_current_keys(app)  # a process with the old people's key issues none now
    rows = cast(RowReader, app.recorder)
    deleted: dict[uuid.UUID, int] = {}
    for attempt in range(ATTEMPTS):
        deleted = rows.stream_ends(command.people)
        if not deleted:
            break
        record = first_event(PersonForgotten, uuid.uuid4(), people=tuple(sorted(deleted)))
        try:
            app.append([record], purge=deleted)
            break
        except Conflict:  # a key was issued to one of them meanwhile
            if attempt == ATTEMPTS - 1:
                raise
    app.people.drop(command.people)
    _, resealed = reseal_stale(ctx, (PersonKeyIssued,))
    ring = app.keyring
    retired = sorted(set(ring.people_keys()) - {ring.people_current})
    if retired:
        retire_people(app.home.key_file, ring)
    message = (
        f"Forgot {len(deleted)} key{'s' * (len(deleted) != 1)}; sealed {resealed:,} other "
        "people's keys under a new people's key and destroyed the old one"
    )
    result = {"keys": len(deleted), "resealed": resealed, "retired": len(retired)}
    return Outcome(message, result)
