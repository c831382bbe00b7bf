"""The ``eventpile`` command line. Heavy modules are imported inside commands."""

from commands.cli.main import main

__all__ = ["main"]
