"""Forgetting a person: their personal data becomes unreadable everywhere.

Values declared ``Of`` a person are sealed in the log under that person's own key,
derived from the home's people's tree (:mod:`eventpile.store.people`).
:class:`Forget`, this module's operation, records
:class:`~eventpile.domain.people.PersonForgotten`, then punctures the tree in the key
file (their key is then derived by nobody who holds the key file from then on: not
this process, not another, not a copy of the log made before, not a sync segment).
Each process that reads that record (before each command, and before it folds the log
into a view) stops deriving the key, and punctures its own key file if it still
derives it: so a forget cut short after its record is finished by the next command
of any process, here or on another machine on the same database. Each view that holds
personal data (``Projection.personal``) is made anew from the log when it reaches it,
so their values read :data:`~eventpile.domain.events.FORGOTTEN` there too; a sync
takes the record to the other installations, which puncture their key files as they
receive it. Undo refuses to restore what it can no longer read.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.domain.aggregate import first_event
from eventpile.domain.people import PersonForgotten

PersonId = Annotated[str, StringConstraints(pattern="^[0-9a-f]{16}$")]
"""A person's 64-bit id in hex: a keyed hash, which does not name them."""


class Forget(Command):
    """Destroy the keys of some people (by id: the record of the forgetting names nobody)."""

    undoable = False
    outside_effects = True  # it destroys keys: recorded as started first
    people: Annotated[tuple[PersonId, ...], Field(min_length=1, max_length=1000)]

    def describe(self) -> str:
        return "Forget a person" if len(self.people) == 1 else f"Forget {len(self.people)} people"


@handles(Forget)
def forget(command: Forget, ctx: Context) -> Outcome:
    ids = [int(person, 16) for person in command.people]
    # the record first: whatever process reads it destroys the keys (this one too, if it
    # dies before it does so below), and views are made anew only once the keys are gone
    ctx.record(first_event(PersonForgotten, uuid.uuid4(), people=command.people))
    ctx.flush(catch_up=False)
    ctx.app.forget_keys(ids)
    n = len(ids)
    message = (
        f"Forgot {'a person' if n == 1 else f'{n:,} people'}: what the log holds of "
        "them no longer opens, here or in any copy made before"
    )
    return Outcome(message, {"people": n})
