"""``init``, ``import``, ``search``, ``tag`` and ``tags``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from commands.cli.core import (
    MAX_COUNT,
    app,
    console,
    emit,
    opened,
    passphrase,
    progress_bar,
    settings,
    unlock,
    utf8,
)

tag_app = typer.Typer(help="Add or remove a tag on the messages matching a query.")
app.add_typer(tag_app, name="tag")


@app.command()
def init(ctx: typer.Context) -> None:
    """Create an encrypted home: a new data key, wrapped by your passphrase."""
    from store.home import Home

    s = settings(ctx)
    keyring = Home(s.home, s.database_url).init(passphrase(confirm=True))
    data = {"home": str(s.home), "installation_id": str(keyring.installation_id)}
    emit(s, data, f"Initialised {s.home}")


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="mbox, .mbox.gz or Maildir", callback=utf8),
) -> None:
    """Index the messages of a mailbox (known messages are skipped)."""
    from commands.mail import ImportMailbox

    s = settings(ctx)
    command = ImportMailbox(path=path)
    with opened(s) as application, progress_bar(s, "Importing") as update:
        operation = application.execute(command, on_progress=update)
    data = {"operation_id": str(operation.id), **operation.result, "elapsed_s": operation.elapsed_s}
    emit(s, data, operation.message)


def index_db(s: Any) -> Any:
    """The message index, brought up to date first if the log has moved on.

    The common case (the index is current) needs no event decoding at all.
    """
    from projections.db import SQLCipherViewStore, read_position, view_store
    from projections.messages_query import INDEX_SCHEMA
    from store.errors import WrongPassphrase

    home, keyring = unlock(s)
    store = view_store(home, keyring)
    try:
        if not isinstance(store, SQLCipherViewStore) or store.path("messages").exists():
            db = store.open("messages")
            if read_position(db, "messages") == (home.log_end(), INDEX_SCHEMA):
                return db
            db.close()
    except WrongPassphrase:  # the key opened the log: the view is damaged, made anew below
        pass
    with opened(s, (home, keyring)) as application:
        application.view("messages").catch_up(application)
    return store.open("messages")


@app.command()
def search(
    ctx: typer.Context,
    query: str = typer.Argument(
        "", help="e.g. 'from:ralf subject:\"mips\" after:2015-01-01'", callback=utf8
    ),
    limit: int = typer.Option(
        20, "--limit", "-n", min=1, max=MAX_COUNT, help="At most this many results."
    ),
) -> None:
    """Search the message index, newest first."""
    from projections.messages_query import parse_query
    from projections.messages_query import search as run_search

    s = settings(ctx)
    parsed = parse_query(query)
    db = index_db(s)
    try:
        found = run_search(db, parsed, limit)
    finally:
        db.close()

    def show() -> None:
        from rich.table import Table

        table = Table("date", "from", "subject", "tags", title=f"{found['total']:,} messages")
        for r in found["results"]:
            table.add_row(r["date"] or "", r["from"], r["subject"], " ".join(r["tags"]))
        console().print(table)

    emit(s, found, show)


def _tag(ctx: typer.Context, action: str, tag: str, query: str) -> None:
    from commands.mail import TagMessages

    s = settings(ctx)
    command = TagMessages.model_validate({"action": action, "tag": tag, "query": query})
    with opened(s) as application:
        operation = application.execute(command)
    emit(s, {"operation_id": str(operation.id), **operation.result}, operation.message)


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


@app.command()
def tags(ctx: typer.Context) -> None:
    """List tags with their message counts."""
    from projections.messages_query import all_tags

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
