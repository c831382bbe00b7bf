"""``python -m examples.contacts``: the address book from the command line.

Uses the home the ``eventpile`` commands use (``EVENTPILE_HOME``, passphrase from
``EVENTPILE_PASSPHRASE`` or a prompt)::

    python -m examples.contacts init                   # a new home
    python -m examples.contacts import FILE            # a contact a line: Name <address>
    python -m examples.contacts find ralf              # by name prefix or address
    python -m examples.contacts undo [OPERATION_ID]    # the latest operation by default
    python -m examples.contacts redo [OPERATION_ID]

``FILE`` is UTF-8 text with one contact a line, ``Name <address>`` or a bare
address; blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import uuid
from typing import Any

from pydantic import ValidationError

from eventpile import (
    Command,
    CommandFailed,
    Home,
    Redo,
    StoreError,
    Undo,
    default_home,
    explain,
)

from . import AddressBook, ImportContacts

COMMANDS: dict[str, type[Command]] = {"import": ImportContacts, "undo": Undo, "redo": Redo}
"""The actions that run a command (their arguments are its fields)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.contacts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("init", help="make a new home (EVENTPILE_HOME)")
    contacts = actions.add_parser("import", help="a contact for each new address of a file")
    contacts.add_argument("path", help="UTF-8 text, a contact a line: 'Name <address>'")
    find = actions.add_parser("find", help="contacts by name prefix or email address")
    find.add_argument("text")
    for verb in ("undo", "redo"):
        action = actions.add_parser(verb, help=f"{verb} an operation (default: the latest)")
        action.add_argument("operation_id", nargs="?", type=uuid.UUID)
    return parser


def _passphrase() -> str:
    passphrase = os.environ.get("EVENTPILE_PASSPHRASE")
    return getpass.getpass("Passphrase: ") if passphrase is None else passphrase


def run(args: argparse.Namespace) -> tuple[Any, str]:
    """The JSON document and the line for people that the action produces."""
    home = Home(default_home())
    if args.action == "init":
        home.init(_passphrase())
        return {"home": str(home.path)}, f"Made a new home in {home.path}"
    command = None
    if args.action in COMMANDS:  # built first: bad input is refused before the home opens
        fields = {k: v for k, v in vars(args).items() if k not in ("action", "json")}
        command = COMMANDS[args.action](**fields)
    book = AddressBook(home, home.unlock(_passphrase()))
    try:
        if command is not None:
            operation = book.execute(command)
            return {"operation_id": str(operation.id), **operation.result}, operation.message
        found = book.find(args.text)
        lines = [f"{c['id'][:12]}  {c['name']}  {', '.join(c['emails'])}" for c in found]
        return {"contacts": found}, "\n".join(lines) or "no contact found"
    finally:
        book.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        data, human = run(args)
    except ValidationError as e:
        sys.stderr.write(f"contacts: {explain(e)}\n")
        return 1
    except (StoreError, CommandFailed, ValueError, OSError) as e:
        sys.stderr.write(f"contacts: {e}\n")
        return 1
    sys.stdout.write((json.dumps(data) if args.json else human) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
