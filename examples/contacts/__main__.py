"""``python -m examples.contacts``: the address book from the command line.

Opens the home the ``eventpile`` command uses (``EVENTPILE_HOME``, passphrase
from ``EVENTPILE_PASSPHRASE`` or a prompt)::

    python -m examples.contacts import ['from:ralf']   # contacts from mail senders
    python -m examples.contacts find ralf               # by name prefix or address
    python -m examples.contacts undo [OPERATION_ID]     # the latest operation by default
    python -m examples.contacts redo [OPERATION_ID]
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

from . import AddressBook, ImportSenders

COMMANDS: dict[str, type[Command]] = {"import": ImportSenders, "undo": Undo, "redo": Redo}
"""The actions that run a command (their arguments are its fields)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.contacts", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    actions = parser.add_subparsers(dest="action", required=True)
    senders = actions.add_parser("import", help="a contact for each sender without one")
    senders.add_argument("query", nargs="?", default="", help="only senders of matching mail")
    find = actions.add_parser("find", help="contacts by name prefix or email address")
    find.add_argument("text")
    for verb in ("undo", "redo"):
        action = actions.add_parser(verb, help=f"{verb} an operation (default: the latest)")
        action.add_argument("operation_id", nargs="?", type=uuid.UUID)
    return parser


def _open() -> AddressBook:
    home = Home(default_home())
    passphrase = os.environ.get("EVENTPILE_PASSPHRASE")
    if passphrase is None:
        passphrase = getpass.getpass("Passphrase: ")
    return AddressBook(home, home.unlock(passphrase))


def run(args: argparse.Namespace) -> tuple[Any, str]:
    """The JSON document and the line for people that the action produces."""
    book = _open()
    try:
        if args.action in COMMANDS:
            fields = {k: v for k, v in vars(args).items() if k not in ("action", "json")}
            operation = book.execute(COMMANDS[args.action](**fields))
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
