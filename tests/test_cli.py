"""The command line, in-process (``main(argv)``) and as a real process: every command's
JSON, and the error paths: one line on stderr, no traceback, a non-zero exit, nothing
written."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.message import MessageIndexed
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE, cli, stored_topics

MESSAGES = 12
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mbox(tmp_path_factory.mktemp("mail") / "cli.mbox", MESSAGES, seed=5)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``eventpile --json ARGS`` in-process: its JSON output (an error fails the test)."""

    def run(*args: str) -> Any:
        code = main(["--json", *args])
        out, err = capsys.readouterr()
        assert (code, err) == (0, ""), err
        return json.loads(out)

    return run


@pytest.fixture
def fails(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """Run ``eventpile ARGS`` in-process, expecting an error: its one line on stderr."""

    def fails(*args: str) -> str:
        code = main(list(args))
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert code != 0 and out == "", args
        assert len(lines) == 1 and lines[0].startswith("eventpile: "), (args, err)
        return lines[0]

    return fails


@pytest.fixture
def filled(cli_env: Home, run: Run, mbox: Path) -> Home:
    """An initialised home with the small mailbox imported."""
    run("init")
    run("import", str(mbox))
    return cli_env


def snapshot(home: Home) -> tuple[int, dict[str, str], set[str]]:
    """What a command may have written: the log's end, each view's content, the file names."""
    files = {str(p.relative_to(home.path)) for p in home.path.rglob("*")}
    files = {f for f in files if not f.endswith(("-wal", "-shm"))}
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        return app.max_position(), {n: v.digest() for n, v in app.views.items()}, files
    finally:
        app.close()


# the commands -----------------------------------------------------------------------


def test_init_import_search_tag_tags(cli_env: Home, run: Run, mbox: Path) -> None:
    made = run("init")
    assert made["home"] == str(cli_env.path) and cli_env.key_file.exists()

    imported = run("import", str(mbox))
    assert {"operation_id", "indexed", "skipped", "failed", "elapsed_s"} <= imported.keys()
    assert (imported["indexed"], imported["skipped"], imported["failed"]) == (MESSAGES, 0, 0)
    assert imported["elapsed_s"] > 0
    again = run("import", str(mbox))
    assert (again["indexed"], again["skipped"]) == (0, MESSAGES)
    assert again["operation_id"] != imported["operation_id"]

    everything = run("search", "")
    assert everything["total"] == MESSAGES and len(everything["results"]) == MESSAGES
    for result in everything["results"]:
        assert set(result) == {"id", "thread", "subject", "from", "date", "tags", "snippet"}
        assert result["tags"] == [] and result["snippet"]
    dates = [r["date"] for r in everything["results"]]
    assert dates[0] is not None
    limited = run("search", "--limit", "3", "")
    assert limited["total"] == MESSAGES and limited["results"] == everything["results"][:3]
    second = run("search", "--limit", "3", "--offset", "3", "")
    assert second["results"] == everything["results"][3:6]
    oldest = run("search", "--sort", "oldest", "")
    assert oldest["results"] == everything["results"][::-1]
    listed = run("search", "--threads", "")
    assert sum(t["matched"] for t in listed["results"]) == MESSAGES
    assert {t["thread"] for t in listed["results"]} == {r["thread"] for r in everything["results"]}

    some = run("search", "--limit", "100", "patch")
    assert 0 < some["total"] < MESSAGES
    added = run("tag", "add", "todo", "patch")
    assert {"operation_id", "changed"} <= added.keys() and added["changed"] == some["total"]
    tagged = run("search", "--limit", "100", "tag:todo")
    assert {r["id"] for r in tagged["results"]} == {r["id"] for r in some["results"]}
    assert all(r["tags"] == ["todo"] for r in tagged["results"])
    assert {t["name"]: t["messages"] for t in run("tags")["tags"]}["todo"] == some["total"]

    removed = run("tag", "remove", "todo", "")
    assert removed["changed"] == some["total"]
    assert run("search", "tag:todo")["total"] == 0


def test_log_and_show(filled: Home, run: Run) -> None:
    tagged = run("tag", "add", "seen", "")
    operations = run("log", "--limit", "5")["operations"]
    assert [o["id"] for o in operations][:1] == [tagged["operation_id"].replace("-", "")]
    assert [o["command"] for o in operations][:2] == ["TagMessages", "ImportMailbox"]
    assert all(o["status"] == "complete" for o in operations)
    assert not [k for o in operations for k in o if k.startswith("private")]
    shown = run("show", tagged["operation_id"][:13])
    assert shown["id"] == tagged["operation_id"].replace("-", "")
    assert shown["result"]["changed"] == MESSAGES == tagged["changed"]
    kinds = [e["type"] for e in shown["events"]]
    assert kinds.count("MessageTagged") == MESSAGES and "TagCreated" in kinds
    assert not [k for k in shown if k.startswith("private") or k == "error"]
    private = run("show", "--private", tagged["operation_id"])
    assert private["private_args"]["tag"] == "seen" and private["id"] == shown["id"]


def test_rebuild_and_verify(filled: Home, run: Run) -> None:
    rebuilt = run("rebuild")["projections"]
    app_views = set(snapshot(filled)[1])
    assert set(rebuilt) == app_views
    for report in rebuilt.values():
        assert set(report) == {"events", "elapsed_s"} and report["elapsed_s"] >= 0
    assert rebuilt["messages"]["events"] >= MESSAGES
    assert set(run("rebuild", "messages")["projections"]) == {"messages"}
    verified = run("verify")
    assert verified["ok"] is True and all(verified["projections"].values())


# error paths ------------------------------------------------------------------------


def test_a_wrong_passphrase(
    filled: Home, fails: Callable[..., str], mbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(filled)
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", "not the passphrase")
    for args in (["search", "x"], ["import", str(mbox)], ["tag", "add", "x", ""], ["log"]):
        assert "wrong passphrase" in fails(*args)
    assert snapshot(filled) == before


def test_a_damaged_key_file(filled: Home, fails: Callable[..., str]) -> None:
    for garbage in (b"", b"{not json", b'{"format": 1, "kdf": {"name": "scrypt", "salt": 5}}'):
        filled.key_file.write_bytes(garbage)
        assert "key file" in fails("search", "x")
        assert "key file" in fails("log")


def test_a_missing_home(
    tmp_path: Path, fails: Callable[..., str], mbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("EVENTPILE_HOME", str(nowhere))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    for args in (["search", "x"], ["import", str(mbox)], ["log"], ["verify"], ["tags"]):
        assert "eventpile init" in fails(*args)
    assert not nowhere.exists()


def _read_only_mount_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(
    not _read_only_mount_works(),
    reason="needs unshare (a user namespace) to mount a home read-only",
)
def test_a_read_only_home_is_one_line_and_keeps_everything(sqlite_home: Home) -> None:
    """The home on a read-only mount (in a namespace of the test's own, as a read-only
    disk would be): each command says so in one line. (On PostgreSQL the home holds
    only the keys, which are read.)"""
    before = snapshot(sqlite_home)
    script = Path(sys.executable).with_name("eventpile")
    where = str(sqlite_home.path)
    for args in (["search", "x"], ["tag", "add", "x", "*"], ["verify"], ["log"]):
        done = subprocess.run(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && "$@"',
                "sh",
                where,
                str(script),
                *args,
            ],
            env={**os.environ, "EVENTPILE_HOME": where, "EVENTPILE_PASSPHRASE": PASSPHRASE},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1 and done.stdout == "", (args, done.stdout)
        assert done.stderr.startswith(f"eventpile: {where} is not writable (a read-only disk")
        assert done.stderr.count("\n") == 1
    assert snapshot(sqlite_home) == before


BAD_INPUT = [
    ["search", "colour:red"],
    ["search", "after:2024-02-30"],
    ["search", '"unbalanced'],
    ["tag", "add", "x", "colour:red"],
    ["tag", "add", "two words", ""],
    ["tag", "remove", "nosuchtag", ""],
    ["show", "0123456789abcdef"],
    ["rebuild", "nosuchview"],
    ["import", "/no/such/mailbox"],
    ["import", __file__],  # a file that is not a mailbox
]


def test_bad_input_is_one_line_and_writes_nothing(filled: Home, fails: Callable[..., str]) -> None:
    before = snapshot(filled)
    for args in BAD_INPUT:
        fails(*args)
        assert snapshot(filled) == before, args


NOT_UTF8 = "\udcff"  # how Python passes an undecodable byte of argv on
BAD_ARGUMENTS = [
    (["nosuchcommand"], "No such command"),
    (["search", "a", "b"], "unexpected extra argument"),
    (["tag", "add", "x"], "Missing argument 'QUERY'"),
    (["search", "--limit", "0", "x"], "--limit"),
    (["search", "--limit", str(2**64), "x"], "--limit"),
    (["log", "--limit", str(2**64)], "--limit"),
    (["feed", "--recent", str(2**64)], "--recent"),
    (["search", NOT_UTF8], "not valid UTF-8"),
    (["tag", "add", "x", NOT_UTF8], "not valid UTF-8"),
    (["import", f"mail{NOT_UTF8}.mbox"], "not valid UTF-8"),
    (["show", ""], "not an operation id"),
    (["show", NOT_UTF8], "not an operation id"),
    *(
        (
            ["send", "--to", "bob@example.org", "--subject", "Hi", "--body-file", "x", *after],
            "--after",
        )
        for after in (["--after", "nan"], ["--after", "inf"], ["--after", "1e300"])
    ),
]


@pytest.mark.parametrize(
    ("args", "says"),
    BAD_ARGUMENTS,
    ids=lambda a: " ".join(a)[-40:] if isinstance(a, list) else None,
)
def test_invalid_arguments_are_one_line_and_write_nothing(
    filled: Home, fails: Callable[..., str], args: list[str], says: str
) -> None:
    before = snapshot(filled)
    assert says in fails(*args)
    assert snapshot(filled) == before


def test_a_suggestion_is_made_once(filled: Home, fails: Callable[..., str]) -> None:
    line = fails("undoo")
    assert line.count("Did you mean 'undo'?") == 1 and "(see 'eventpile --help')" in line
    assert fails("search", "--limitt", "3", "x").count("Did you mean '--limit'?") == 1


def test_a_huge_bad_value_makes_a_short_error_line(filled: Home, fails: Callable[..., str]) -> None:
    line = fails("tag", "add", "x y" * 50_000, "")
    assert "tag" in line and len(line) < 400


def test_no_passphrase_and_no_terminal_is_one_line(
    filled: Home, fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTPILE_PASSPHRASE")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert "EVENTPILE_PASSPHRASE" in fails("log")


def test_a_body_file_that_is_not_utf8(
    filled: Home, fails: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTPILE_SMTP", "127.0.0.1:1")
    body = tmp_path / "body.txt"
    body.write_bytes(b"caf\xe9")
    said = fails("send", "--to", "bob@example.org", "--subject", "Hi", "--body-file", str(body))
    assert f"{body} is not UTF-8" in said


# tampering (the SQLite file) -------------------------------------------------------


@pytest.fixture
def sqlite_home(home: Home, monkeypatch: pytest.MonkeyPatch, run: Run, mbox: Path) -> Home:
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    run("init")
    run("import", str(mbox))
    return home


@pytest.mark.parametrize("damage", ["garbage", "emptied", "deleted"])
def test_a_damaged_or_replaced_event_log_is_one_line(
    sqlite_home: Home, fails: Callable[..., str], damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """(``verify`` says an emptied log was cut: the home's head holds its last seal.)"""
    home = sqlite_home
    for path in home.path.glob("events.sqlite3*"):
        path.unlink()
    if damage != "deleted":
        home.events_db.write_bytes(os.urandom(8192) if damage == "garbage" else b"")
    says = {
        "garbage": "the database refused",
        "emptied": "the log was replaced or cut",
        "deleted": "events.sqlite3 is missing",
    }[damage]
    for args in (["search", "x"], ["tag", "add", "x", ""], ["verify"], ["rebuild"]):
        if args == ["verify"] and damage == "emptied":
            assert main(args) == 1
            assert capsys.readouterr().out.startswith(
                "the log was replaced or cut: this home wrote its seal"
            )
        else:
            assert says in fails(*args), args
    assert home.events_db.exists() == (damage != "deleted")


def test_a_tampered_view_is_made_anew_and_said_so_and_verify_fails_once(
    sqlite_home: Home, run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite view files (PostgreSQL's views are tables, not files)."""
    home = sqlite_home
    results = run("search", "")
    for name, args, code in (("messages", ["search", ""], 0), ("operations", ["verify"], 1)):
        path = home.views / f"{name}.db"
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF  # in the first page: the file no longer opens with the key
        path.write_bytes(data)
        done, out, err = cli(args, capsys)
        assert done == code
        assert err.count("\n") == 1 and err.endswith(
            f"{name}.db cannot be opened with this key (damaged or foreign): "
            "made anew from the log\n"
        )
        assert out == results if name == "messages" else out["projections"][name] is False
    assert run("verify")["ok"] is True  # the views made anew are whole


def _message_rows(home: Home) -> list[tuple[int, bytes]]:
    with sqlite3.connect(home.events_db) as db:
        return db.execute(
            "SELECT rowid, state FROM stored_events "
            f"WHERE topic IN {stored_topics(home, MessageIndexed)} ORDER BY rowid"
        ).fetchall()


def _set_state(home: Home, rowid: int, state: bytes) -> None:
    db = sqlite3.connect(home.events_db)
    with db:
        db.execute("UPDATE stored_events SET state=? WHERE rowid=?", (state, rowid))
    db.close()


def _flip_a_byte(home: Home) -> None:
    rowid, state = _message_rows(home)[0]
    _set_state(home, rowid, state[:30] + bytes([state[30] ^ 0x40]) + state[31:])


def _move_a_ciphertext(home: Home) -> None:
    (_, first), (second, _) = _message_rows(home)[:2]
    _set_state(home, second, first)


@pytest.mark.parametrize("tamper", [_flip_a_byte, _move_a_ciphertext], ids=["flipped", "moved"])
def test_tampering_fails_verify_and_writes_nothing(
    sqlite_home: Home,
    run: Run,
    fails: Callable[..., str],
    tamper: Callable[[Home], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("verify")["ok"] is True
    tamper(sqlite_home)
    before = snapshot(sqlite_home)
    assert main(["verify"]) == 1
    assert capsys.readouterr().out.startswith("the log has 1 event changed, moved or swapped")
    assert "changed, moved or swapped: at position" in fails("rebuild", "messages")
    assert "fails authentication" in fails("tag", "add", "x", "")
    assert snapshot(sqlite_home) == before


# as a real process ------------------------------------------------------------------


def test_the_installed_command(tmp_path: Path, mbox: Path) -> None:
    script = Path(sys.executable).with_name("eventpile")
    assert script.exists()
    env = {
        **os.environ,
        "EVENTPILE_HOME": str(tmp_path / "home"),
        "EVENTPILE_PASSPHRASE": PASSPHRASE,
        "COLUMNS": "200",  # a table cell holds the whole command name
    }

    def eventpile(*args: str, passphrase: str = PASSPHRASE) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args],
            env={**env, "EVENTPILE_PASSPHRASE": passphrase},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert eventpile("init").returncode == 0
    imported = eventpile("--json", "import", str(mbox))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["indexed"] == MESSAGES
    found = eventpile("--json", "search", "-n", "2", "")
    assert json.loads(found.stdout)["total"] == MESSAGES
    human = eventpile("log")
    assert human.returncode == 0 and "ImportMailbox" in human.stdout
    wrong = eventpile("search", "x", passphrase="wrong")
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert wrong.stderr.startswith("eventpile: ") and len(wrong.stderr.splitlines()) == 1
    assert "Traceback" not in wrong.stderr
    assert eventpile("verify").returncode == 0


def test_demo_runs_the_tour_in_a_throwaway_home(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", "restored after the test")  # the demo sets it
    assert main(["--json", "demo", "--messages", "40"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]  # one document
    assert all(step["command"][0] == "eventpile" and step["title"] for step in steps)
    documents = [step["result"] for step in steps]
    imported, again = (d for d in documents if "indexed" in d)
    assert (imported["indexed"], again["indexed"], again["skipped"]) == (40, 0, 40)
    tagged = next(d for d in documents if "changed" in d)
    undone = next(d for d in documents if "reverted" in d)
    assert undone["reverted"] == tagged["changed"] + tagged["created_tag"]
    assert documents[-1]["ok"] is True
