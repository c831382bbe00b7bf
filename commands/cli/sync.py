"""``sync``, ``join`` and ``serve``: installations of one user exchange their events
through a folder (see :mod:`eventpile.commands.sync`), or over HTTP; ``serve`` also
serves the feed as a live web page (see :mod:`eventpile.commands.web`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from eventpile.commands.cli.core import (
    application_class,
    emit,
    opened,
    passphrase,
    progress_bar,
    settings,
    unlock,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.types import ASGIApp

    from eventpile.commands.app import Application
    from eventpile.commands.cli.core import Settings
    from eventpile.store.home import Home
    from eventpile.store.keys import Keyring

commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""

FOLDER = typer.Argument(
    ...,
    help="A folder every installation reaches (a shared or synced folder, a USB stick), "
    "or the address another installation's `eventpile serve --sync` printed.",
)


@commands.command()
def sync(ctx: typer.Context, folder: str = FOLDER) -> None:
    """Exchange events with the other installations that sync through FOLDER (or with
    the installation at its address)."""
    _exchange(ctx, folder, None)


@commands.command()
def join(ctx: typer.Context, folder: str = FOLDER) -> None:
    """Make the home (a new one) another installation of the user who syncs through
    FOLDER: its keys, opened with their passphrase, and everything the others have."""
    from eventpile.commands.sync import is_url
    from eventpile.store.errors import StoreError
    from eventpile.store.home import Home
    from eventpile.store.keys import unwrap_keys
    from eventpile.store.remote import fetch_key_file
    from eventpile.store.segments import KEYS

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    if home.exists():
        raise StoreError(f"{home.path} is already an eventpile home: `eventpile sync` it")
    if is_url(folder):
        data, where = fetch_key_file(folder), folder.partition("?")[0]
    elif (Path(folder) / KEYS).is_file():
        data, where = (Path(folder) / KEYS).read_bytes(), folder
    else:
        raise StoreError(
            f"{folder} has no {KEYS}: run `eventpile sync {folder}` on an installation first"
        )
    secret = passphrase()
    keyring = home.init(secret, unwrap_keys(data, secret, where))
    _exchange(ctx, where, (home, keyring))


def _exchange(ctx: typer.Context, folder: str, unlocked: tuple[Home, Keyring] | None) -> None:
    from eventpile.commands.sync import said

    s = settings(ctx)
    with opened(s, unlocked) as application, progress_bar(s, "Syncing") as update:
        operation = application.sync(folder, update)
    data, line = said(operation)
    emit(s, data, lambda: typer.echo(line))
    if operation.retry_at is not None:
        raise typer.Exit(1)


@commands.command()
def serve(
    ctx: typer.Context,
    sync: bool = typer.Option(False, "--sync", help="Answer other installations' syncs."),
    host: str = typer.Option("127.0.0.1", help="The address to listen on."),
    port: int = typer.Option(8765, min=0, max=65535, help="The port (0: any free one)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in a browser."),
) -> None:
    """Serve this installation over HTTP until stopped (Ctrl-C): the feed as a live web
    page (its address, with a one-time token, is printed); with --sync, other
    installations of the user sync with it instead (`eventpile sync ADDRESS`)."""
    import secrets
    import socket
    import sys

    import uvicorn

    s = settings(ctx)
    home, keyring = unlock(s)
    token = secrets.token_urlsafe(16)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.create_server((host, port), family=family)
    bound = listening.getsockname()[1]
    address = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"eventpile: listening on {host}: anyone who reaches it may try", file=sys.stderr)
    if sync:
        web, done = _sync_server(s, home, keyring, token)
        said = (
            f"Serving sync at {address} (Ctrl-C stops)\n"
            f"A new installation joins with: eventpile join '{address}?token={token}'"
        )
        data = {"address": address, "join": f"{address}?token={token}"}
    else:
        from eventpile.commands.web import Web, hosts_of

        page = Web(
            lambda: application_class(s.application)(home, keyring),
            token,
            hosts_of(host, bound),
        )
        web, done = page.asgi(), (lambda: None)
        said = f"Serving the feed at {address}?token={token} (Ctrl-C stops)"
        data = {"address": address, "open": f"{address}?token={token}"}
    emit(s, data, lambda: typer.echo(said))
    sys.stdout.flush()
    if open_page and not sync:
        import tempfile
        import webbrowser

        from eventpile.commands.web import opener

        webbrowser.open(opener(f"{address}?token={token}", Path(tempfile.gettempdir())).as_uri())
    try:
        # an open page's stream never ends by itself: stopping waits a second for it
        config = uvicorn.Config(web, log_level="warning", timeout_graceful_shutdown=1)
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        done()


def _sync_server(
    s: Settings, home: Home, keyring: Keyring, token: str
) -> tuple[ASGIApp, Callable[[], None]]:
    """The sync server of ``home`` (see :mod:`eventpile.commands.serve`), and what closes
    it: its application lives in one thread."""
    from eventpile.commands.serve import sync_server

    folder = home.path / "sync"
    folder.mkdir(mode=0o700, exist_ok=True)
    one = ThreadPoolExecutor(max_workers=1)
    held: list[Application] = []

    def run() -> dict[str, object]:
        if not held:
            held.append(application_class(s.application)(home, keyring))
        return dict(held[0].sync(folder).result)

    def done() -> None:
        if held:
            one.submit(held[0].close).result()
        one.shutdown()

    web = sync_server(
        folder,
        keyring.purpose_key("sync over http"),
        token,
        home.key_file,
        lambda: one.submit(run).result(),
    )
    return web, done
