"""Operations: ``feed``, ``ops``, ``answer``, ``cancel``, ``retry``, ``worker``, ``send``
and ``support-bundle``."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from eventpile.commands.cli.core import (
    MAX_COUNT,
    console,
    emit,
    opened,
    progress_bar,
    settings,
)

if TYPE_CHECKING:
    from eventpile.commands.retention import Purge
    from eventpile.domain.operation import Operation


def summary(operation: Operation) -> dict[str, Any]:
    """The public facts of an operation, for ``--json``: ids written as ``log`` and
    ``feed`` write them (32 hex digits)."""
    from eventpile.domain.events import redact

    facts = redact(operation)
    for name in ("id", "parent_id", "follow_up_id", "undone_by", "redone_by"):
        value = getattr(operation, name)
        facts[name] = None if value is None else value.hex
    return facts


def line(operation: Operation) -> str:
    """How an operation stands, in one line."""
    line = f"{operation.id.hex}  {operation.status}: {operation.message}"
    if operation.retry_at is not None:
        line += f" (next attempt {operation.retry_at:%Y-%m-%d %H:%M:%S} UTC)"
    if operation.question is not None and operation.status == "waiting":
        choices = " | ".join(operation.question.choices)
        line += (
            f"\n  {operation.question.prompt}\n  eventpile answer {operation.id.hex} {{{choices}}}"
        )
    return line


commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""


@commands.command()
def feed(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Every entry, not just recent ones."),
    private: bool = typer.Option(False, "--private", help="Show private data too."),
    as_html: bool = typer.Option(False, "--html", help="Render as an HTML list."),
    recent: int = typer.Option(
        20, "--recent", "-n", min=1, max=MAX_COUNT, help="How many recent entries."
    ),
) -> None:
    """What the program is doing and did: recent operations plus every incomplete one."""
    from eventpile.projections.feed import all_entries
    from eventpile.projections.feed import feed as feed_entries

    s = settings(ctx)
    with opened(s) as application:
        db = application.current("feed")
        if show_all:
            entries = all_entries(db, private=private)
        else:
            entries = feed_entries(db, recent, private=private)
    if as_html and not s.json:
        items = "\n".join(application.registry.renderer(e["source"]).html(e) for e in entries)
        typer.echo(f'<ul class="feed">\n{items}\n</ul>')
        return

    def show() -> None:
        out = console()
        for e in entries:
            out.print(application.registry.renderer(e["source"]).text(e), markup=False)

    emit(s, {"feed": [application.registry.renderer(e["source"]).json(e) for e in entries]}, show)


@commands.command()
def ops(ctx: typer.Context) -> None:
    """The queue: every unfinished operation, with when it is due."""
    from eventpile.projections.queue import pending

    s = settings(ctx)
    with opened(s) as application:
        queued = pending(application.current("queue"))
        now = application.clock()
    # running by the record, but its worker's lease ended: a worker takes it up
    stale = {op.id for op in queued if op.status == "running" and op.lease_expired(now)}

    def show() -> None:
        from rich.table import Table

        table = Table("id", "command", "status", "due (UTC)", "attempts", "message")
        for op in queued:
            due = op.due_at
            when = "" if due is None else f"{due:%Y-%m-%d %H:%M:%S}"
            status = f"{op.status} (stale: its worker stopped)" if op.id in stale else op.status
            table.add_row(op.id.hex, op.command, status, when, str(op.attempts), op.message)
        console().print(table)

    data = [{**summary(op), "stale": op.id in stale} for op in queued]
    emit(s, {"operations": data}, show)


@commands.command()
def answer(ctx: typer.Context, operation_id: str, choice: str) -> None:
    """Answer an operation's question: its choice's command runs as a new operation."""
    from eventpile.commands.operations import answer as answer_operation
    from eventpile.commands.operations import find_operation

    s = settings(ctx)
    with opened(s) as application, progress_bar(s, "Running") as update:
        target = find_operation(application, operation_id)
        answered, follow_up = answer_operation(application, target.id, choice, update)
    data = {
        "operation": summary(answered),
        "follow_up": None if follow_up is None else summary(follow_up),
    }
    human = line(answered) + ("" if follow_up is None else "\n" + line(follow_up))
    emit(s, data, lambda: console().print(human, markup=False))


@commands.command()
def cancel(ctx: typer.Context, operation_id: str) -> None:
    """Cancel a pending, scheduled, retrying or waiting operation."""
    from eventpile.commands.operations import cancel as cancel_operation
    from eventpile.commands.operations import find_operation

    s = settings(ctx)
    with opened(s) as application:
        state = cancel_operation(application, find_operation(application, operation_id).id)
    emit(s, {"operation": summary(state)}, lambda: console().print(line(state), markup=False))


@commands.command()
def retry(ctx: typer.Context, operation_id: str) -> None:
    """Run a scheduled or retrying operation now; run a failed one again."""
    from eventpile.commands.operations import find_operation
    from eventpile.commands.operations import retry as retry_operation

    s = settings(ctx)
    with opened(s) as application, progress_bar(s, "Running") as update:
        target = find_operation(application, operation_id)
        state = retry_operation(application, target.id, update)
    emit(s, {"operation": summary(state)}, lambda: console().print(line(state), markup=False))


@commands.command()
def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run what is due now, then exit."),
    poll: float = typer.Option(5.0, "--poll", min=0.1, help="Look for new work this often (s)."),
) -> None:
    """Run due operations (scheduled, retrying, abandoned by a dead worker) until stopped;
    with EVENTPILE_PURGE_OLDER_THAN (90d, say), purge older history once a day."""
    import threading

    from eventpile.commands.worker import Ran, Worker

    s = settings(ctx)
    ran: list[Ran] = []
    purge = _purge_setting()

    def report(result: Ran) -> None:
        ran.append(result)
        if not s.json:
            line = f"{result.operation_id}  {result.status}: {result.message}"
            console().print(line, markup=False)

    with opened(s) as application:
        runner = Worker(application, report, purge)
        if once:
            runner.drain()
        else:
            # Ctrl-C stops it; an operation it interrupts is taken up when its lease ends
            with contextlib.suppress(KeyboardInterrupt):
                runner.serve(threading.Event(), poll)
    if s.json:
        emit(s, {"ran": [asdict(r) for r in ran]}, "")


def _purge_setting() -> Purge | None:
    """The purge ``EVENTPILE_PURGE_OLDER_THAN`` asks the worker for (refused if bad)."""
    from pydantic import ValidationError

    from eventpile.commands.base import explain
    from eventpile.commands.retention import Purge

    horizon = os.environ.get("EVENTPILE_PURGE_OLDER_THAN", "")
    try:
        return Purge(older_than=horizon) if horizon else None
    except ValidationError as error:
        raise ValueError(f"EVENTPILE_PURGE_OLDER_THAN={horizon}: {explain(error)}") from None


@commands.command("support-bundle")
def support_bundle(ctx: typer.Context, file: Path) -> None:
    """Write what tech support needs, every private value replaced by a pseudonym."""
    from eventpile.commands.support import write_bundle

    s = settings(ctx)
    with opened(s) as application:
        report = write_bundle(application, file)
    data = {"file": str(file), **asdict(report)}
    emit(
        s,
        data,
        f"Wrote {file}: {report.operations:,} operations, {report.events:,} events, "
        f"{report.size:,} bytes (private values pseudonymised)",
    )
