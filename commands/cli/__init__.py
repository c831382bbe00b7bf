"""The framework's command line: an application's is built by
:func:`~eventpile.commands.cli.core.command_line`. Heavy modules are imported inside
commands."""
