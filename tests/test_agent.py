"""``eventpile unlock`` and ``lock``: an agent holds a home's keys for a while, and every
command asks it before the passphrase. Real processes throughout; every wait is on a
condition, with a deadline; no agent outlives its test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventpile.commands.cli.session import duration
from eventpile.mail.synthetic import write_mbox
from eventpile.store import agent
from eventpile.store.agent_protocol import PLAIN, SOCKET, plain_answer, received, run_plain
from eventpile.store.home import Home
from eventpile.store.keys import Keyring, _hkdf
from tests.conftest import FULL, GOES_ON, PASSPHRASE, eventpile_process

WAIT_S = 30.0
MESSAGES = 6
NO_PASSPHRASE = "set EVENTPILE_PASSPHRASE, or run in a terminal to be asked"


def eventpile(
    home: Home, *argv: str, passphrase: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``eventpile ARGV`` on ``home`` through its console script's entry point."""
    return eventpile_process(home, *argv, passphrase=passphrase, timeout=WAIT_S * 4)


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document of a command that succeeded."""
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return json.loads(done.stdout)


def error(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a command that failed (and printed nothing else)."""
    lines = done.stderr.splitlines()
    assert done.returncode != 0 and done.stdout == "", done
    assert len(lines) == 1 and lines[0].startswith("eventpile: "), done.stderr
    return lines[0]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {WAIT_S} s"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Is process ``pid`` running (not gone, not a zombie)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


Unlock = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def unlock() -> Iterator[Unlock]:
    """``eventpile --json unlock ARGS`` on a home (with the passphrase unless told); at the
    end of the test, the agent of every home it unlocked is stopped, and every agent it
    started that still runs is killed."""
    started: list[tuple[Home, int]] = []

    def unlock(home: Home, *args: str, passphrase: str = PASSPHRASE) -> Any:
        done = eventpile(home, "--json", "unlock", *args, passphrase=passphrase)
        if done.returncode == 0:
            started.append((home, json.loads(done.stdout)["pid"]))
        return done

    yield unlock
    for home, pid in started:
        agent.stop(home)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def mailbox(home: Home, keyring: Keyring, tmp_path: Path) -> Home:
    """``home`` with a few messages imported."""
    mbox = write_mbox(tmp_path / "mail.mbox", MESSAGES, seed=3)
    assert ok(eventpile(home, "--json", "import", str(mbox), passphrase=PASSPHRASE))["indexed"]
    return home


def test_commands_ask_no_passphrase_while_the_home_is_unlocked(
    mailbox: Home, unlock: Unlock
) -> None:
    started = ok(unlock(mailbox, "--for", "10m"))
    assert started["home"] == str(mailbox.path) and started["seconds"] == 600
    expires_in = datetime.fromisoformat(started["expires_at"]) - datetime.now(UTC)
    assert 590 < expires_in.total_seconds() <= 600 and alive(started["pid"])
    assert ok(eventpile(mailbox, "--json", "search", ""))["total"] == MESSAGES
    tagged = ok(eventpile(mailbox, "--json", "tag", "add", "seen", ""))
    assert tagged["changed"] == MESSAGES
    tags = ok(eventpile(mailbox, "--json", "tags"))["tags"]
    assert {"name": "seen", "messages": MESSAGES}.items() <= tags[0].items()
    human = eventpile(mailbox, "unlock", passphrase=PASSPHRASE)  # another, for 30 minutes
    assert human.returncode == 0 and len(human.stdout.splitlines()) == 1
    assert human.stdout.startswith(f"Unlocked {mailbox.path} until ")


def test_the_agent_runs_a_sync_as_the_command_line_does(
    mailbox: Home, unlock: Unlock, tmp_path: Path
) -> None:
    folder, missing = tmp_path / "folder", tmp_path / "missing"
    folder.mkdir()
    ok(unlock(mailbox))
    synced = ok(eventpile(mailbox, "--json", "sync", str(folder)))  # no passphrase given
    assert synced["status"] == "complete" and synced["sent"] > 0
    again = eventpile(mailbox, "sync", str(folder))
    assert (again.returncode, again.stdout) == (0, synced_line(0, 0))
    refused = eventpile(mailbox, "sync", str(missing))
    assert refused.returncode == 1
    assert refused.stderr == f"eventpile: {missing} is not a folder: make it (or mount it) first\n"
    syncs = [
        r for r in ok(eventpile(mailbox, "--json", "log"))["operations"] if r["command"] == "Sync"
    ]
    assert [r["status"] for r in syncs] == ["failed", "complete", "complete"]


def test_the_agent_runs_a_tagging_as_the_command_line_does(mailbox: Home, unlock: Unlock) -> None:
    """What ``--json tag add|remove`` prints, and its errors, are the full command line's;
    the process that asks the agent loads neither the application nor typer."""

    def tagging(*argv: str, entry: str | None = None) -> subprocess.CompletedProcess[str]:
        if entry is None:
            return eventpile(mailbox, "--json", "tag", *argv)
        return eventpile_process(
            mailbox, "--json", "tag", *argv, entry=entry, passphrase=PASSPHRASE
        )

    runs = [("add", "seen", "patch"), ("remove", "seen", "patch"), ("add", "seen", "a OR")]
    ok(tagging("add", "seen", "", entry=FULL))  # the tag exists, on no message, before both
    ok(tagging("remove", "seen", "", entry=FULL))
    expected = [tagging(*argv, entry=FULL) for argv in runs]
    ok(unlock(mailbox))
    served = [tagging(*argv) for argv in runs]
    for mine, theirs in zip(served, expected, strict=True):
        assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
        if mine.returncode == 0:
            data, want = json.loads(mine.stdout), json.loads(theirs.stdout)
            assert len(data.pop("operation_id")) == len(want.pop("operation_id")) == 32
            assert data == want and data["changed"] > 0
        else:
            assert mine.stdout == theirs.stdout == ""
    found = loaded(mailbox, ["--json", "tag", "add", "seen", "patch"], HEAVY)
    assert found.stdout.splitlines()[-1] == "[]", found.stderr
    assert json.loads(found.stdout.splitlines()[0])["changed"] > 0


HEAVY = ("sqlcipher3", "eventpile.mail.commands", "eventpile.mail.query", "typer", "pydantic")
"""Modules a process that the agent answers does not load."""


def loaded(
    home: Home, argv: list[str], modules: tuple[str, ...]
) -> subprocess.CompletedProcess[str]:
    """``eventpile ARGV`` through the fast path, printing after it which of ``modules``
    it loaded (not the interpreter's start: an editable install's hook loads some)."""
    probe = (
        f"import sys; sys.argv = ['eventpile', *{argv!r}]; started = set(sys.modules)\n"
        f"{GOES_ON}"
        "from eventpile.mail.fast import run\n"
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {modules!r} if m in set(sys.modules) - started])"
    )
    return eventpile_process(home, entry=probe, timeout=WAIT_S * 4)


def test_a_tagging_the_agent_takes_long_over_runs_once(mailbox: Home, unlock: Unlock) -> None:
    """Longer than the agent is asked for keys (another process holds the log for 3 s):
    the process waits for the agent's answer, and does not run the tagging again."""
    ok(unlock(mailbox))
    holder = sqlite3.connect(mailbox.events_db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(3.0, holder.rollback).start()
    tagged = ok(eventpile(mailbox, "--json", "tag", "add", "late", ""))
    holder.close()
    assert tagged["changed"] == MESSAGES
    operations = ok(eventpile(mailbox, "--json", "log"))["operations"]
    assert [r["id"] for r in operations if r["command"] == "TagMessages"] == [
        tagged["operation_id"]
    ]


def earlier_serve(home: Path, keyring: Keyring, document: dict[str, Any]) -> dict[str, Any]:
    """What an agent of the version before taggings answers a tagging."""
    return {"found": None, "query": document["search"]}


def test_an_agent_of_an_earlier_version_leaves_the_tagging_to_the_command_line(
    mailbox: Home, keyring: Keyring
) -> None:
    agent.start(mailbox, keyring, 60, "tests.test_agent:earlier_serve")
    try:
        tagged = ok(eventpile(mailbox, "--json", "tag", "add", "seen", ""))
        assert tagged["changed"] == MESSAGES
    finally:
        agent.stop(mailbox)


def test_an_agent_of_an_earlier_version_leaves_the_search_to_the_command(
    mailbox: Home, keyring: Keyring
) -> None:
    """Its service is asked a plain run it cannot read (it fails on it): the command
    searches itself, with the keys the agent gives."""
    expected = eventpile_process(mailbox, "--json", "search", "", entry=FULL, passphrase=PASSPHRASE)
    agent.start(mailbox, keyring, 60, "tests.test_agent:earlier_serve")
    try:
        found = eventpile(mailbox, "--json", "search", "")
        assert (found.returncode, found.stdout) == (0, expected.stdout) and ok(found)["total"]
    finally:
        agent.stop(mailbox)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"", None),  # an agent without plain runs closes without a word
        (plain_answer(b""), None),  # nothing to say: the client does without
        (plain_answer(b"found\n"), b"found\n"),
        (plain_answer(b"found\n")[:-1], None),  # cut short: the agent was killed
        (plain_answer(b"found\n") + b"more", None),
    ],
)
def test_a_plain_run_is_its_answer_whole_or_none(
    tmp_path: Path, sent: bytes, expected: bytes | None
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / SOCKET))
        listener.listen(1)

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                assert received(connection) == PLAIN + b"ask"
                connection.sendall(sent)

        server = threading.Thread(target=answer)
        server.start()
        assert run_plain(tmp_path, b"ask") == expected
        server.join()


def synced_line(sent: int, received: int) -> str:
    return f"Synced with 0 other installations: {sent:,} events sent, {received:,} received\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "search", "patch OR fix"],
        ["--json", "search", "-n", "2", "--offset", "1", "--sort", "oldest", ""],
        ["--json", "search", "--threads", "-subject:re"],
        ["--json", "search", "a OR"],  # refused: the full command line says why
    ],
)
def test_the_agent_answers_a_search_as_the_command_line_does(
    mailbox: Home, unlock: Unlock, argv: list[str]
) -> None:
    expected = eventpile_process(mailbox, *argv, entry=FULL, passphrase=PASSPHRASE)
    ok(unlock(mailbox))
    served = eventpile(mailbox, *argv)
    assert (served.returncode, served.stdout, served.stderr) == (
        expected.returncode,
        expected.stdout,
        expected.stderr,
    )


def test_a_search_the_agent_answers_loads_neither_the_index_nor_the_command_line(
    mailbox: Home, unlock: Unlock
) -> None:
    ok(unlock(mailbox))
    lean = ("eventpile.store.home", "cryptography", "json", "re", "socket", "pathlib", "typing")
    found = loaded(mailbox, ["--json", "search", "patch"], (*HEAVY, *lean))
    assert found.stdout.splitlines()[-1] == "[]", found.stderr
    for view in mailbox.views.glob("messages*"):
        view.unlink()  # not current: the agent leaves it to the command, which makes it anew
    again = eventpile(mailbox, "--json", "search", "")
    assert ok(again)["total"] == MESSAGES


def test_lock_forgets_the_keys(mailbox: Home, unlock: Unlock) -> None:
    pid = ok(unlock(mailbox))["pid"]
    assert ok(eventpile(mailbox, "--json", "lock")) == {"home": str(mailbox.path), "stopped": pid}
    wait_until(lambda: not alive(pid), "stopped")
    assert not mailbox.agent_socket.exists()
    assert error(eventpile(mailbox, "--json", "search", "")) == f"eventpile: {NO_PASSPHRASE}"
    again = eventpile(mailbox, "lock")
    assert (again.returncode, again.stdout) == (0, f"No agent held the keys of {mailbox.path}\n")


def test_an_agent_ends_when_its_time_is_up(mailbox: Home, unlock: Unlock) -> None:
    started = ok(unlock(mailbox, "--for", "1s"))
    assert started["seconds"] == 1
    wait_until(lambda: not alive(started["pid"]), "ended")
    assert not mailbox.agent_socket.exists()
    assert error(eventpile(mailbox, "--json", "tags")) == f"eventpile: {NO_PASSPHRASE}"


def test_an_agent_ends_when_its_home_is_gone(keyring: Keyring, home: Home, unlock: Unlock) -> None:
    pid = ok(unlock(home))["pid"]
    shutil.rmtree(home.path)
    wait_until(lambda: not alive(pid), "ended")


def test_the_socket_is_the_users_alone_and_the_agent_dumps_no_core(
    keyring: Keyring, home: Home, unlock: Unlock
) -> None:
    pid = ok(unlock(home))["pid"]
    mode = home.agent_socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    [core] = [
        line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "core" in line
    ]
    assert core.split()[-3:-1] == ["0", "0"]  # soft and hard limits
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:  # not dumpable: only root may read it
        environment = b""
    assert b"EVENTPILE_PASSPHRASE" not in environment
    assert [p.name for p in home.path.iterdir() if p.name.endswith(".sock")] == ["agent.sock"]


def test_a_home_of_a_path_too_long_for_a_socket_address(tmp_path: Path, unlock: Unlock) -> None:
    home = Home(tmp_path / ("long" * 30) / "home")
    home.init(PASSPHRASE)
    assert len(bytes(home.agent_socket)) > 108  # what a socket address may hold
    ok(unlock(home))
    assert ok(eventpile(home, "--json", "ops")) == {"operations": []}
    assert ok(eventpile(home, "--json", "lock"))["stopped"]


def test_a_wrong_passphrase_starts_no_agent(keyring: Keyring, home: Home, unlock: Unlock) -> None:
    refused = unlock(home, passphrase="wrong")
    assert error(refused) == "eventpile: wrong passphrase (or a damaged key file)"
    assert not home.agent_socket.exists()


@pytest.mark.parametrize("value", ["5x", "0s", "", "-1m", "1.5h", "367d"])
def test_a_bad_duration_is_a_usage_error(
    keyring: Keyring, home: Home, unlock: Unlock, value: str
) -> None:
    line = error(unlock(home, "--for", value))
    assert line.startswith("eventpile: Invalid value for '--for': ")
    assert "like 90s, 30m, 2h or 1d" in line and "(see 'eventpile unlock --help')" in line
    assert not home.agent_socket.exists()


def test_durations() -> None:
    assert [duration(d) for d in ("90s", "30m", "2h", "1d", " 7m ")] == [90, 1800, 7200, 86400, 420]


def test_a_killed_agents_socket_falls_back_to_the_passphrase(mailbox: Home, unlock: Unlock) -> None:
    pid = ok(unlock(mailbox))["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "killed")
    assert mailbox.agent_socket.exists()  # left behind
    found = eventpile(mailbox, "--json", "search", "", passphrase=PASSPHRASE)
    assert ok(found)["total"] == MESSAGES
    assert not mailbox.agent_socket.exists()  # cleaned
    ok(unlock(mailbox))  # and a new agent starts where it was
    assert ok(eventpile(mailbox, "--json", "search", ""))["total"] == MESSAGES


def test_a_second_unlock_replaces_the_agent(keyring: Keyring, home: Home, unlock: Unlock) -> None:
    first = ok(unlock(home, "--for", "10m"))["pid"]
    second = ok(unlock(home, "--for", "2h"))
    assert second["pid"] != first and second["seconds"] == 7200
    wait_until(lambda: not alive(first), "replaced")
    assert ok(eventpile(home, "--json", "ops")) == {"operations": []}
    assert ok(eventpile(home, "--json", "lock"))["stopped"] == second["pid"]


def test_an_agent_serves_its_home_alone(
    keyring: Keyring, home: Home, tmp_path: Path, unlock: Unlock
) -> None:
    other = Home(tmp_path / "other")
    other.init(PASSPHRASE)
    ok(unlock(home))
    assert error(eventpile(other, "--json", "ops")) == f"eventpile: {NO_PASSPHRASE}"
    other.agent_socket.symlink_to(home.agent_socket)  # its socket, in the other home
    assert agent.keyring(home) == keyring
    assert agent.keyring(other) is None  # it answers, with keys the other home has not
    assert error(eventpile(other, "--json", "ops")) == f"eventpile: {NO_PASSPHRASE}"
    assert ok(eventpile(other, "--json", "ops", passphrase=PASSPHRASE)) == {"operations": []}


SYSTEM_PYTHON = "/usr/bin/python3"
"""An interpreter another user may run (this one may live in root's home)."""


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to ask as another user")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON}")
def test_an_agent_answers_its_user_alone(unlock: Unlock) -> None:
    nobody = 65534
    with tempfile.TemporaryDirectory() as tmp:  # a folder the other user can reach
        os.chmod(tmp, 0o755)
        home = Home(Path(tmp) / "home")
        keyring = home.init(PASSPHRASE)
        ok(unlock(home))
        home.path.chmod(0o755)  # let it reach the socket too: the agent still refuses
        home.agent_socket.chmod(0o666)
        asks = (  # as the other user: connect, ask, say how many bytes came back
            "import socket, sys\n"
            "with socket.socket(socket.AF_UNIX) as asking:\n"
            "    asking.connect(sys.argv[1])\n"
            "    try:\n"
            "        asking.sendall(b'keys')\n"
            "        asking.shutdown(socket.SHUT_WR)\n"
            "        got = asking.recv(65536)\n"
            "    except (ConnectionResetError, BrokenPipeError):\n"  # closed on it
            "        got = b''\n"
            "print(len(got))\n"
        )
        said = subprocess.run(
            [SYSTEM_PYTHON, "-c", asks, str(home.agent_socket)],
            user=nobody,
            group=nobody,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert said.stdout.strip() == "0"  # connected, and closed without an answer
        assert agent.keyring(home) == keyring  # its own user is still answered
        ok(eventpile(home, "--json", "lock"))


def test_a_socket_nobody_listens_on_is_removed(keyring: Keyring, home: Home) -> None:
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(home.agent_socket))
    assert agent.keyring(home) is None and agent.stop(home) is None
    assert not home.agent_socket.exists()


def test_purpose_keys_are_hkdf_sha256() -> None:
    """The standard library's HMAC gives what cryptography's HKDF gave (views made before
    stay readable)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for key, purpose in [(bytes(32), "views"), (bytes(range(32)), "message-id"), (b"k" * 32, "")]:
        expected = HKDF(hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)
        assert _hkdf(key, purpose) == expected


def test_a_search_with_the_agent_loads_nothing_heavy(mailbox: Home, unlock: Unlock) -> None:
    ok(unlock(mailbox))
    probe = (
        "import sys; from eventpile.mail.cli import main; code = main(['--json', 'search', 'x']);"
        "heavy = ('pydantic', 'eventsourcing', 'cryptography', 'rich', 'eventpile.mail.app');"
        "print(sorted({m for m in sys.modules for h in heavy if m == h or m.startswith(h + '.')}),"
        " file=sys.stderr); sys.exit(code)"
    )
    done = eventpile_process(mailbox, entry=probe, timeout=WAIT_S)
    assert (done.returncode, done.stderr) == (0, "[]\n")
