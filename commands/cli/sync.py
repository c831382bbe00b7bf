"""``sync`` and ``join``: installations of one user exchange their events through a
folder (see :mod:`eventpile.commands.sync`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from eventpile.commands.cli.core import emit, opened, passphrase, progress_bar, settings

if TYPE_CHECKING:
    from eventpile.store.home import Home
    from eventpile.store.keys import Keyring

commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""

FOLDER = typer.Argument(
    ..., help="A folder every installation reaches: a shared or synced folder, a USB stick."
)


@commands.command()
def sync(ctx: typer.Context, folder: Path = FOLDER) -> None:
    """Exchange events with the other installations that sync through FOLDER."""
    _exchange(ctx, folder, None)


@commands.command()
def join(ctx: typer.Context, folder: Path = FOLDER) -> None:
    """Make the home (a new one) another installation of the user who syncs through
    FOLDER: its keys, opened with their passphrase, and everything the others have."""
    from eventpile.store.errors import StoreError
    from eventpile.store.home import Home
    from eventpile.store.keys import open_key_file
    from eventpile.store.segments import KEYS

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    if home.exists():
        raise StoreError(f"{home.path} is already an eventpile home: `eventpile sync` it")
    if not (folder / KEYS).is_file():
        raise StoreError(
            f"{folder} has no {KEYS}: run `eventpile sync {folder}` on an installation first"
        )
    secret = passphrase()
    keyring = home.init(secret, open_key_file(folder / KEYS, secret))
    _exchange(ctx, folder, (home, keyring))


def _exchange(ctx: typer.Context, folder: Path, unlocked: tuple[Home, Keyring] | None) -> None:

    s = settings(ctx)
    with opened(s, unlocked) as application, progress_bar(s, "Syncing") as update:
        operation = application.sync(folder, update)
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)
