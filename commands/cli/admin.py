"""``log``, ``show``, ``rebuild``, ``verify`` and ``demo``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from commands.cli.core import MAX_COUNT, app, console, emit, opened, progress_bar, settings


@app.command()
def log(
    ctx: typer.Context,
    limit: int = typer.Option(
        20, "--limit", "-n", min=1, max=MAX_COUNT, help="At most this many operations."
    ),
) -> None:
    """The most recent operations, newest first."""
    from projections.operations import recent

    s = settings(ctx)
    with opened(s) as application:
        records = recent(application.current("operations"), limit)
    emit(s, {"operations": [_public(r) for r in records]}, lambda: _print_log(records))


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("private") and k != "error"}


def _print_log(records: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("id", "when", "command", "status", "elapsed", "message")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["requested_at"]))
        elapsed = "" if r["elapsed_s"] is None else f"{r['elapsed_s']:.3f}s"
        table.add_row(r["id"][:12], when, r["command"], r["status"], elapsed, r["message"])
    console().print(table)


@app.command()
def show(
    ctx: typer.Context,
    operation_id: str,
    private: bool = typer.Option(False, "--private", help="Show private data too."),
) -> None:
    """One operation: how it was invoked, its result or error, the events it wrote."""
    from commands.operations import find_operation
    from projections.operations import events_of, find

    s = settings(ctx)
    with opened(s) as application:
        found = find_operation(application, operation_id).id.hex
        db = application.current("operations")
        record = find(db, found)[0]
        record = {**(record if private else _public(record)), "events": events_of(db, found)}
    emit(s, record, lambda: console().print_json(data=record, default=str))


@app.command()
def rebuild(
    ctx: typer.Context,
    name: str = typer.Argument("", help="One projection (default: all)."),
) -> None:
    """Rebuild projections from the log, side by side, then swap them in."""
    from projections.base import rebuild_together

    s = settings(ctx)
    with opened(s) as application:
        names = [name] if name else list(application.views)
        unknown = set(names) - set(application.views)
        if unknown:
            raise ValueError(f"no projection {name!r} (known: {', '.join(application.views)})")
        with progress_bar(s, f"Rebuilding {', '.join(names)}") as update:
            reports = rebuild_together(
                [application.view(each) for each in names],
                application,
                lambda done, total: update(done, total, ""),
            )
    data = {
        "projections": {
            n: {"events": r.events, "elapsed_s": r.elapsed_s} for n, r in reports.items()
        }
    }

    def show_reports() -> None:
        for n, r in reports.items():
            console().print(f"{n}: {r.events:,} events")
        elapsed = max((r.elapsed_s for r in reports.values()), default=0.0)
        console().print(f"in {elapsed:.2f}s, each event read and decrypted once for all")

    emit(s, data, show_reports)


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check that every event decrypts and every projection equals its rebuild."""
    s = settings(ctx)
    with opened(s) as application:
        events = sum(1 for _ in application.all_events())
        views = {name: view.verify(application) for name, view in application.views.items()}
        damaged = {name for name, view in application.views.items() if view.remade}
    ok = all(views.values())
    data = {"ok": ok, "events": events, "projections": views}
    emit(
        s,
        data,
        lambda: console().print(
            f"{events:,} events decrypt; "
            + ", ".join(
                f"{n}: {'DAMAGED' if n in damaged else 'ok' if v else 'DIFFERS'}"
                for n, v in views.items()
            )
        ),
    )
    if not ok:
        raise typer.Exit(1)


@app.command()
def demo(
    ctx: typer.Context,
    messages: int = typer.Option(2000, "--messages", min=1, help="Synthetic messages to import."),
) -> None:
    """A tour in a throwaway home: import, search, tag, the operation log."""
    from commands.synthetic import write_mbox

    s = settings(ctx)
    out = console()
    with tempfile.TemporaryDirectory(prefix="eventpile-demo-") as tmp:
        os.environ["EVENTPILE_PASSPHRASE"] = "demo passphrase"
        home = Path(tmp) / "home"
        mbox = write_mbox(Path(tmp) / "demo.mbox", messages, seed=1)
        steps: list[tuple[str, list[str]]] = [
            ("Create an encrypted home", ["init"]),
            (f"Import {messages:,} synthetic messages", ["import", str(mbox)]),
            ("Import again: every message is known", ["import", str(mbox)]),
            ("Search", ["search", "-n", "5", "kernel"]),
            ("Tag what matched", ["tag", "add", "kernel", "kernel"]),
            ("Search by tag and date", ["search", "-n", "3", "tag:kernel after:2024-06-01"]),
            ("Undo the tagging: compensating events, as an operation", ["undo"]),
            ("Search by tag again: the tag is gone", ["search", "-n", "3", "tag:kernel"]),
            ("The operation log", ["log", "-n", "5"]),
            ("The notification feed: one entry per operation", ["feed"]),
            ("Verify: every event decrypts, every view equals its rebuild", ["verify"]),
        ]
        from commands.cli.main import main

        done: list[dict[str, Any]] = []
        for title, argv in steps:
            if not s.json:
                out.rule(f"[bold]{title}[/]  eventpile {' '.join(argv)}")
                code = main(["--home", str(home), *argv])
            else:  # one document in all: each step's, in a list
                with contextlib.redirect_stdout(io.StringIO()) as printed:
                    code = main(["--json", "--home", str(home), *argv])
                result = json.loads(printed.getvalue()) if not code else None
                done.append({"title": title, "command": ["eventpile", *argv], "result": result})
            if code:
                raise typer.Exit(code)
        if s.json:
            emit(s, {"steps": done}, "")
