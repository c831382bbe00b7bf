"""Entry point: run the Typer app; every error is one line on stderr."""

from __future__ import annotations

import os
import sys

import click

from commands.cli import admin, mail, operations, undo  # noqa: F401  (they register their commands)
from commands.cli.core import app

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error, a usage error too, is one line on stderr."""
    try:
        code = app(args=argv, prog_name="eventpile", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # Typer has printed the help
        return e.exit_code
    except click.ClickException as e:
        sys.stderr.write(f"eventpile: {_usage(e)}\n")
        return e.exit_code
    except click.Abort:
        sys.stderr.write("eventpile: aborted\n")
        return EXIT_ERROR
    except Exception as e:
        sys.stderr.write(f"eventpile: {_explain(e)}\n")
        if os.environ.get("EVENTPILE_DEBUG"):
            raise
        return EXIT_ERROR
    if code == EXIT_INTERRUPTED:
        sys.stderr.write("eventpile: interrupted (what was written before stays written)\n")
    return code if isinstance(code, int) else 0


def _usage(error: click.ClickException) -> str:
    """A usage error in one line, with where to find help."""
    message = " ".join(error.format_message().split())
    ctx = getattr(error, "ctx", None)
    return message if ctx is None else f"{message} (see '{ctx.command_path} --help')"


def _explain(error: Exception) -> str:
    """The one-line message of an error; unexpected ones say so."""
    from pydantic import ValidationError

    from commands.app import CommandFailed, Conflict
    from commands.base import explain
    from store.errors import StoreError

    if isinstance(error, ValidationError):
        return explain(error)
    if isinstance(error, StoreError | CommandFailed | Conflict | ValueError | OSError):
        return str(error)
    if isinstance(error, _database_errors()):
        return f"the database refused: {error} (is the home damaged, or not writable?)"
    return f"internal error: {type(error).__name__}: {error} (EVENTPILE_DEBUG=1 shows where)"


def _database_errors() -> tuple[type[Exception], ...]:
    """The database drivers' own errors, of those this process loaded."""
    import sqlite3

    drivers = (("sqlcipher3.dbapi2", "DatabaseError"), ("psycopg", "Error"))
    loaded = [getattr(sys.modules[m], name) for m, name in drivers if m in sys.modules]
    return (sqlite3.DatabaseError, *loaded)


def run() -> None:
    sys.exit(main())
