"""Running a command line: every error is one line on stderr."""

from __future__ import annotations

import os
import signal
import sys

import click
import typer

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(cli: typer.Typer, argv: list[str] | None = None, prog_name: str = "eventpile") -> int:
    """Run ``cli`` (see :func:`~eventpile.commands.cli.core.command_line`) on ``argv``; every
    error, a usage error too, is one line on stderr. The exit status."""
    signal.signal(signal.SIGTERM, _terminated)  # TERM ends a command as Ctrl-C does
    try:
        code = cli(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # Typer has printed the help
        return e.exit_code
    except click.ClickException as e:
        sys.stderr.write(f"{prog_name}: {printable(_usage(e))}\n")
        return e.exit_code
    except click.Abort:
        sys.stderr.write(f"{prog_name}: aborted\n")
        return EXIT_ERROR
    except Exception as e:
        sys.stderr.write(f"{prog_name}: {one_line(e)}\n")
        if os.environ.get("EVENTPILE_DEBUG"):
            raise
        return EXIT_ERROR
    if code == EXIT_INTERRUPTED:
        sys.stderr.write(f"{prog_name}: interrupted (what was written before stays written)\n")
    return code if isinstance(code, int) else 0


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("terminated")


def _usage(error: click.ClickException) -> str:
    """A usage error in one line, with where to find help (a suggestion once: Typer's
    message has it already, and click adds it again)."""
    full = error.format_message()
    added = full.removeprefix(error.message).strip()
    message = " ".join((error.message if added and added in error.message else full).split())
    ctx = getattr(error, "ctx", None)
    return message if ctx is None else f"{message} (see '{ctx.command_path} --help')"


def one_line(error: Exception) -> str:
    """The one-line message of an error (see :func:`printable`); unexpected ones say so."""
    return printable(_message(error))


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\r``, ``\\x1b``): what a user
    typed, or a file held, can neither break the line nor drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _message(error: Exception) -> str:
    from pydantic import ValidationError

    from eventpile.commands.base import explain
    from eventpile.commands.dispatcher import CommandFailed
    from eventpile.commands.eventlog import Conflict
    from eventpile.store.errors import StoreError

    if isinstance(error, ValidationError):
        return explain(error)
    if isinstance(error, StoreError | CommandFailed | Conflict | ValueError | OSError):
        return str(error)
    if isinstance(error, _database_errors()):
        if "locked" in str(error) or "busy" in str(error):
            return f"the database is busy: {error} (another eventpile process holds it; try again)"
        return f"the database refused: {error} (is the home damaged, or not writable?)"
    return f"internal error: {type(error).__name__}: {error} (EVENTPILE_DEBUG=1 shows where)"


def _database_errors() -> tuple[type[Exception], ...]:
    """The database drivers' own errors, of those this process loaded."""
    import sqlite3

    drivers = (("sqlcipher3.dbapi2", "DatabaseError"), ("psycopg", "Error"))
    loaded = [getattr(sys.modules[m], name) for m, name in drivers if m in sys.modules]
    return (sqlite3.DatabaseError, *loaded)
