"""``unlock`` and ``lock``: the home's keys held by an agent for a while, so that
commands need no passphrase (see :mod:`eventpile.store.agent`); ``passwd``: a new
passphrase."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from eventpile.commands.cli.core import (
    emit,
    new_passphrase,
    opened,
    passphrase,
    progress_bar,
    settings,
)

MAX_SECONDS = 366 * 86400


def duration(text: str) -> int:
    """The seconds of ``90s``, ``30m``, ``2h`` or ``1d``."""
    from eventpile.commands.durations import parse_duration

    delta = parse_duration(text)
    seconds = 0 if delta is None else int(delta.total_seconds())
    if not 0 < seconds <= MAX_SECONDS:
        raise typer.BadParameter(
            f"{text!r} is not a duration like 90s, 30m, 2h or 1d (at most 366d)"
        )
    return seconds


commands = typer.Typer()
"""Its commands, for :func:`eventpile.commands.cli.core.command_line`."""


@commands.command()
def unlock(
    ctx: typer.Context,
    seconds: int = typer.Option(
        "30m", "--for", parser=duration, metavar="DURATION", help="How long: 90s, 30m, 2h, 1d."
    ),
) -> None:
    """Keep the home's keys in an agent for a while: commands then ask no passphrase."""
    from eventpile.store import agent
    from eventpile.store.home import Home

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    running = agent.start(home, home.unlock(passphrase()), seconds, s.served)
    until = datetime.fromtimestamp(running.expires_at, UTC)
    data = {
        "home": str(home.path),
        "pid": running.pid,
        "seconds": seconds,
        "expires_at": until.isoformat(timespec="seconds"),
    }
    local = until.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    said = f"Unlocked {home.path} until {local} (agent {running.pid})"
    emit(s, data, lambda: typer.echo(said))


@commands.command()
def lock(ctx: typer.Context) -> None:
    """Forget the keys: stop the home's agent."""
    from eventpile.store import agent
    from eventpile.store.home import Home

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    stopped = agent.stop(home)
    data = {"home": str(home.path), "stopped": None if stopped is None else stopped.pid}
    if stopped is None:
        said = f"No agent held the keys of {home.path}"
    else:
        said = f"Locked {home.path}: agent {stopped.pid} forgot the keys"
    emit(s, data, lambda: typer.echo(said))


@commands.command()
def passwd(ctx: typer.Context) -> None:
    """A new passphrase: the keys are wrapped anew (instant, whatever the log's size);
    the old one is refused afterwards. EVENTPILE_NEW_PASSPHRASE gives it to scripts."""
    from eventpile.commands.passphrase import PassphraseChanged, key_file_digest
    from eventpile.store.home import Home

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    old = passphrase()
    keyring = home.unlock(old)  # a wrong one is refused before the new one is asked
    # opened first: it heeds people forgotten elsewhere, which changes the key file
    with opened(s, (home, keyring)) as application:
        home.change_passphrase(old, new_passphrase())
        digest = key_file_digest(home.key_file.read_bytes())
        operation = application.execute(PassphraseChanged(key_file=digest))
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)


@commands.command()
def rekey(ctx: typer.Context) -> None:
    """A new data key: what is written from now on is sealed with it, the log and the
    views are re-encrypted under it (resumable: run it again), then the old key is
    destroyed. Stop other eventpile processes on the home first."""
    from eventpile.commands.rekey import Rekey, refuse_if_syncing
    from eventpile.store import agent
    from eventpile.store.home import Home

    s = settings(ctx)
    home = Home(s.home, s.database_url)
    secret = passphrase()
    with opened(s, (home, home.unlock(secret))) as application:
        refuse_if_syncing(application)
    keyring = home.rekey(secret)
    stopped = agent.stop(home)  # it holds the old key
    with opened(s, (home, keyring)) as application, progress_bar(s, "Re-encrypting") as update:
        operation = application.execute(Rekey(), on_progress=update)
    said = operation.message
    if stopped is not None:
        said += f"; the agent that held the old key stopped (pid {stopped.pid}): unlock again"
    data = {"operation_id": operation.id.hex, **operation.result, "agent_stopped": bool(stopped)}
    emit(s, data, said)


@commands.command()
def forget(
    ctx: typer.Context,
    who: str = typer.Argument(..., help="the person's email address"),
) -> None:
    """Forget a person: what the log holds of them becomes unreadable everywhere (the
    log, the views, copies of the log made before), and reads "[forgotten]". It cannot
    be undone."""
    s = settings(ctx)
    with opened(s) as application:
        operation = application.forget(who)
    emit(s, {"operation_id": operation.id.hex, **operation.result}, operation.message)
