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
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from pydantic import BeforeValidator

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.domain.aggregate import DomainError, first_event
from eventpile.domain.operation import OperationsPurged
from eventpile.projections.operations import latest_purge, purge_plan
from eventpile.store.mapper import RowReader
from eventpile.store.views import ViewDB

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,6})([smhdw])")


def parse_duration(value: Any) -> Any:
    """``90d``, ``12h``, ``30m``, ``0s``, ``2w`` as a timedelta; anything else as it is
    (pydantic reads a timedelta's own forms, and refuses the rest)."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if isinstance(value, str) and value.strip()[-1:] in _UNITS:
        raise ValueError(f"{value!r} is not a duration: a number and a unit, like 90d or 12h")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Purge(Command):
    """Delete the history of the operations that finished longer than ``older_than`` ago."""

    undoable = False
    older_than: Duration

    def model_post_init(self, context: Any) -> None:
        if self.older_than < timedelta(0):
            raise ValueError("older_than: a purge horizon cannot be in the future")

    def describe(self) -> str:
        return f"Purge the history of operations finished over {_span(self.older_than)} ago"


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@handles(Purge)
def purge(command: Purge, ctx: Context) -> Outcome:
    app = ctx.app
    horizon = app.clock() - command.older_than
    rows = cast(RowReader, app.recorder)
    db = app.current("operations")
    plan = purge_plan(db, horizon.timestamp(), rows.last_positions)
    counts = rows.stream_ends([uuid.UUID(hex=s) for s in plan.streams]) if plan.streams else {}
    streams = sorted(counts)
    record = first_event(OperationsPurged, uuid.uuid4(), streams=streams, horizon=horizon)
    app.append([record], purge=streams)
    if streams:
        rows.reclaim()
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


def missing_operation(db: ViewDB, operation: str) -> DomainError:
    """Why there is no operation ``operation`` (an id, or the start of one): it may have
    been purged, which is said with the horizon of the latest purge."""
    said = f"there is no operation {operation}"
    purged = latest_purge(db)
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
