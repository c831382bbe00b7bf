"""The ``eventpile`` command: the framework's command line with the mail commands
(``import``, ``search``, ``tag``, ``tags``, ``send``, ``demo``)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import typer

from eventpile.cli import (
    MAX_COUNT,
    command_line,
    console,
    emit,
    line,
    opened,
    progress_bar,
    settings,
    summary,
    unlock,
    utf8,
)
from eventpile.cli import main as run_cli

commands = typer.Typer()
"""The mail commands: added to the framework's in :data:`cli`."""
tag_app = typer.Typer(help="Add or remove a tag on the messages matching a query.")
commands.add_typer(tag_app, name="tag")


@commands.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="mbox, .mbox.gz or Maildir", callback=utf8),
) -> None:
    """Index the messages of a mailbox (known messages are skipped)."""
    from eventpile.mail.commands import ImportMailbox

    s = settings(ctx)
    command = ImportMailbox(path=path)
    with opened(s) as application, progress_bar(s, "Importing") as update:
        operation = application.execute(command, on_progress=update)
    data = {"operation_id": operation.id.hex, **operation.result, "elapsed_s": operation.elapsed_s}
    emit(s, data, operation.message)


def index_db(s: Any) -> Any:
    """The message index, brought up to date first if the log has moved on.

    The common case (the index is current) needs no event decoding at all.
    """
    from eventpile.mail.fast import current_index

    home, keyring = unlock(s)
    db = current_index(home, lambda: keyring)
    if db is not None:
        return db
    with opened(s, (home, keyring)) as application:
        application.view("messages").catch_up(application)
    return home.backend().view_store(keyring).open("messages")


@commands.command()
def search(
    ctx: typer.Context,
    query: str = typer.Argument(
        "",
        help="e.g. 'from:ralf OR from:maciej', 'subject:\"mips\" -tag:done date:2015..' "
        "(the README lists the language)",
        callback=utf8,
    ),
    limit: int = typer.Option(
        20, "--limit", "-n", min=1, max=MAX_COUNT, help="At most this many results."
    ),
    offset: int = typer.Option(0, "--offset", min=0, max=MAX_COUNT, help="Skip this many first."),
    sort: str = typer.Option(
        "newest",
        "--sort",
        click_type=click.Choice(["newest", "oldest"]),
        help="Newest or oldest first.",
    ),
    by_thread: bool = typer.Option(
        False, "--threads", help="One result per thread, with its message count."
    ),
) -> None:
    """Search the message index (with --json, each message has a snippet of its text)."""
    from eventpile.mail.query import Sort, parse_query, threads
    from eventpile.mail.query import search as run_search

    s = settings(ctx)
    parsed = parse_query(query)
    order: Sort = "oldest" if sort == "oldest" else "newest"
    db = index_db(s)
    try:
        if by_thread:
            found = threads(db, parsed, limit, offset, order)
        else:
            found = run_search(db, parsed, limit, offset, order, snippets=s.json)
    finally:
        db.close()

    def show() -> None:
        from rich.table import Table

        if by_thread:
            table = Table("date", "messages", "authors", "subject", "tags")
            for r in found["results"]:
                count = f"{r['matched']}/{r['messages']}"
                table.add_row(
                    r["date"] or "",
                    count,
                    ", ".join(r["authors"]),
                    r["subject"],
                    " ".join(r["tags"]),
                )
            table.title = f"{found['total']:,} threads"
        else:
            table = Table("date", "from", "subject", "tags", title=f"{found['total']:,} messages")
            for r in found["results"]:
                table.add_row(r["date"] or "", r["from"], r["subject"], " ".join(r["tags"]))
        console().print(table)

    emit(s, found, show)


def _tag(ctx: typer.Context, action: str, tag: str, query: str) -> None:
    from eventpile.mail.commands import TagMessages

    s = settings(ctx)
    command = TagMessages.model_validate({"action": action, "tag": tag, "query": query})
    with opened(s) as application:
        operation = application.execute(command)
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)


@tag_app.command("add")
def tag_add(
    ctx: typer.Context,
    tag: str = typer.Argument(..., callback=utf8),
    query: str = typer.Argument(..., callback=utf8),
) -> None:
    """Add TAG to every message matching QUERY (one operation)."""
    _tag(ctx, "add", tag, query)


@tag_app.command("remove")
def tag_remove(
    ctx: typer.Context,
    tag: str = typer.Argument(..., callback=utf8),
    query: str = typer.Argument(..., callback=utf8),
) -> None:
    """Remove TAG from every message matching QUERY (one operation)."""
    _tag(ctx, "remove", tag, query)


@tag_app.command("repair")
def tag_repair(ctx: typer.Context) -> None:
    """Take off memberships an earlier version left on removed tags (see 'verify')."""
    from eventpile.mail.commands import RepairTags

    s = settings(ctx)
    with opened(s) as application:
        operation = application.execute(RepairTags())
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)


@commands.command()
def tags(ctx: typer.Context) -> None:
    """List tags with their message counts."""
    from eventpile.mail.query import all_tags

    s = settings(ctx)
    db = index_db(s)
    try:
        found = all_tags(db)
    finally:
        db.close()

    def show() -> None:
        for t in found:
            console().print(f"{t['messages']:>8,}  {t['name']}")

    emit(s, {"tags": found}, show)


MAX_DELAY_MIN = 60 * 24 * 366 * 100
"""The longest ``send --after``: a hundred years, in minutes."""


def _all_utf8(values: list[str]) -> list[str]:
    return [utf8(value) for value in values]


def _a_number(minutes: float) -> float:
    if math.isnan(minutes):
        raise typer.BadParameter(f"{minutes} is not a number")
    return minutes


@commands.command()
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
    from eventpile.mail.send import SendMail, SmtpConfig

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
    emit(s, {"operation": summary(state)}, lambda: console().print(line(state), markup=False))


def _default_sender() -> str:
    import getpass

    return f"{getpass.getuser()}@{socket.gethostname()}"


@commands.command()
def demo(
    ctx: typer.Context,
    messages: int = typer.Option(2000, "--messages", min=1, help="Synthetic messages to import."),
) -> None:
    """A tour in a throwaway home: import, search, tag, undo, a second installation that
    syncs, the operation log."""
    import tempfile

    from eventpile.mail.synthetic import write_mbox

    s = settings(ctx)
    out = console()
    with tempfile.TemporaryDirectory(prefix="eventpile-demo-") as tmp:
        os.environ["EVENTPILE_PASSPHRASE"] = "demo passphrase"
        home, laptop, folder = Path(tmp) / "home", Path(tmp) / "laptop", Path(tmp) / "sync"
        folder.mkdir()
        mbox = write_mbox(Path(tmp) / "demo.mbox", messages, seed=1)
        there = ["--home", str(laptop)]  # a step on the second installation
        steps: list[tuple[str, list[str]]] = [
            ("Create an encrypted home", ["init"]),
            (f"Import {messages:,} synthetic messages", ["import", str(mbox)]),
            ("Import again: every message is known", ["import", str(mbox)]),
            ("Search", ["search", "-n", "5", "kernel"]),
            ("Search: OR, NOT, a field", ["search", "-n", "3", "(crypto OR sync) -subject:re"]),
            ("Search by thread: one line per thread", ["search", "-n", "3", "--threads", "kernel"]),
            ("Tag what matched", ["tag", "add", "kernel", "kernel"]),
            ("Search by tag and date", ["search", "-n", "3", "tag:kernel after:2024-06-01"]),
            ("Undo the tagging: compensating events, as an operation", ["undo"]),
            ("Search by tag again: the tag is gone", ["search", "-n", "3", "tag:kernel"]),
            ("Sync through a folder (shared, synced, a USB stick)", ["sync", str(folder)]),
            ("A second installation joins: the keys, everything", [*there, "join", str(folder)]),
            ("Tag on the second one, and sync", [*there, "tag", "add", "laptop", "fix"]),
            ("Sync from the second one", [*there, "sync", str(folder)]),
            ("The first takes it", ["sync", str(folder)]),
            ("Search by the tag made on the other", ["search", "-n", "3", "tag:laptop"]),
            ("The operation log", ["log", "-n", "5"]),
            ("The notification feed: one entry per operation", ["feed"]),
            ("Verify: every event decrypts, every view equals its rebuild", ["verify"]),
        ]
        done: list[dict[str, Any]] = []
        for title, argv in steps:
            shown = " ".join(argv).replace(str(laptop), "LAPTOP").replace(tmp + "/", "")
            argv = argv if argv[:1] == ["--home"] else ["--home", str(home), *argv]
            if not s.json:
                out.rule(f"[bold]{title}[/]  eventpile {shown}")
                code = main(argv)
            else:  # one document in all: each step's, in a list
                with contextlib.redirect_stdout(io.StringIO()) as printed:
                    code = main(["--json", *argv])
                result = json.loads(printed.getvalue()) if not code else None
                done.append({"title": title, "command": ["eventpile", *argv], "result": result})
            if code:
                raise typer.Exit(code)
        if s.json:
            emit(s, {"steps": done}, "")


def main(argv: list[str] | None = None) -> int:
    """Run the ``eventpile`` command line on ``argv``; the exit status."""
    return run_cli(cli, argv)


def run() -> None:
    sys.exit(main())


cli = command_line(
    "eventpile.mail.app:MailApplication",
    commands,
    about="An encrypted, event-sourced mail index: every change is a recorded operation.",
    served="eventpile.mail.fast:serve",
)
