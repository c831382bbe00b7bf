"""Several processes at once on one home: commands that race for the same records
decide again on the fresh state and succeed; none fails in database words, none is
lost or recorded twice, and the log stays whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventpile.mail.synthetic import write_mbox
from tests.conftest import PASSPHRASE, cli

PROCESSES = 4
"""Processes tagging (and one importing beside them)."""
COMMANDS = 6
RACER = """
import sys
from eventpile.mail.cli import main
for n in range(int(sys.argv[1])):
    action = "add" if n % 2 == 0 else "remove"
    code = main(["tag", action, "shared", "*"])
    if code:
        sys.exit(code)
"""


def test_processes_tagging_the_same_messages_at_once_all_succeed(
    home_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli(["import", str(write_mbox(tmp_path / "m.mbox", 60, seed=5))], capsys)[0] == 0
    assert cli(["tag", "add", "shared", "nosuchwordanywhere"], capsys)[0] == 0  # the tag
    more = write_mbox(tmp_path / "more.mbox", 100, seed=6)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(COMMANDS)],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    racers.append(
        subprocess.Popen(
            [str(Path(sys.executable).with_name("eventpile")), "import", str(more)],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    for racer in racers:
        _out, err = racer.communicate(timeout=300)
        assert (racer.returncode, err) == (0, ""), err
    code, log, _ = cli(["log", "-n", "100"], capsys)
    tagging = [op for op in log["operations"] if op["command"] == "TagMessages"]
    assert len(tagging) == 1 + PROCESSES * COMMANDS
    assert {op["status"] for op in tagging} == {"complete"}
    assert len({op["id"] for op in tagging}) == len(tagging)
    assert cli(["search", ""], capsys)[1]["total"] == 160  # and the import beside them
    code, verified, _ = cli(["verify"], capsys)
    assert (code, verified["ok"], verified["log"]["damage"]) == (0, True, [])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def home_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    """A new home, on SQLite files or in a fresh PostgreSQL database."""
    monkeypatch.setenv("EVENTPILE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    where = (
        ["--database-url", request.getfixturevalue("pg_url")] if request.param == "postgres" else []
    )
    assert cli([*where, "init"], capsys)[0] == 0
    return tmp_path / "home"


UNDOER = """
import sys
from pathlib import Path
from typing import Any
from eventpile import DomainError
from eventpile.commands.undo import Undo
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import TagMessages
from eventpile.store.home import Home
home = Home(Path(sys.argv[1]))
app = MailApplication(home, home.unlock(sys.argv[2]))
for n in range(int(sys.argv[3])):
    done = app.execute(TagMessages(action="add", tag="shared", query="*"))
    try:
        app.execute(Undo(operation_id=done.id))
    except DomainError as refused:  # a later change to the same messages: said in words
        print("refused:", refused)
    app.submit(TagMessages(action="add", tag="later", query="subject:a*"))
app.close()
"""
WORKER = """
import sys, time
from pathlib import Path
from eventpile.commands.worker import Worker
from eventpile.mail.app import MailApplication
from eventpile.store.home import Home
home, stop = Home(Path(sys.argv[1])), Path(sys.argv[3])
app = MailApplication(home, home.unlock(sys.argv[2]))
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    last = stop.exists()  # the others are done: drain what is left, then stop
    ran = Worker(app).drain()
    if last and not ran:
        sys.exit(0)
    app.wait_for_events(app.max_position(), 0.2)
sys.exit("the worker did not finish in 120 s")
"""


def test_undos_submissions_and_a_worker_at_once(
    home_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two processes tag and undo the same messages and submit work that two workers
    drain: every operation ends in one state (run once), none in database words."""
    assert cli(["import", str(write_mbox(tmp_path / "m.mbox", 40, seed=9))], capsys)[0] == 0
    for tag in ("shared", "later"):
        assert cli(["tag", "add", tag, "nosuchwordanywhere"], capsys)[0] == 0
    args, stop = [str(home_env), PASSPHRASE], tmp_path / "stop"
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, *args, str(stop)], **_PIPES)
        for _ in range(2)
    ]
    undoers = [
        subprocess.Popen([sys.executable, "-c", UNDOER, *args, "4"], **_PIPES) for _ in range(2)
    ]
    for process in [*undoers, *workers]:
        if process is workers[0]:
            stop.touch()
        _out, err = process.communicate(timeout=300)
        assert (process.returncode, err) == (0, ""), err
    code, log, _ = cli(["log", "-n", "200"], capsys)
    statuses = {op["status"] for op in log["operations"]}
    assert statuses <= {"complete", "undone"}, statuses
    tagging = [op for op in log["operations"] if op["command"] == "TagMessages"]
    assert len(tagging) == 2 + 2 * 4 * 2  # the two tags, and each undoer's adds and submissions
    assert len({op["id"] for op in tagging}) == len(tagging)
    assert {op["attempts"] for op in tagging} == {1}  # no submission run twice
    code, verified, _ = cli(["verify"], capsys)
    assert (code, verified["ok"]) == (0, True)


_PIPES: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
