"""Undo and redo: an operation's changes reverted by compensating events.

``Undo`` appends, newest first, what reverts each event an operation wrote, as a
new operation, and marks the old one undone by it. Only what is still in effect
is reverted: a tag the operation added that a later one removed stays removed,
and the outcome says so (``skipped``, with reasons). Nothing is deleted. An undo
is an operation like any other, and undoing it is a ``Redo``; once redone, an
operation's changes are the redo's events, so undoing it again reverts those.
Without an id, ``Undo`` takes the latest operation that changed something and can
be undone (not an undo or a redo), and refuses while that one is not finished (an
import waiting for an answer, say); ``Redo`` takes the most recently undone one.

Each event's aggregate decides what reverts it (:meth:`Aggregate.compensate`).
An event that is still the last of its stream needs no state: its ``inverse``
reverts it. So a large undo reads the operation's events and writes their
inverses, without loading an aggregate per event.

What reverts an event may also depend on more than its own stream (a name another
aggregate holds now, a reference to an aggregate that was removed): the event's
aggregate checks it in ``still_possible``, with what :class:`_Undoing` lets it read.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard, TypeVar

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.registry import Registry
from eventpile.commands.retention import missing_operation
from eventpile.domain.aggregate import Aggregate, DomainError, Invertible
from eventpile.domain.events import DomainEvent, ForeignEvent
from eventpile.domain.operation import Operation, Status
from eventpile.projections.base import gc_paused
from eventpile.projections.operations import redo_candidates, undo_candidates, written_by
from eventpile.store.views import ViewDB

READ_PAGE = 2000
LOAD_PAGE = 2000
"""Aggregates whose states are loaded at once (their events decoded together)."""
PROGRESS_EVERY = 1000

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class Undo(Command):
    """Revert what an operation changed (by default the latest that can be undone)."""

    operation_id: uuid.UUID | None = None

    def describe(self) -> str:
        return f"Undo {_which(self.operation_id, 'the latest operation')}"


class Redo(Command):
    """Bring back what an undone operation changed (by default the latest undone)."""

    operation_id: uuid.UUID | None = None

    def describe(self) -> str:
        return f"Redo {_which(self.operation_id, 'the latest undone operation')}"


def _which(operation_id: uuid.UUID | None, default: str) -> str:
    return default if operation_id is None else f"operation {operation_id}"


_UNDO_COMMANDS = frozenset({Undo.__name__, Redo.__name__})
_UNFINISHED = {Status.WAITING: "answer or cancel it", Status.RUNNING: "let it finish"}
"""What to do first about an unfinished operation before a plain undo, by its status."""


@handles(Undo)
def undo(command: Undo, ctx: Context) -> Outcome:
    target = _operation(ctx, command.operation_id or _latest(ctx, undo_candidates, "undo"))
    carrier = target
    while carrier.redone_by is not None:  # a redo's events carry its changes now
        carrier = _operation(ctx, carrier.redone_by)
    reverted, reasons = revert(ctx, carrier)
    return _outcome(f"Undid {_label(target)}", target.id, reverted, reasons)


@handles(Redo)
def redo(command: Redo, ctx: Context) -> Outcome:
    target = _operation(ctx, command.operation_id or _latest(ctx, redo_candidates, "redo"))
    if target.undone_by is None:
        raise DomainError(f"operation {target.id} is {target.status}, not undone: nothing to redo")
    the_undo = _operation(ctx, target.undone_by)
    reverted, reasons = revert(ctx, the_undo)
    outcome = _outcome(f"Redid {_label(target)}", the_undo.id, reverted, reasons)
    return Outcome(outcome.message, {**outcome.result, "redid": str(target.id)})


def revert(ctx: Context, target: Operation) -> tuple[int, Counter[str]]:
    """Record what reverts ``target``'s changes and mark it undone by this operation.

    Returns how many of its changes were reverted, and why the others were not
    (the undo marks an undo made on operations are not counted). A
    :class:`DomainError` (nothing written) if ``target`` cannot be undone.
    """
    _check_undoable(ctx.app.registry, target)
    ctx.record(target.undo())
    written = written_by(ctx.app.current("operations"), target.id.hex)
    if not written:
        raise DomainError(f"operation {target.id} changed nothing: there is nothing to undo")
    with gc_paused():  # many acyclic events: the collector would scan them again and again
        events = _read(ctx, [position for position, _ in written])
        foreign = next((e for e in events if isinstance(e, ForeignEvent)), None)
        if foreign is not None:
            raise DomainError(
                f"operation {target.id} ({target.command}) changed what another application "
                f"keeps ({foreign.type_name()}): undo or redo it with that application"
            )
        forgotten = next((e for e in events if type(e).forgotten), None)
        if forgotten is not None:
            raise DomainError(
                f"operation {target.id} ({target.command}) changed personal data of someone "
                f"forgotten since ({forgotten.describe()}): it can no longer be restored; "
                "nothing was changed"
            )
        pairs = list(zip(events, (last for _, last in written), strict=True))
        return _compensate(ctx, pairs, _Undoing(ctx))


def _compensate(
    ctx: Context, written: list[tuple[DomainEvent, int]], undoing: _Undoing
) -> tuple[int, Counter[str]]:
    """Record what reverts each event (with its stream's last version), newest first.

    An event is reverted by its inverse while it is the last of its stream, this
    undo included; any other is decided on its aggregate's state. Those states are
    loaded together first. The aggregate's ``still_possible`` then checks (and may
    change, or refuse with its reason) the compensation against what lies beyond
    the stream.
    """
    registry = ctx.app.registry
    _preload(ctx, registry, written)
    touched: set[uuid.UUID] = set()
    reverted, reasons = 0, Counter[str]()
    for done, (event, last) in enumerate(reversed(written), 1):
        stream = event.originator_id
        aggregate = registry.aggregate_of(type(event))
        a_change = aggregate is not Operation  # not an undo mark
        compensation: list[DomainEvent] | str
        if _by_inverse(event, last, registry) and stream not in touched:
            compensation = [event.inverse(event.originator_version + 1)]
        else:
            state = ctx.load(aggregate, stream)
            assert state is not None, f"{event!r} is in the log, so its stream is not empty"
            compensation = state.compensate(event)
        if isinstance(compensation, list) and compensation:
            compensation = aggregate.still_possible(compensation, undoing)
        if isinstance(compensation, list) and compensation:
            ctx.record(*compensation)
            touched.update(e.originator_id for e in compensation)
            reverted += a_change
        elif a_change:
            reasons[compensation if isinstance(compensation, str) else "nothing to revert"] += 1
        if done % PROGRESS_EVERY == 0:
            ctx.progress(done, len(written), f"Reverting: {done:,} of {len(written):,} changes")
    return reverted, reasons


class _Undoing:
    """What an aggregate's ``still_possible`` reads while this undo is decided."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._memo: dict[object, Any] = {}

    @property
    def pending(self) -> list[DomainEvent]:
        return self._ctx.pending

    def load(self, cls: type[A], aggregate_id: uuid.UUID) -> A | None:
        return self._ctx.load(cls, aggregate_id)

    def view(self, name: str) -> ViewDB:
        return self._ctx.app.current(name)

    def memo(self, key: object, make: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


def _by_inverse(event: DomainEvent, last: int, registry: Registry) -> TypeGuard[Invertible]:
    """Can ``event`` be reverted by its inverse, if nothing touched its stream since?"""
    return (
        isinstance(event, Invertible)
        and registry.aggregate_of(type(event)) is not Operation  # (its lifecycle is not in the log)
        and last == event.originator_version
    )


def _preload(ctx: Context, registry: Registry, written: list[tuple[DomainEvent, int]]) -> None:
    """Load together the states :func:`_compensate` will ask for, one by one, as it goes:
    those of the events not reverted by their inverse, and those of the streams the
    operation wrote more than once (all but their newest event are decided on state)."""
    seen: set[uuid.UUID] = set()
    wanted: dict[type[Aggregate], set[uuid.UUID]] = {}
    for event, last in written:
        stream = event.originator_id
        if stream in seen or not _by_inverse(event, last, registry):
            wanted.setdefault(registry.aggregate_of(type(event)), set()).add(stream)
        seen.add(stream)
    for aggregate, streams in wanted.items():
        ids = list(streams)
        for start in range(0, len(ids), LOAD_PAGE):
            ctx.preload(aggregate, ids[start : start + LOAD_PAGE])


def _operation(ctx: Context, operation_id: uuid.UUID) -> Operation:
    found = ctx.load(Operation, operation_id)
    if found is None:
        said = f"there is no operation {operation_id}"
        raise missing_operation(
            ctx.app.current("operations"), said, ctx.app.keyring.installation_id
        )
    return found


def _latest(
    ctx: Context, candidates: Callable[[ViewDB], Iterator[tuple[str, str, str]]], verb: str
) -> uuid.UUID:
    """The first candidate operation that ran an ordinary undoable command; refused if it
    is not finished."""
    for operation_hex, command, status in candidates(ctx.app.current("operations")):
        command_class = ctx.app.registry.command_class(command)
        if command in _UNDO_COMMANDS or command_class is None or not command_class.undoable:
            continue
        if not (state := Status(status)).finished:
            todo = _UNFINISHED.get(state, "let it finish or cancel it")
            raise DomainError(
                f"the latest operation that changed something, {uuid.UUID(operation_hex)} "
                f"({command}), is {status}: {todo} first, or give the id of the operation "
                f"to {verb}"
            )
        return uuid.UUID(operation_hex)
    raise DomainError(f"there is nothing to {verb}")


def _check_undoable(registry: Registry, operation: Operation) -> None:
    command_class = registry.command_class(operation.command)
    if command_class is None:
        raise DomainError(
            f"operation {operation.id} ran {operation.command}, a command unknown here: "
            "it cannot be undone"
        )
    if not command_class.undoable:
        raise DomainError(f"operation {operation.id} ({operation.command}) cannot be undone")


def _read(ctx: Context, positions: list[int]) -> list[DomainEvent]:
    """The events at ``positions`` (ascending), read in pages over runs of nearby positions."""
    wanted = set(positions)
    events: list[DomainEvent] = []
    first = 0
    while first < len(positions):
        last = first
        while last + 1 < len(positions) and positions[last + 1] - positions[last] <= READ_PAGE:
            last += 1
        after, upto = positions[first] - 1, positions[last]
        while after < upto:
            page = ctx.app.read(after, upto, (), READ_PAGE)
            if not page:
                break
            events.extend(event for position, event in page if position in wanted)
            after = page[-1][0]
        first = last + 1
    if len(events) != len(positions):
        raise DomainError(f"the log holds {len(events)} of the {len(positions)} events to revert")
    return events


def _label(operation: Operation) -> str:
    return f"“{operation.message}”"


def _outcome(message: str, undid: uuid.UUID, reverted: int, reasons: Counter[str]) -> Outcome:
    skipped = sum(reasons.values())
    if skipped:
        why = "; ".join(f"{reason} ({n:,})" for reason, n in reasons.most_common())
        message += f": {reverted:,} changes reverted, {skipped:,} not in effect any more ({why})"
    else:
        message += f": {reverted:,} changes reverted"
    result = {
        "undid": str(undid),
        "reverted": reverted,
        "skipped": skipped,
        "reasons": dict(reasons),
    }
    return Outcome(message, result)
