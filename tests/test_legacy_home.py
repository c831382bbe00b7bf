"""A home written before the framework and the mail application were apart still opens.

``tests/data/home-0.1`` was written by eventpile 0.1, whose events name their
classes by the old top-level modules (``domain.message:MessageIndexed``,
``domain.operation:OperationRequested``, ...): an import of 12 messages, two
taggings, an untagging undone, and a mail scheduled for 2027. Only its key file
and event log are kept: the views are made anew here from the log, through the
applications' topic aliases.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from eventpile.mail.app import MailApplication
from tests.conftest import cli

HOME = Path(__file__).parent / "data" / "home-0.1"
PASSPHRASE = "legacy home passphrase"
PATCHES = {
    "100551765ccf8a54b3aa75fd0d31b34a",
    "455558e707398ac0b27618fdf98b4ccc",
    "7619f96232438caf942cd6e2e92d54e9",
    "99cc94ea85b2849ca0a2e26e7a527763",
    "9f42b087a6f286b180eaa0a3dd0a9354",
    "afbab70b1503852fa764528050882126",
    "e5aee3bd1b908486bc9eba900d2d96b2",
    "ffaa10179ce983708e318f4bd0677934",
}
"""The messages tagged ``patches`` in that home (what its own ``search`` answered)."""


@pytest.fixture
def legacy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    shutil.copytree(HOME, home)
    monkeypatch.setenv("EVENTPILE_HOME", str(home))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    return home


def test_the_log_names_the_old_modules(legacy: Path) -> None:
    db = sqlite3.connect(f"file:{legacy / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        topics = {row[0] for row in db.execute("SELECT DISTINCT topic FROM stored_events")}
    finally:
        db.close()
    assert {t.partition(":")[0] for t in topics} == {
        "domain.operation",
        "domain.message",
        "domain.tag",
    }


def test_an_old_home_opens_with_its_tags_messages_and_queue(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, tags, _ = cli(["tags"], capsys)
    assert code == 0
    assert {t["name"]: t["messages"] for t in tags["tags"]} == {
        "patches": 8,
        "trash": 0,
        "urgent": 3,
    }
    code, found, _ = cli(["search", "-n", "50", "tag:patches"], capsys)
    assert (code, found["total"]) == (0, 8)
    assert {r["id"] for r in found["results"]} == PATCHES
    code, found, _ = cli(["search", "-n", "50", ""], capsys)
    assert (code, found["total"]) == (0, 12)
    code, queue, _ = cli(["ops"], capsys)
    assert code == 0
    assert [(op["command"], op["status"]) for op in queue["operations"]] == [
        ("SendMail", "scheduled")
    ]
    code, log, _ = cli(["log"], capsys)
    assert [(op["command"], op["status"]) for op in log["operations"]] == [
        ("SendMail", "scheduled"),
        ("Undo", "complete"),
        ("TagMessages", "undone"),
        ("TagMessages", "complete"),
        ("TagMessages", "complete"),
        ("ImportMailbox", "complete"),
    ]
    code, verified, _ = cli(["verify"], capsys)
    assert (code, verified["ok"], verified["events"]) == (0, True, 48)


def test_old_operations_are_undone_and_redone_with_new_events_beside_old_ones(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, log, _ = cli(["log"], capsys)
    first_tagging = log["operations"][4]
    assert first_tagging["message"] == "Tagged 8 messages"
    code, undone, _ = cli(["undo", first_tagging["id"]], capsys)
    assert (code, undone["reverted"], undone["skipped"]) == (0, 9, 0)  # 8 memberships, the tag
    code, found, _ = cli(["search", "tag:patches"], capsys)
    assert found["total"] == 0
    code, redone, _ = cli(["redo", first_tagging["id"]], capsys)
    assert (code, redone["reverted"]) == (0, 9)
    code, found, _ = cli(["search", "-n", "50", "tag:patches"], capsys)
    assert {r["id"] for r in found["results"]} == PATCHES
    code, verified, _ = cli(["verify"], capsys)
    assert (code, verified["ok"]) == (0, True)


def test_every_stored_event_of_the_old_home_decodes_to_a_current_class(legacy: Path) -> None:
    from eventpile.store.home import Home

    home = Home(legacy)
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        events = [event for _, event in app.all_events()]
    finally:
        app.close()
    assert len(events) == 48
    assert {type(e).__module__ for e in events} == {
        "eventpile.domain.operation",
        "eventpile.mail.message",
        "eventpile.mail.tag",
    }


def test_an_old_home_cannot_forget_and_says_so(
    legacy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its people's keys derive from its data key: destroying one is not possible."""
    keys = (legacy / "keys.json").read_bytes()
    code, out, err = cli(["forget", "ralf@linux-mips.org"], capsys)
    assert (code, out) == (1, None) and err.count("\n") == 1
    assert "made before people had keys" in err
    assert (legacy / "keys.json").read_bytes() == keys
    code, found, _ = cli(["log"], capsys)
    assert code == 0 and all(o["command"] != "Forget" for o in found["operations"])
