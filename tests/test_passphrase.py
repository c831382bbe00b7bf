"""``eventpile passwd``: a new passphrase wraps the same keys, the old one is refused,
the change is one recorded operation, and bad input changes nothing; on SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import DomainError
from eventpile.commands.passphrase import PassphraseChanged
from eventpile.mail.app import MailApplication
from eventpile.mail.synthetic import write_mbox
from eventpile.store.errors import StoreError, WrongPassphrase
from eventpile.store.home import Home
from eventpile.store.keys import change_passphrase, create_key_file, open_key_file
from tests.conftest import PASSPHRASE, cli, log_end

NEW = "a new and longer passphrase"


@pytest.fixture
def imported(cli_env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Home:
    assert cli(["init"], capsys)[0] == 0
    assert cli(["import", str(write_mbox(tmp_path / "m.mbox", 12, seed=4))], capsys)[0] == 0
    return cli_env


def test_a_new_passphrase_opens_the_same_keys_and_the_old_one_is_refused(
    imported: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = imported.unlock(PASSPHRASE)
    found = cli(["search", "patch"], capsys)[1]
    monkeypatch.setenv("EVENTPILE_NEW_PASSPHRASE", NEW)
    code, changed, err = cli(["passwd"], capsys)
    assert (code, err) == (0, "") and changed["keys"] == 1
    with pytest.raises(WrongPassphrase):
        imported.unlock(PASSPHRASE)
    assert imported.unlock(NEW) == before
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", NEW)
    assert cli(["search", "patch"], capsys)[1] == found
    assert cli(["verify"], capsys)[0] == 0
    [record] = [
        o for o in cli(["log"], capsys)[1]["operations"] if o["id"] == changed["operation_id"]
    ]
    assert record["command"] == "PassphraseChanged" and record["status"] == "complete"
    code, _, err = cli(["undo", changed["operation_id"]], capsys)
    assert code == 1 and "cannot be undone" in err


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("wrong", NEW, "wrong passphrase"),
        (PASSPHRASE, "", "must not be empty"),
        (PASSPHRASE, PASSPHRASE, "the one the home has"),
        (PASSPHRASE, None, "set EVENTPILE_NEW_PASSPHRASE"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    imported: Home,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    old: str,
    new: str | None,
    says: str,
) -> None:
    key_file, end = imported.key_file.read_bytes(), log_end(imported)
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", old)
    if new is None:
        monkeypatch.delenv("EVENTPILE_NEW_PASSPHRASE", raising=False)
    else:
        monkeypatch.setenv("EVENTPILE_NEW_PASSPHRASE", new)
    code, out, err = cli(["passwd"], capsys)
    assert (code, out) == (1, None) and says in err and len(err.splitlines()) == 1
    assert imported.key_file.read_bytes() == key_file and log_end(imported) == end
    left = sorted(p.name for p in imported.path.iterdir() if p.name.startswith("keys"))
    assert left in (["keys.json"], ["keys.json", "keys.json.lock"])  # no half-written copy


def test_a_failed_replace_leaves_the_old_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.json"
    ring = create_key_file(path, PASSPHRASE)
    before = path.read_bytes()

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        change_passphrase(path, PASSPHRASE, NEW)
    assert path.read_bytes() == before and open_key_file(path, PASSPHRASE) == ring
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]


def test_no_change_is_recorded_that_the_key_file_does_not_show(
    imported: Home,
) -> None:
    app = MailApplication(imported, imported.unlock(PASSPHRASE))
    try:
        end = app.max_position()
        with pytest.raises(DomainError, match="not the one this change wrote"):
            app.execute(PassphraseChanged(key_file="0" * 64))
        assert app.max_position() == end  # refused: nothing recorded
    finally:
        app.close()


@settings(max_examples=4, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3, unique=True))
def test_every_change_keeps_the_keys_and_only_the_latest_opens(
    tmp_path_factory: pytest.TempPathFactory, passphrases: list[str]
) -> None:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    ring = create_key_file(path, PASSPHRASE)
    current = PASSPHRASE
    for new in passphrases:
        if new == current:
            with pytest.raises(StoreError):
                change_passphrase(path, current, new)
            continue
        assert change_passphrase(path, current, new) == ring
        with pytest.raises(WrongPassphrase):
            open_key_file(path, current)
        current = new
    assert open_key_file(path, current) == ring
