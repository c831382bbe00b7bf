"""``log``, ``show``, ``rebuild``, ``verify`` and ``demo``."""

from __future__ import annotations

import time
from typing import Any

import typer

from eventpile.commands.cli.core import (
    MAX_COUNT,
    console,
    emit,
    opened,
    passphrase,
    progress_bar,
    settings,
)
from eventpile.store.errors import StoreError

commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""


@commands.command()
def log(
    ctx: typer.Context,
    limit: int = typer.Option(
        20, "--limit", "-n", min=1, max=MAX_COUNT, help="At most this many operations."
    ),
) -> None:
    """The most recent operations, newest first."""
    from eventpile.projections.operations import recent

    s = settings(ctx)
    with opened(s) as application:
        records = recent(application.current("operations"), limit)
        here = application.keyring.installation_id.hex
    emit(s, {"operations": records}, lambda: _print_log(records, here))


def _print_log(records: list[dict[str, Any]], here: str) -> None:
    """A table of operations; ``from`` names the installation that requested one (by
    the start of its id) where it is not this one (see ``eventpile sync``)."""
    from rich.table import Table

    table = Table("id", "when", "from", "command", "status", "elapsed", "message")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["requested_at"]))
        elapsed = "" if r["elapsed_s"] is None else f"{r['elapsed_s']:.3f}s"
        origin = "" if r["origin"] in (None, here) else r["origin"][:8]
        table.add_row(r["id"][:12], when, origin, r["command"], r["status"], elapsed, r["message"])
    console().print(table)


@commands.command()
def show(
    ctx: typer.Context,
    operation_id: str,
    private: bool = typer.Option(False, "--private", help="Show private data too."),
) -> None:
    """One operation: how it was invoked, its result or error, the events it wrote."""
    from eventpile.commands.operations import find_operation
    from eventpile.projections.operations import events_of, find

    s = settings(ctx)
    with opened(s) as application:
        found = find_operation(application, operation_id).id.hex
        db = application.current("operations")
        record = {**find(db, found, private=private)[0], "events": events_of(db, found)}
    emit(s, record, lambda: console().print_json(data=record, default=str))


@commands.command()
def rebuild(
    ctx: typer.Context,
    name: str = typer.Argument("", help="One projection (default: all)."),
) -> None:
    """Rebuild projections from the log, side by side, then swap them in."""
    from eventpile.projections.base import rebuild_together

    s = settings(ctx)
    with opened(s) as application:
        names = [name] if name else list(application.views)
        unknown = set(names) - set(application.views)
        if unknown:
            raise ValueError(f"no projection {name!r} (known: {', '.join(application.views)})")
        damage = application.check_log()
        if damage:  # a fold of it would be a history that was not the one written
            raise StoreError(
                f"{damage[0]}: nothing was rebuilt ('eventpile verify' says all it finds)"
            )
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


@commands.command()
def verify(ctx: typer.Context) -> None:
    """Check that the log is whole (no event deleted, changed, moved or added, not cut
    short), every event decrypts, every projection equals its rebuild, and no view holds
    what its domain's rules forbid."""
    s = settings(ctx)
    with opened(s) as application:
        damage = application.check_log()
        if damage:  # what follows would read a history that is not the one written
            data = {"ok": False, "log": {"sealed": True, "damage": damage}}
            emit(s, data, lambda: console().print("\n".join(damage), markup=False))
            raise typer.Exit(1)
        events = sum(1 for _ in application.all_events())
        views = {name: view.verify(application) for name, view in application.views.items()}
        damaged = {name for name, view in application.views.items() if view.remade}
        problems = [p for v in application.views.values() for p in v.projection.problems(v.db)]
    ok = all(views.values()) and not problems
    data = {
        "ok": ok,
        "log": {"sealed": damage is not None, "damage": []},
        "events": events,
        "projections": views,
        "problems": problems,
    }

    def show() -> None:
        out = console()
        out.print(
            "the log is whole: every event is where its seal says"
            if damage is not None
            else "the log has no seals yet (written by an earlier version): the next "
            "command that writes seals it as it is"
        )
        out.print(
            f"{events:,} events decrypt; "
            + ", ".join(
                f"{n}: {'DAMAGED' if n in damaged else 'ok' if v else 'DIFFERS'}"
                for n, v in views.items()
            )
        )
        for problem in problems:
            out.print(problem, markup=False)

    emit(s, data, show)
    if not ok:
        raise typer.Exit(1)


@commands.command()
def init(ctx: typer.Context) -> None:
    """Create an encrypted home: a new data key, wrapped by your passphrase."""
    from eventpile.store.home import Home

    s = settings(ctx)
    keyring = Home(s.home, s.database_url).init(passphrase(confirm=True))
    data = {"home": str(s.home), "installation_id": str(keyring.installation_id)}
    emit(s, data, f"Initialised {s.home}")


@commands.command()
def purge(
    ctx: typer.Context,
    older_than: str = typer.Option(
        ..., "--older-than", help="A horizon: 90d, 12h, 30m, 0s (s, m, h, d, w)."
    ),
) -> None:
    """Delete the history of operations that finished before the horizon (what they
    changed stays), and give its space back."""
    from eventpile.commands.retention import Purge

    command = Purge(older_than=older_than)  # refused here, before the home is opened
    s = settings(ctx)
    with opened(s) as application:
        operation = application.purge(command)
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)
