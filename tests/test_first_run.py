"""Processes that meet on one home: a view another process holds is waited for, not
taken for damaged, and a database that stays busy is not blamed on the home."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from eventpile.commands.cli.main import one_line
from eventpile.store.views import SQLCipherDB, SQLCipherViewStore
from tests.conftest import PASSPHRASE

KEY = bytes(range(32))


def test_a_view_another_process_is_writing_is_waited_for(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, KEY)
    store.open("v").close()
    writer = SQLCipherDB(store.path("v"), KEY)
    writer.execute("BEGIN EXCLUSIVE")  # as a process creating or catching up the view
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        reader = store.open("v")  # waits for the writer, then opens the same file
        assert reader.execute("SELECT count(*) FROM tracking").fetchone() == (0,)
        reader.close()
    finally:
        release.join()
        writer.close()


def test_a_busy_database_is_not_blamed_on_the_home() -> None:
    line = one_line(sqlite3.OperationalError("database is locked"))
    assert line.startswith("the database is busy: database is locked")
    assert "damaged" not in line and "try again" in line
    assert "damaged" in one_line(sqlite3.DatabaseError("file is not a database"))


ROUNDS = 3


def test_commands_run_at_once_on_a_new_home_all_succeed(tmp_path: Path) -> None:
    """Several first commands at once (read and write, views created by several
    processes together) each end well."""
    home = tmp_path / "home"
    env = {**os.environ, "EVENTPILE_PASSPHRASE": PASSPHRASE}
    run = [sys.executable, "-c", "from eventpile.mail.cli import run; run()", "--home"]
    for n in range(ROUNDS):
        where = f"{home}{n}"
        subprocess.run([*run, where, "init"], env=env, check=True, capture_output=True)
        commands = [["ops"], ["log"], ["feed"], ["worker", "--once"], ["tags"], ["verify"]]
        processes = [
            subprocess.Popen(
                [*run, where, "--json", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for argv in commands
        ]
        for argv, process in zip(commands, processes, strict=True):
            _out, err = process.communicate(timeout=120)
            assert (process.returncode, err) == (0, ""), argv
