"""What every CLI command shares: the Typer app, options, output, opening a home."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import typer

if TYPE_CHECKING:
    from eventpile.commands.app import Application
    from eventpile.store.home import Home
    from eventpile.store.keys import Keyring

MAX_COUNT = 2**63 - 1
"""The largest ``--limit``: what SQLite and PostgreSQL take in a LIMIT clause."""


def utf8(value: Any) -> Any:
    """An argument that is recorded or searched for must be text (not undecodable bytes)."""
    if value is not None:
        try:
            str(value).encode()
        except UnicodeEncodeError:
            raise typer.BadParameter(f"{str(value)!r} is not valid UTF-8") from None
    return value


@dataclass
class Settings:
    """The global options, and the application the command line runs."""

    application: type[Application] | str
    """Its class, or where it is (``"package.module:Class"``, imported when a command
    opens it: commands that do not, such as a search of a view, start faster)."""
    home: Path
    json: bool
    database_url: str | None = None
    served: str | None = None
    """What the agent that ``unlock`` starts answers (see :func:`command_line`)."""


def command_line(
    application: type[Application] | str,
    *parts: typer.Typer,
    about: str,
    served: str | None = None,
) -> typer.Typer:
    """The command line of ``application`` (a class, or ``"package.module:Class"``): the
    framework's commands (operations, undo, the log, rebuild, verify, unlock and lock,
    passwd, sync and join)
    and those of ``parts``, each a Typer of commands. ``served`` (``"module:function"``)
    answers, in the agent, what a command sends it with
    :func:`eventpile.store.agent_protocol.run`: ``function(home, keyring, document)``."""
    from eventpile.commands.cli import admin, operations, session, sync, undo

    cli = typer.Typer(
        help=about, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )

    @cli.callback()
    def options(
        ctx: typer.Context,
        home: Path | None = typer.Option(
            None, "--home", envvar="EVENTPILE_HOME", help="Data directory (default: per-user)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
        database_url: str | None = typer.Option(
            None,
            "--database-url",
            envvar="EVENTPILE_DATABASE_URL",
            help="postgresql://user@host/dbname: keep the events and views in PostgreSQL "
            "(saved by init; the keys stay in the home).",
        ),
    ) -> None:
        from eventpile.store.home import default_home

        ctx.obj = Settings(
            application=application,
            home=home or default_home(),
            json=as_json,
            database_url=database_url,
            served=served,
        )

    framework = (admin, operations, undo, session, sync)
    for part in (*(module.commands for module in framework), *parts):
        cli.registered_commands += part.registered_commands
        cli.registered_groups += part.registered_groups
    return cli


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def passphrase(*, confirm: bool = False) -> str:
    return _secret("EVENTPILE_PASSPHRASE", "Passphrase", confirm)


def new_passphrase() -> str:
    return _secret("EVENTPILE_NEW_PASSPHRASE", "New passphrase", confirm=True)


def _secret(variable: str, prompt: str, confirm: bool) -> str:
    """The value of the environment ``variable``, else asked in the terminal (twice if
    ``confirm``)."""
    value = os.environ.get(variable)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise click.ClickException(f"set {variable}, or run in a terminal to be asked")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


def unlock(s: Settings) -> tuple[Home, Keyring]:
    """The home and its keys: from its agent if one answers (``eventpile unlock``), else
    opened with the passphrase."""
    from eventpile.store import agent
    from eventpile.store.home import Home

    home = Home(s.home, s.database_url)
    return home, agent.keyring(home) or home.unlock(passphrase())


@contextmanager
def opened(s: Settings, unlocked: tuple[Home, Keyring] | None = None) -> Iterator[Application]:
    """The application on an unlocked home, closed afterwards (saying which views it
    found damaged and made anew)."""
    home, keyring = unlocked or unlock(s)
    application = application_class(s.application)(home, keyring)
    try:
        yield application
    finally:
        application.close()
        for view in application.views.values():
            if view.remade is not None:
                print(f"eventpile: {view.remade}: made anew from the log", file=sys.stderr)


def application_class(application: type[Application] | str) -> type[Application]:
    if not isinstance(application, str):
        return application
    module, _, name = application.partition(":")
    loaded: type[Application] = getattr(import_module(module), name)
    return loaded


def emit(s: Settings, data: Any, human: Callable[[], None] | str) -> None:
    """Print ``data`` as JSON with ``--json``, else the human rendering."""
    if s.json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    elif callable(human):
        human()
    else:
        console().print(human)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@contextmanager
def progress_bar(s: Settings, label: str) -> Iterator[Callable[[int, int | None, str], None]]:
    """A rich progress bar on stderr (nothing with ``--json``); yields its update function."""
    if s.json or not sys.stderr.isatty():
        yield lambda done, total, message: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None, message: str) -> None:
            bar.update(task, completed=done, total=total)

        yield update
