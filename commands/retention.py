"""Retention: the history of finished operations leaves the log after a horizon.

``Purge(older_than=...)`` deletes from the log the streams of the operations that
finished before ``now - older_than``: their lifecycle, progress, results, errors and
answered questions. What they changed stays: domain events are never purged, so
every view still rebuilds from the log, and a rebuild after a purge equals the views
kept up to date through it (each drops the purged operations' rows when it reads the
purge's :class:`~eventpile.domain.operation.OperationsPurged` event, written in the
same transaction as the deletion).

Never purged: an operation that is not finished (pending, scheduled, running,
retrying, waiting for an answer), nor one tied to an operation that is kept: the
question whose answer started it, the undo or redo that marked it (the links go both
ways, so a chain is purged whole or not at all). Sync's needs are kept too: the
latest sync with each folder (it records how far that folder holds this log), and
every event this log has not yet written to every folder it syncs with. A peer that
is behind reads what it lacks from the folder, not from this log, so a purge here
strands nobody.

Undo of a purged operation is refused with the horizon (:func:`missing_operation`).
The space is given back after the operation (:meth:`Application.purge
<eventpile.commands.app.Application.purge>`), where a busy database only delays it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from pydantic import BeforeValidator, Field

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.durations import UNITS, parse_duration
from eventpile.commands.eventlog import Conflict
from eventpile.domain.aggregate import DomainError, first_event
from eventpile.domain.operation import OperationsPurged
from eventpile.projections.operations import latest_purge, purge_plan
from eventpile.store.mapper import RowReader
from eventpile.store.views import ViewDB


def _duration(value: Any) -> Any:
    """``90d``, ``12h``, ``30m``, ``0s``, ``2w`` as a timedelta; anything else as it is
    (pydantic reads a timedelta's own forms, and refuses the rest)."""
    if not isinstance(value, str):
        return value
    delta = parse_duration(value)
    if delta is None and value.strip()[-1:] in UNITS:
        raise ValueError(f"{value!r} is not a duration: a number and a unit, like 90d or 12h")
    return value if delta is None else delta


Horizon = Annotated[
    timedelta, BeforeValidator(_duration), Field(ge=timedelta(0), le=timedelta(days=36500))
]


class Purge(Command):
    """Delete the history of the operations that finished longer than ``older_than`` ago."""

    undoable = False
    outside_effects = True  # it deletes: recorded as started first, so a killed one is found
    older_than: Horizon

    def describe(self) -> str:
        return f"Purge the history of operations finished over {_span(self.older_than)} ago"


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


ATTEMPTS = 5
"""Plans a purge makes while other commands change what it would delete."""


@handles(Purge)
def purge(command: Purge, ctx: Context) -> Outcome:
    app = ctx.app
    horizon = app.clock() - command.older_than
    rows = cast(RowReader, app.recorder)
    for attempt in range(ATTEMPTS):
        plan = purge_plan(app.current("operations"), horizon.timestamp(), rows.last_positions)
        counts = {uuid.UUID(hex=s): version for s, version in plan.streams.items()}
        record = first_event(
            OperationsPurged, uuid.uuid4(), streams=sorted(counts), horizon=horizon
        )
        try:
            app.append([record], purge=counts)
            break
        except Conflict:  # an operation to purge changed meanwhile (an undo marked it)
            if attempt == ATTEMPTS - 1:
                raise
    events = sum(counts.values())
    message = (
        f"Purged {plan.operations:,} operations finished before {horizon:%Y-%m-%d %H:%M} UTC "
        f"({events:,} events)"
    )
    if plan.held:
        message += (
            f"; kept {plan.held:,} more that a sync folder does not hold yet (sync, then purge)"
        )
    result = {
        "horizon": horizon.isoformat(),
        "operations": plan.operations,
        "events": events,
        "kept_for_sync": plan.held,
    }
    return Outcome(message, result)


def missing_operation(db: ViewDB, said: str, here: uuid.UUID) -> DomainError:
    """``said`` (that an operation is not there), and that it may have been purged, with
    the horizon of the latest purge this installation (``here``) ran."""
    purged = latest_purge(db, here)
    if purged is None:
        return DomainError(said)
    horizon, when = purged
    return DomainError(
        f"{said}: the history of operations finished before {_moment(horizon)} was purged "
        f"on {_moment(when)}; what a purged operation changed stays, but it can no longer "
        "be undone or shown"
    )


def _moment(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
