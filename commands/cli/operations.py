"""Operations: ``feed``, ``ops``, ``answer``, ``cancel``, ``retry``, ``worker``, ``send``
and ``support-bundle``."""

from __future__ import annotations

import contextlib
import math
import socket
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from commands.cli.core import MAX_COUNT, app, console, emit, opened, progress_bar, settings, utf8

if TYPE_CHECKING:
    from domain.operation import Operation


def _summary(operation: Operation) -> dict[str, Any]:
    """The public facts of an operation, for ``--json``."""
    from domain.operation import redact

    return redact(operation)


def _line(operation: Operation) -> str:
    """How an operation stands, in one line."""
    line = f"{operation.id}  {operation.status}: {operation.message}"
    if operation.retry_at is not None:
        line += f" (next attempt {operation.retry_at:%Y-%m-%d %H:%M:%S} UTC)"
    if operation.question is not None and operation.status == "waiting":
        choices = " | ".join(operation.question.choices)
        line += f"\n  {operation.question.prompt}\n  eventpile answer {operation.id} {{{choices}}}"
    return line


@app.command()
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
    from commands.operations import renderer_for
    from projections.feed import all_entries
    from projections.feed import feed as feed_entries

    s = settings(ctx)
    with opened(s) as application:
        db = application.current("feed")
        if show_all:
            entries = all_entries(db, private=private)
        else:
            entries = feed_entries(db, recent, private=private)
    if as_html and not s.json:
        items = "\n".join(renderer_for(e["source"]).html(e) for e in entries)
        typer.echo(f'<ul class="feed">\n{items}\n</ul>')
        return

    def show() -> None:
        out = console()
        for e in entries:
            out.print(renderer_for(e["source"]).text(e), markup=False)

    emit(s, {"feed": [renderer_for(e["source"]).json(e) for e in entries]}, show)


@app.command()
def ops(ctx: typer.Context) -> None:
    """The queue: every unfinished operation, with when it is due."""
    from projections.queue import pending

    s = settings(ctx)
    with opened(s) as application:
        queued = pending(application.current("queue"))

    def show() -> None:
        from rich.table import Table

        table = Table("id", "command", "status", "due (UTC)", "attempts", "message")
        for op in queued:
            due = op.due_at
            when = "" if due is None else f"{due:%Y-%m-%d %H:%M:%S}"
            table.add_row(op.id.hex, op.command, op.status, when, str(op.attempts), op.message)
        console().print(table)

    emit(s, {"operations": [_summary(op) for op in queued]}, show)


@app.command()
def answer(ctx: typer.Context, operation_id: str, choice: str) -> None:
    """Answer an operation's question: its choice's command runs as a new operation."""
    from commands.operations import answer as answer_operation
    from commands.operations import find_operation

    s = settings(ctx)
    with opened(s) as application, progress_bar(s, "Running") as update:
        target = find_operation(application, operation_id)
        answered, follow_up = answer_operation(application, target.id, choice, update)
    data = {
        "operation": _summary(answered),
        "follow_up": None if follow_up is None else _summary(follow_up),
    }
    human = _line(answered) + ("" if follow_up is None else "\n" + _line(follow_up))
    emit(s, data, lambda: console().print(human, markup=False))


@app.command()
def cancel(ctx: typer.Context, operation_id: str) -> None:
    """Cancel a pending, scheduled, retrying or waiting operation."""
    from commands.operations import cancel as cancel_operation
    from commands.operations import find_operation

    s = settings(ctx)
    with opened(s) as application:
        state = cancel_operation(application, find_operation(application, operation_id).id)
    emit(s, {"operation": _summary(state)}, lambda: console().print(_line(state), markup=False))


@app.command()
def retry(ctx: typer.Context, operation_id: str) -> None:
    """Run a scheduled or retrying operation now; run a failed one again."""
    from commands.operations import find_operation
    from commands.operations import retry as retry_operation

    s = settings(ctx)
    with opened(s) as application, progress_bar(s, "Running") as update:
        target = find_operation(application, operation_id)
        state = retry_operation(application, target.id, update)
    emit(s, {"operation": _summary(state)}, lambda: console().print(_line(state), markup=False))


@app.command()
def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run what is due now, then exit."),
    poll: float = typer.Option(5.0, "--poll", min=0.1, help="Look for new work this often (s)."),
) -> None:
    """Run due operations (scheduled, retrying, abandoned by a dead worker) until stopped."""
    import threading

    from commands.worker import Ran, Worker

    s = settings(ctx)
    ran: list[Ran] = []

    def report(result: Ran) -> None:
        ran.append(result)
        if not s.json:
            line = f"{result.operation_id}  {result.status}: {result.message}"
            console().print(line, markup=False)

    with opened(s) as application:
        runner = Worker(application, report)
        if once:
            runner.drain()
        else:
            # Ctrl-C stops it; an operation it interrupts is taken up when its lease ends
            with contextlib.suppress(KeyboardInterrupt):
                runner.serve(threading.Event(), poll)
    if s.json:
        emit(s, {"ran": [asdict(r) for r in ran]}, "")


MAX_DELAY_MIN = 60 * 24 * 366 * 100
"""The longest ``send --after``: a hundred years, in minutes."""


def _all_utf8(values: list[str]) -> list[str]:
    return [utf8(value) for value in values]


def _a_number(minutes: float) -> float:
    if math.isnan(minutes):
        raise typer.BadParameter(f"{minutes} is not a number")
    return minutes


@app.command()
def send(
    ctx: typer.Context,
    to: list[str] = typer.Option(
        ..., "--to", help="A recipient (repeat for more).", callback=_all_utf8
    ),
    subject: str = typer.Option(..., "--subject", help="The subject line.", callback=utf8),
    body_file: Path = typer.Option(..., "--body-file", help="The text of the message (UTF-8)."),
    sender: str = typer.Option(
        "",
        "--from",
        envvar="EVENTPILE_FROM",
        help="The sender (default: you@this host).",
        callback=utf8,
    ),
    after: float = typer.Option(
        0.0,
        "--after",
        min=0.0,
        max=MAX_DELAY_MIN,
        help="Send after this many minutes (the worker sends it).",
        callback=_a_number,
    ),
) -> None:
    """Compose a message and send it over SMTP (EVENTPILE_SMTP=host:port).

    A failure to connect, or a temporary refusal, is retried by the worker.
    """
    from commands.send import SendMail, SmtpConfig

    s = settings(ctx)
    SmtpConfig.from_env()
    try:
        body = body_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{body_file} is not UTF-8 text (byte {e.start})") from None
    command = SendMail.compose(sender or _default_sender(), to, subject, body)
    with opened(s) as application:
        if after:
            when = application.clock() + timedelta(minutes=after)
            state = application.submit(command, run_after=when)
        else:
            state = application.execute(command)
    emit(s, {"operation": _summary(state)}, lambda: console().print(_line(state), markup=False))


def _default_sender() -> str:
    import getpass

    return f"{getpass.getuser()}@{socket.gethostname()}"


@app.command("support-bundle")
def support_bundle(ctx: typer.Context, file: Path) -> None:
    """Write what tech support needs, every private value replaced by a pseudonym."""
    from commands.support import write_bundle

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
