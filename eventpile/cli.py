"""eventpile's command-line kit: what an application's own command line imports.

:func:`command_line` makes an application's Typer command line: the framework's
commands (``init``, ``log``, ``show``, ``feed``, ``ops``, ``answer``, ``cancel``,
``retry``, ``worker``, ``undo``, ``redo``, ``rebuild``, ``verify``,
``support-bundle``, ``unlock``, ``lock``, ``passwd``, ``rekey``, ``sync``, ``join``, ``serve``,
``purge``)
and the application's own, each a Typer of
commands (the application given as a class, or as ``"package.module:Class"`` to be
imported only by the commands that open it); :func:`main` runs it with every error
on one line (:func:`one_line` is that line). Inside a command, :func:`settings` gives
the global options, :func:`opened` the application on the unlocked home, :func:`emit`
prints JSON or text; :func:`sync_said` is what ``sync`` prints of a sync operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventpile.commands.cli.core import (
    MAX_COUNT,
    Settings,
    command_line,
    console,
    emit,
    opened,
    passphrase,
    progress_bar,
    settings,
    unlock,
    utf8,
)
from eventpile.commands.cli.main import main, one_line
from eventpile.commands.cli.operations import line, summary

if TYPE_CHECKING:
    from eventpile.domain.operation import Operation

__all__ = [
    "MAX_COUNT",
    "Settings",
    "command_line",
    "console",
    "emit",
    "line",
    "main",
    "one_line",
    "opened",
    "passphrase",
    "progress_bar",
    "settings",
    "summary",
    "sync_said",
    "unlock",
    "utf8",
]


def sync_said(operation: Operation) -> tuple[dict[str, Any], str]:
    """What ``sync`` prints of a sync operation: its JSON document and its line (loaded
    when asked: importing this kit loads no application)."""
    from eventpile.commands.sync import said

    return said(operation)
