"""``eventpile rekey``: a new data key seals what is written next, every event is sealed
anew under it, the views are keyed anew, and the old key is destroyed; a copy of the
old key file opens nothing written or sealed anew after; killed half-way, running it
again finishes; a process that still holds the old key writes nothing; bad input
changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventpile.commands.rekey import Rekey
from eventpile.commands.worker import Worker
from eventpile.domain.events import utcnow
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import TagMessages
from eventpile.mail.synthetic import write_mbox
from eventpile.mail.tag import Tag
from eventpile.projections.queue import pending
from eventpile.store import agent
from eventpile.store.cipher import EventCipher
from eventpile.store.errors import StoreError, TamperedData, WrongPassphrase
from eventpile.store.home import Home
from eventpile.store.keys import open_key_file
from tests.conftest import PASSPHRASE, cli, log_end


def rows(home: Home) -> list[Any]:
    """Every row of the log: ``(position, id, version, topic, state)``."""
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        return app.recorder.select_rows(0, app.max_position(), (), 10**6)  # type: ignore[attr-defined]
    finally:
        app.close()


def key_ids(home: Home) -> list[int]:
    return sorted(int(e["id"]) for e in json.loads(home.key_file.read_text())["keys"])


@pytest.fixture
def imported(cli_env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    """A home with mail and a tag, on each backend."""
    return _with_mail(cli_env, tmp_path, capsys)


@pytest.fixture
def on_sqlite(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Home:
    """The same, on SQLite only: for what only its files hold."""
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    return _with_mail(home, tmp_path, capsys)


def _with_mail(home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    if not home.exists():
        assert cli(["init"], capsys)[0] == 0
    assert cli(["import", str(write_mbox(tmp_path / "m.mbox", 40, seed=4))], capsys)[0] == 0
    assert cli(["tag", "add", "kept", "*"], capsys)[0] == 0
    return home


def test_rekey_seals_everything_anew_and_destroys_the_old_key(
    imported: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    backup = tmp_path / "keys.json.backup"
    backup.write_bytes(imported.key_file.read_bytes())
    found = cli(["search", "tag:kept"], capsys)[1]
    before = rows(imported)
    code, done, err = cli(["rekey"], capsys)
    assert (code, err) == (0, "")
    assert done["key"] == 2 and done["retired"] == [1]
    assert done["resealed"] == len(before) and done["events"] >= len(before)
    assert key_ids(imported) == [2]
    after = rows(imported)
    assert {EventCipher.key_of(r[4]) for r in after} == {2}
    assert cli(["search", "tag:kept"], capsys)[1] == found
    assert cli(["verify"], capsys)[0] == 0
    # the old key file (a backup) with the passphrase opens none of it
    old = EventCipher(open_key_file(backup, PASSPHRASE))
    for _, oid, version, topic, state in after[:50]:
        with pytest.raises(TamperedData, match="data key 2, which these keys lack"):
            old.open(state, oid, version, topic)
    # what is written next is sealed with the new key too
    assert cli(["tag", "add", "later", "*"], capsys)[0] == 0
    assert {EventCipher.key_of(r[4]) for r in rows(imported)} == {2}
    [record] = [o for o in cli(["log"], capsys)[1]["operations"] if o["command"] == "Rekey"]
    assert record["status"] == "complete"


def test_the_views_are_keyed_anew(on_sqlite: Home, capsys: pytest.CaptureFixture[str]) -> None:
    """(PostgreSQL's views are not encrypted yet: nothing to key anew there.)"""
    imported = on_sqlite
    old_key = imported.unlock(PASSPHRASE).views_key()
    assert cli(["rekey"], capsys)[0] == 0
    new_key = imported.unlock(PASSPHRASE).views_key()
    assert new_key != old_key
    import sqlcipher3

    for path in imported.views.glob("*.db"):
        db = sqlcipher3.connect(str(path))
        db.execute(f"PRAGMA key = \"x'{old_key.hex()}'\"")
        with pytest.raises(sqlcipher3.DatabaseError):
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        db.close()
    assert not list(imported.views.glob("*.new*"))


DIES = (
    "import os\n"
    "import eventpile.commands.rekey as r\n"
    "from eventpile.store import postgres_factory, sqlite\n"
    "r.PAGE = 20\n"
    "for recorder in (sqlite.Recorder, postgres_factory.Recorder):\n"
    "    def dying(self, rows, _orig=recorder.replace_states, _n=[0]):\n"
    "        done = _orig(self, rows)\n"
    "        _n[0] += 1\n"
    "        if _n[0] == 2:\n"
    "            os._exit(9)\n"
    "        return done\n"
    "    recorder.replace_states = dying\n"
    "from eventpile.mail.cli import run\n"
    "run()\n"
)
"""``eventpile ARGV`` that dies (``os._exit``, as kill -9) after its second page of 20
events sealed anew."""


def killed_half_way(home: Home) -> None:
    env = {"EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE}
    if home.database_url:
        env["EVENTPILE_DATABASE_URL"] = home.database_url
    killed = subprocess.run(
        [sys.executable, "-c", DIES, "rekey"], env=env, capture_output=True, text=True
    )
    assert killed.returncode == 9, killed.stderr
    assert key_ids(home) == [1, 2]  # both kept: the log is under each
    assert {EventCipher.key_of(r[4]) for r in rows(home)} == {1, 2}


def test_a_rekey_killed_half_way_finishes_when_run_again(
    imported: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    count = len(rows(imported))
    killed_half_way(imported)
    code, done, err = cli(["rekey"], capsys)
    assert (code, err) == (0, "")
    assert 0 < done["resealed"] < count and done["retired"] == [1]
    assert {EventCipher.key_of(r[4]) for r in rows(imported)} == {2}
    assert key_ids(imported) == [2]
    assert cli(["verify"], capsys)[0] == 0


def test_a_rekey_killed_half_way_is_finished_by_the_worker(imported: Home) -> None:
    """The killed attempt is in the log as running, with its progress; once its lease
    has run out, a worker (with the new keys) takes it up and finishes it."""
    killed_half_way(imported)
    keyring = imported.unlock(PASSPHRASE)
    later = MailApplication(imported, keyring, clock=lambda: utcnow() + timedelta(hours=1))
    try:
        [stopped] = [op for op in pending(later.current("queue")) if op.command == "Rekey"]
        assert stopped.status == "running" and stopped.progress is not None
        [ran] = Worker(later).drain()
        assert (ran.operation_id, ran.status) == (stopped.id, "complete")
    finally:
        later.close()
    assert {EventCipher.key_of(r[4]) for r in rows(imported)} == {2}
    assert key_ids(imported) == [2]


def test_a_process_that_holds_the_old_key_writes_nothing(
    imported: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = MailApplication(imported, imported.unlock(PASSPHRASE))
    try:
        assert cli(["rekey"], capsys)[0] == 0
        end = log_end(imported)
        with pytest.raises(StoreError, match="rekey"):
            stale.execute(TagMessages(action="add", tag="stale", query="*"))
        with pytest.raises(StoreError, match="rekey` ran since this process read its keys"):
            stale.append([Tag.create("stale")])  # a write that reads nothing first
        assert log_end(imported) == end
    finally:
        stale.close()


def test_a_wrong_passphrase_changes_nothing(
    imported: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, end = imported.key_file.read_bytes(), log_end(imported)
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", "wrong")
    code, out, err = cli(["rekey"], capsys)
    assert (code, out) == (1, None) and "wrong passphrase" in err
    assert imported.key_file.read_bytes() == keys
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    assert log_end(imported) == end
    with pytest.raises(WrongPassphrase):
        imported.rekey("wrong")


def test_purpose_keys_stay_across_a_rekey(imported: Home) -> None:
    """The message-id key is kept (ids are identities); the others rotate."""
    before = imported.unlock(PASSPHRASE)
    after = imported.rekey(PASSPHRASE)
    app = MailApplication(imported, after)
    try:
        app.execute(Rekey())
    finally:
        app.close()
    final = imported.unlock(PASSPHRASE)
    assert list(final.keys) == [2] and final.kept is not None
    assert final.purpose_key("message-id") == before.purpose_key("message-id")
    for purpose in ("sync", "sync over http", "views"):
        assert final.purpose_key(purpose) != before.purpose_key(purpose)
    # nothing the key file keeps derives the old views' key
    assert before.views_key() not in {*final.kept.values(), final.views_key()}


def test_the_log_file_holds_no_old_ciphertext(
    on_sqlite: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    imported = on_sqlite
    before = {r[4] for r in rows(imported)}
    assert cli(["rekey"], capsys)[0] == 0
    db = sqlite3.connect(f"file:{imported.events_db}?mode=ro", uri=True)
    states = {row[0] for row in db.execute("SELECT state FROM stored_events")}
    db.close()
    assert not states & before


def test_a_home_that_syncs_is_refused_a_rekey_and_nothing_changes(
    imported: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    assert cli(["sync", str(folder)], capsys)[0] == 0
    keys, end = imported.key_file.read_bytes(), log_end(imported)
    code, out, err = cli(["rekey"], capsys)
    assert (code, out) == (1, None) and "syncs with other installations" in err
    assert imported.key_file.read_bytes() == keys and log_end(imported) == end


def test_the_agent_that_held_the_old_key_is_stopped(
    imported: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.start(imported, imported.unlock(PASSPHRASE), 600)
    assert agent.keyring(imported) is not None
    code, done, _ = cli(["rekey"], capsys)
    assert code == 0 and done["agent_stopped"] is True
    assert agent.keyring(imported) is None
