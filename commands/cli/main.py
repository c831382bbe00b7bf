"""Entry point: run the Typer app; every expected error is one line on stderr."""

from __future__ import annotations

import os
import sys

from commands.cli import admin, mail, operations, undo  # noqa: F401  (they register their commands)
from commands.cli.core import app

EXIT_ERROR = 1


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; usage errors are Typer's, every other error one line on stderr."""
    try:
        app(args=argv, prog_name="eventpile")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    except Exception as e:
        sys.stderr.write(f"eventpile: {_explain(e)}\n")
        if os.environ.get("EVENTPILE_DEBUG"):
            raise
        return EXIT_ERROR
    return 0


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
    return f"internal error: {type(error).__name__}: {error} (EVENTPILE_DEBUG=1 shows where)"


def run() -> None:
    sys.exit(main())
