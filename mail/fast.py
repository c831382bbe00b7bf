"""The ``eventpile`` command's entry point, with fast paths for ``--json search`` and,
while an agent holds the keys, ``sync``.

A search is the command scripts and mail clients run most, and a whole process of it
spent a third of its time importing the command-line framework (typer and click).
The fast path reads ``eventpile [--json] [--home DIR] --json search [-n N] [--offset N]
[--sort newest|oldest] [--threads] [QUERY]`` itself and answers from a current index
with the keys of the agent or ``EVENTPILE_PASSPHRASE``. Anything else — other commands,
``--help``, an option it does not know, a bad value, an index to bring up to date, a
passphrase to ask, any error — goes to the full command line
(:mod:`eventpile.mail.cli`), which prints the same help and errors as always: a
search reads only, so running it there again changes nothing. The agent answers a
search in a plain run (:func:`eventpile.agent_run_plain`: this process loads no json);
with the passphrase, scrypt runs in a thread while the search loads
(:func:`eventpile.unlocking`). Once it has printed, the process ends at once.

``eventpile [--json] [--home DIR] sync FOLDER`` and ``eventpile --json [--home DIR]
tag add|remove TAG QUERY`` are run by the home's agent (``eventpile unlock``), which
has the application loaded, when one runs: what they print, and their exit status,
are the full command line's. Without an agent, they are the full command line's.
"""

from __future__ import annotations

import _thread
import os
import sys

TYPE_CHECKING = False  # as typing's: a search's process imports no typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, NoReturn

INTERRUPTED = 130
SYNC_WAIT_S = 24 * 3600.0
"""How long a sync run by the agent may take."""
SEARCH_OPTIONS = {"-n": "limit", "--limit": "limit", "--offset": "offset", "--sort": "sort"}


def run() -> None:
    argv = sys.argv[1:]
    try:
        parsed = _read(argv)
        printed = None
        if parsed is not None:
            home = _home_dir(parsed[0])
            printed = _served(home, argv) or _fast_search(home, parsed[1], parsed[2])
        else:
            _synced_by_agent(argv)
            _tagged_by_agent(argv)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except Exception:  # the full command line says what went wrong, as it does
        printed = None
    if printed is None:
        from eventpile.mail.cli import run as full

        full()
    else:
        _print_and_end(printed)


def _print_and_end(printed: bytes) -> NoReturn:
    """Print ``printed`` and end the process at once: nothing is left open (a search
    closes its view), and the interpreter's teardown of what the search loaded would
    take a tenth of the process."""
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(printed)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # its reader is gone (`| head`, say): nothing more to say
        os._exit(1)
    os._exit(0)


def _home_dir(given: str | None) -> str:
    """The home the search is of: ``--home``, else ``EVENTPILE_HOME`` (read here, so that
    asking the agent loads no store), else the per-user default."""
    if given is not None:
        return os.path.realpath(given)
    configured = os.environ.get("EVENTPILE_HOME")
    if configured:  # as default_home reads it
        return os.path.realpath(os.path.expanduser(configured))
    from eventpile import default_home

    return str(default_home().resolve())


def _served(home: str, argv: list[str]) -> bytes | None:
    """What the search prints, from the home's agent (which has the keys and the search
    loaded: :func:`serve`), if one runs; None to look here. A plain run: this process
    loads neither json nor socket (a third of it)."""
    from eventpile import agent_run_plain

    return agent_run_plain(home, b"\0".join(map(os.fsencode, argv)))


def _printed(found: dict[str, Any]) -> bytes:
    """A search's JSON document as the command line prints it."""
    import json

    return (json.dumps(found, default=str) + "\n").encode()


def _synced_by_agent(argv: list[str]) -> None:
    """Have the home's agent run the sync ``argv`` asks for, print what it says, and
    exit; return if there is no agent, or the sync is not one the agent runs."""
    found = _command(argv, "sync")
    if found is None or len(found[2]) != 1 or found[2][0].startswith("-"):
        return
    if "EVENTPILE_DATABASE_URL" in os.environ:
        return  # another store than the agent's, maybe
    home, as_json, (where,) = found
    if not where.startswith(("http://", "https://")):
        where = os.path.join(os.getcwd(), where)  # the agent's working directory is not ours
    import json

    from eventpile import agent_run

    answer = agent_run(_home_dir(home), {"sync": where}, SYNC_WAIT_S)
    if not isinstance(answer, dict) or not ({"said", "error"} & answer.keys()):
        return
    if "error" in answer:
        _fail(answer["error"])
    sys.stdout.write(json.dumps(answer["data"]) + "\n" if as_json else answer["said"] + "\n")
    sys.exit(1 if "retry_at" in answer["data"] else 0)


def _tagged_by_agent(argv: list[str]) -> None:
    """Have the home's agent run the ``--json tag add|remove TAG QUERY`` of ``argv``,
    print what it says, and exit; return if there is no agent, or ``argv`` asks for
    anything else (an option, say: the full command line reads those)."""
    found = _command(argv, "tag")
    if found is None or "EVENTPILE_DATABASE_URL" in os.environ:
        return
    home, as_json, args = found
    if not as_json or len(args) != 3 or args[0] not in ("add", "remove"):
        return
    if any(arg.startswith("-") or not arg.isprintable() for arg in args):
        return  # an option, or text the full command line refuses in its own words
    import json

    from eventpile import AgentUnanswered, agent_run

    try:
        answer = agent_run(_home_dir(home), {"tag": args}, SYNC_WAIT_S, once=True)
    except AgentUnanswered:
        _fail(
            "the agent took the tagging but did not answer (it stopped?): "
            "'eventpile log' says whether it ran"
        )
    if not isinstance(answer, dict) or answer.get("served") != "tag":
        return  # no agent, one of an earlier version, or one with other keys: it ran nothing
    for note in answer.get("notes", ()):
        sys.stderr.write(f"eventpile: {note}: made anew from the log\n")
    if "error" in answer:
        _fail(answer["error"])
    sys.stdout.write(json.dumps(answer["data"], default=str) + "\n")
    sys.exit(0)


def _fail(said: str) -> NoReturn:
    """End as the full command line ends on an error: its one line, and status 1."""
    sys.stderr.write(f"eventpile: {said}\n")
    sys.exit(1)


def serve(home: Path, keyring: Any, document: dict[str, Any] | bytes) -> Any:
    """In the agent: for a plain run of a search's arguments (NUL-separated), what the
    search prints, or nothing to leave it to the command; for ``{"sync": FOLDER}``,
    what the sync's command line prints (:func:`_sync`); for ``{"tag": [ACTION, TAG,
    QUERY]}``, what ``--json tag`` prints (:func:`_tag`); for ``{"search": ARGUMENTS}``
    (a client of an earlier version), ``{"found": None}``: it searches itself."""
    if isinstance(document, bytes):
        return _search(home, keyring, [os.fsdecode(arg) for arg in document.split(b"\0")])
    if "sync" in document:
        return _sync(home, keyring, document["sync"])
    if "tag" in document:
        return _tag(home, keyring, *document["tag"])
    return {"found": None}


def _search(home: Path, keyring: Any, argv: list[str]) -> bytes:
    """In the agent: what the search ``argv`` asks for prints; nothing to leave it to the
    command (another home, an index to bring up to date)."""
    parsed = _read(argv)
    if parsed is None or (parsed[0] is not None and os.path.realpath(parsed[0]) != str(home)):
        return b""
    from eventpile import Home

    found = _answer(Home(home), lambda: keyring, parsed[1], parsed[2])
    return b"" if found is None else _printed(found)


def _sync(home: Path, keyring: Any, where: str) -> dict[str, Any]:
    """In the agent: ``{"data", "said"}`` of a sync with ``where``, or ``{"error"}``."""
    from eventpile import Home
    from eventpile.cli import one_line, sync_said
    from eventpile.mail.app import MailApplication

    app = MailApplication(Home(home), keyring)
    try:
        data, line = sync_said(app.sync(where))
    except Exception as error:
        return {"error": one_line(error)}
    finally:
        app.close()
    return {"data": data, "said": line}


def _tag(home: Path, keyring: Any, action: str, tag: str, query: str) -> dict[str, Any]:
    """In the agent: ``{"served": "tag"}`` with ``data``, a tagging as ``--json tag``
    prints it, or its ``error``; with ``notes``, the views found damaged and made anew
    (``served`` is None if the keys are no longer the home's). One tagging at
    a time, on an application kept open (as a worker's is: each command catches it up
    with what other processes wrote); one that fails is closed."""
    from eventpile import Home, agent_holds
    from eventpile.cli import one_line
    from eventpile.mail.commands import TagMessages

    if not agent_holds(Home(home), keyring):
        return {"served": None}  # the key file has other keys now: the command line's to say
    try:
        command = TagMessages.model_validate({"action": action, "tag": tag, "query": query})
    except Exception as error:
        return {"served": "tag", "error": one_line(error)}
    with _TAGGING:
        try:
            app = _kept_app(home, keyring)
            operation = app.execute(command)
        except Exception as error:
            app = _KEPT.pop(home, None)
            if app is not None:
                app.close()
            return {"served": "tag", "error": one_line(error), "notes": _remade(app)}
        return {
            "served": "tag",
            "data": {"operation_id": operation.id.hex, **operation.result},
            "notes": _remade(app),
        }


_TAGGING = _thread.allocate_lock()  # threading's lock (a search imports no threading)
_KEPT: dict[Path, Any] = {}
"""The application the agent tags with, by home (it has one)."""


def _kept_app(home: Path, keyring: Any) -> Any:
    app = _KEPT.get(home)
    if app is None:
        from eventpile import Home
        from eventpile.mail.app import MailApplication

        app = _KEPT[home] = MailApplication(Home(home), keyring)
    return app


def _remade(app: Any) -> list[str]:
    """What views of ``app`` were found damaged and made anew since it last said so."""
    if app is None:
        return []
    found = [view.remade for view in app.views.values() if view.remade is not None]
    for view in app.views.values():
        view.remade = None
    return found


def _fast_search(home_dir: str, query: str, options: dict[str, Any]) -> bytes | None:
    """What the search prints, found here; None to leave it to the full command line."""
    from eventpile import unlocking

    passphrase = os.environ.get("EVENTPILE_PASSPHRASE")
    # scrypt begins before anything else loads, and runs while it loads (on the other core)
    unlocked = None
    if passphrase is not None:
        from contextlib import suppress

        with suppress(Exception):  # no key file, say: the agent's keys may do, else the full
            unlocked = unlocking(home_dir, passphrase)  # command line says what is wrong
    from pathlib import Path

    from eventpile import Home

    home = Home(Path(home_dir), os.environ.get("EVENTPILE_DATABASE_URL"))
    keyring = None
    if home.agent_socket.exists():  # an agent's keys come before the passphrase's
        from eventpile import agent_keyring

        keyring = agent_keyring(home)
    keys = unlocked if keyring is None else lambda: keyring
    if keys is None:
        return None  # to be asked in a terminal
    found = _answer(home, keys, query, options)
    return None if found is None else _printed(found)


def _answer(
    home: Any, keys: Callable[[], Any], query: str, options: dict[str, Any]
) -> dict[str, Any] | None:
    """The search's JSON document from a current index; None if it is not current."""
    from eventpile.mail.query import parse_query, search, threads

    parsed = parse_query(query)
    db = current_index(home, keys)
    if db is None:
        return None
    try:
        limit, offset, sort = int(options["limit"]), int(options["offset"]), options["sort"]
        if options["threads"]:
            return threads(db, parsed, limit, offset, sort)
        return search(db, parsed, limit, offset, sort, snippets=True)
    finally:
        db.close()


def _command(argv: list[str], name: str) -> tuple[str | None, bool, list[str]] | None:
    """``(home, --json, the arguments after it)`` of ``eventpile [--json] [--home DIR]
    NAME ...``; None for anything else."""
    home: str | None = None
    as_json = False
    args = iter(argv)
    for arg in args:
        if arg == "--json":
            as_json = True
        elif arg == "--home":
            home = next(args)
        elif arg == name:
            return home, as_json, list(args)
        else:
            return None
    return None


def _read(argv: list[str]) -> tuple[str | None, str, dict[str, Any]] | None:
    """``(home, query, options)`` of a ``--json search`` that the fast path reads; None
    for anything else."""
    found = _command(argv, "search")
    if found is None:
        return None
    home, as_json, rest = found
    args = iter(rest)
    options: dict[str, Any] = {"limit": "20", "offset": "0", "sort": "newest", "threads": False}
    queries = []
    for arg in args:
        if arg in SEARCH_OPTIONS:
            options[SEARCH_OPTIONS[arg]] = next(args)
        elif arg == "--threads":
            options["threads"] = True
        elif arg.startswith("-") and arg != "-":
            return None  # --help, --, a negation: the full command line reads those
        else:
            queries.append(arg)
    valid = (
        options["limit"].isdigit()
        and int(options["limit"]) >= 1
        and options["offset"].isdigit()
        and options["sort"] in ("newest", "oldest")
        and len(queries) <= 1
    )
    if not as_json or not valid or "EVENTPILE_DATABASE_URL" in os.environ:
        return None
    return home, queries[0] if queries else "", options


def current_index(home: Any, keys: Callable[[], Any]) -> Any:
    """The message index of ``home`` if it is current (found without decoding any
    event); None if it must be brought up to date (or made anew) first. ``keys()`` is
    asked for the keyring last (it may be unlocking meanwhile)."""
    from eventpile import DamagedView, read_position
    from eventpile.mail.query import INDEX_SCHEMA

    backend = home.backend()
    end = backend.log_end()
    store = backend.view_store(keys())
    try:
        if store.exists("messages"):
            db = store.open("messages")
            if read_position(db, "messages") == (end, INDEX_SCHEMA):
                return db
            db.close()
    except DamagedView:  # the key opened the log: the view is damaged, made anew later
        pass
    return None
