"""A new passphrase, recorded as an operation of its own.

The keys are wrapped anew by the command line (:meth:`eventpile.store.home.Home.change_passphrase`)
before this command runs, and neither passphrase is ever part of a command: commands
are recorded. The command names the key file it leaves behind (its SHA-256), and its
handler refuses to record a change the home's key file does not show.
"""

from __future__ import annotations

import hashlib

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.domain.aggregate import DomainError


def key_file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PassphraseChanged(Command):
    """The home's keys are wrapped by a new passphrase (an undo is another change)."""

    undoable = False
    key_file: str
    """The SHA-256 of the key file the change wrote."""

    def describe(self) -> str:
        return "Change the passphrase"


@handles(PassphraseChanged)
def passphrase_changed(command: PassphraseChanged, ctx: Context) -> Outcome:
    if key_file_digest(ctx.app.home.key_file.read_bytes()) != command.key_file:
        raise DomainError("the home's key file is not the one this change wrote")
    return Outcome(
        "Passphrase changed: the keys are wrapped by the new one (the old one is refused)",
        {"keys": len(ctx.app.keyring.keys)},
    )
