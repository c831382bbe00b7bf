"""``undo`` and ``redo``."""

from __future__ import annotations

import uuid

import typer

from eventpile.commands.cli.core import emit, opened, progress_bar, settings

_ID_HELP = "An operation id, or its first hex digits"


commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""


@commands.command()
def undo(
    ctx: typer.Context,
    operation_id: str = typer.Argument(
        "", help=f"{_ID_HELP} (default: the latest operation that can be undone)."
    ),
) -> None:
    """Undo an operation: revert what it changed and is still in effect, as a new operation."""
    _revert(ctx, "undo", operation_id)


@commands.command()
def redo(
    ctx: typer.Context,
    operation_id: str = typer.Argument(
        "", help=f"{_ID_HELP} of an undone operation (default: the latest undone)."
    ),
) -> None:
    """Redo an undone operation: undo its undo."""
    _revert(ctx, "redo", operation_id)


def _revert(ctx: typer.Context, verb: str, prefix: str) -> None:
    from eventpile.commands.operations import find_operation
    from eventpile.commands.undo import Redo, Undo

    s = settings(ctx)
    with opened(s) as application, progress_bar(s, verb.capitalize() + "ing") as update:
        target = find_operation(application, prefix).id if prefix else None
        command = Undo(operation_id=target) if verb == "undo" else Redo(operation_id=target)
        operation = application.execute(command, on_progress=update)
    result = operation.result
    data = {
        "operation_id": operation.id.hex,
        "undid": uuid.UUID(result["undid"]).hex,
        **{key: result[key] for key in ("reverted", "skipped", "reasons")},
    }
    emit(s, data, operation.message)
