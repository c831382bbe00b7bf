"""``eventpile purge``: finished operation history older than a horizon leaves the log,
on SQLite and PostgreSQL. What the user sees stays; unfinished work, and what it needs,
stays; the views equal their rebuild; undo of a purged operation names the horizon;
sync keeps what its folder lacks; the file shrinks; bad input changes nothing."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import DomainError
from eventpile.commands import retention
from eventpile.commands.operations import answer
from eventpile.commands.retention import Purge
from eventpile.commands.undo import Undo
from eventpile.commands.worker import Worker
from eventpile.domain.operation import Operation
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.language import parse_query
from eventpile.mail.query import search
from eventpile.mail.send import SendMail
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.operations import recent
from eventpile.projections.queue import operation_events
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from tests.conftest import cli, log_end, stored_topics
from tests.test_operations import Clock, _mbox
from tests.test_sync import Installations
from tests.test_sync import seen as sync_seen

pytest_plugins = ["tests.test_operations"]  # its fixture: clock

DAY = timedelta(days=1)


def seen(app: MailApplication) -> dict[str, Any]:
    """What a user sees of the mail: every message by subject with its tags."""
    found = search(app.current("messages"), parse_query("*"), limit=1000)
    return {
        "total": found["total"],
        "messages": sorted((r["subject"], sorted(r["tags"])) for r in found["results"]),
    }


def logged(app: MailApplication) -> set[str]:
    return {r["id"] for r in recent(app.current("operations"), 10_000)}


def digests(app: MailApplication) -> dict[str, str]:
    return {name: view.digest() for name, view in app.views.items()}


def rebuilt(app: MailApplication) -> dict[str, str]:
    for view in app.views.values():
        view.rebuild(app)
    return digests(app)


@pytest.fixture
def mail(home: Home, keyring: Keyring, clock: Clock, backend: str) -> Any:
    application = MailApplication(home, keyring, clock=clock)
    yield application
    application.close()


def a_day_of_use(app: MailApplication, mbox: Path, tag: str) -> list[Operation]:
    """An import and two tag changes, one of them undone."""
    done = [
        app.execute(ImportMailbox(path=mbox)),
        app.execute(TagMessages(action="add", tag=tag, query="*")),
        app.execute(TagMessages(action="add", tag=tag + "-too", query="*")),
    ]
    done.append(app.execute(Undo()))
    return done


def test_a_purge_removes_old_history_and_keeps_the_mail_and_unfinished_work(
    mail: MailApplication, clock: Clock, tmp_path: Path
) -> None:
    old = a_day_of_use(mail, write_mbox(tmp_path / "a.mbox", 8, seed=1), "old")
    later = clock.now + 200 * DAY
    send = mail.submit(
        SendMail.compose("me@example.org", ["you@example.org"], "later", "hi"), run_after=later
    )
    clock.advance(days=100)
    new = a_day_of_use(mail, write_mbox(tmp_path / "b.mbox", 5, seed=2), "new")
    before, shown = seen(mail), logged(mail)
    events_before = sum(1 for _ in mail.all_events())

    purged = mail.execute(Purge(older_than="90d"))

    assert purged.result["operations"] == len(old)
    assert seen(mail) == before
    # the log shows what the model says: the purged ones are gone, the rest stays
    assert logged(mail) == shown - {op.id.hex for op in old} | {purged.id.hex}
    assert {send.id.hex, *(op.id.hex for op in new)} <= logged(mail)
    assert mail.load(Operation, send.id) is not None
    for op in old:
        assert mail.load(Operation, op.id) is None
    gone = events_before - sum(1 for _ in mail.all_events()) + 4  # the purge's own 4
    assert purged.result["events"] == gone
    assert digests(mail) == rebuilt(mail)
    assert mail.check_log() == []  # the purge sealed what it deleted


def test_undo_of_a_purged_operation_names_the_horizon_and_writes_nothing(
    mail: MailApplication, clock: Clock, tmp_path: Path
) -> None:
    [_, tagged, *_] = a_day_of_use(mail, write_mbox(tmp_path / "a.mbox", 3, seed=1), "old")
    clock.advance(days=10)
    mail.execute(Purge(older_than="1d"))
    end = mail.max_position()
    with pytest.raises(DomainError, match=r"finished before \d{4}-\d\d-\d\d .* was purged on"):
        mail.execute(Undo(operation_id=tagged.id))
    assert mail.max_position() == end


def test_an_operation_tied_to_one_that_stays_stays(
    mail: MailApplication, clock: Clock, tmp_path: Path
) -> None:
    """An old import whose question waits for an answer, and an old tag change undone
    recently: both stay, with what ties them."""
    mail.execute(ImportMailbox(path=_mbox(tmp_path / "a.mbox", [("one@x", "first")])))
    edited = _mbox(tmp_path / "b.mbox", [("one@x", "first, edited")])
    waiting = mail.execute(ImportMailbox(path=edited))  # a changed message: it asks
    assert waiting.status == "waiting"
    tagged = mail.execute(TagMessages(action="add", tag="t", query="*"))
    clock.advance(days=30)
    undo = mail.execute(Undo(operation_id=tagged.id))
    purged = mail.execute(Purge(older_than="7d"))
    assert purged.result["operations"] == 1  # the first import only
    assert {waiting.id.hex, tagged.id.hex, undo.id.hex} <= logged(mail)
    clock.advance(days=30)
    choice = next(iter(mail.load(Operation, waiting.id).question.choices))
    follow_up = answer(mail, waiting.id, choice)
    clock.advance(days=30)
    again = mail.execute(Purge(older_than="7d"))
    # now the tag change and its undo go together, and the answered question with what it
    # started, and the first purge
    assert not {waiting.id.hex, tagged.id.hex, undo.id.hex, purged.id.hex} & logged(mail)
    assert again.result["operations"] >= 4 and follow_up is not None
    assert digests(mail) == rebuilt(mail)


def test_a_purge_keeps_what_the_sync_folder_does_not_hold_yet(
    mail: MailApplication, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    first = a_day_of_use(mail, write_mbox(tmp_path / "a.mbox", 3, seed=1), "one")
    synced = mail.sync(folder)
    second = a_day_of_use(mail, write_mbox(tmp_path / "b.mbox", 3, seed=2), "two")
    clock.advance(days=10)
    purged = mail.execute(Purge(older_than="1d"))
    assert purged.result["operations"] == len(first)
    assert purged.result["kept_for_sync"] == len(second)
    assert "sync, then purge" in purged.message
    assert {synced.id.hex, *(op.id.hex for op in second)} <= logged(mail)
    mail.sync(folder)
    clock.advance(days=10)
    again = mail.execute(Purge(older_than="1d"))
    # the latest sync with the folder stays: it says how far the folder holds this log
    assert again.result["kept_for_sync"] == 0
    assert not {op.id.hex for op in second} & logged(mail)
    assert synced.id.hex not in logged(mail)


def test_a_purged_log_file_shrinks_by_what_it_held(
    home: Home, keyring: Keyring, clock: Clock, tmp_path: Path
) -> None:
    """Each time, the file shrinks by the history it held."""
    app = MailApplication(home, keyring, clock=clock)
    try:
        app.execute(ImportMailbox(path=write_mbox(tmp_path / "a.mbox", 3, seed=1)))
        for _ in range(2):
            for n in range(150):
                app.execute(TagMessages(action="remove" if n % 2 else "add", tag="t", query="*"))
            size, held = _on_disk(home), _history_bytes(home)
            clock.advance(days=2)
            app.purge("1d")
            assert _on_disk(home) <= size - 0.8 * held
    finally:
        app.close()


def _on_disk(home: Home) -> int:
    """The bytes of ``home``'s log file, its write-ahead log written into it first."""
    db = sqlite3.connect(home.events_db)
    try:
        assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        db.close()
    return home.events_db.stat().st_size


def _history_bytes(home: Home) -> int:
    """The bytes of the operation records in ``home``'s log."""
    db = sqlite3.connect(f"file:{home.events_db}?mode=ro", uri=True)
    try:
        return int(
            db.execute(
                "SELECT sum(length(state)) FROM stored_events "
                f"WHERE topic IN {stored_topics(home, *operation_events())}"
            ).fetchone()[0]
        )
    finally:
        db.close()


@pytest.mark.parametrize(
    ("horizon", "says"),
    [
        ("abc", "older_than"),
        ("5y", "older_than"),
        ("-5d", "not a duration"),
        ("99999999d", "older_than"),
    ],
)
def test_a_bad_horizon_is_refused_in_one_line_and_writes_nothing(
    cli_env: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path, horizon: str, says: str
) -> None:
    assert cli(["init"], capsys)[0] == 0
    assert cli(["import", str(write_mbox(tmp_path / "m.mbox", 3, seed=4))], capsys)[0] == 0
    end = log_end(cli_env)
    code, out, err = cli(["purge", "--older-than", horizon], capsys)
    assert (code, out) == (1, None)
    assert says in err and len(err.strip().splitlines()) == 1
    assert log_end(cli_env) == end


def test_purge_on_the_command_line_and_undo_after_it(
    cli_env: Home, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli(["init"], capsys)[0] == 0
    code, imported, _ = cli(["import", str(write_mbox(tmp_path / "m.mbox", 3, seed=4))], capsys)
    assert code == 0
    code, purged, err = cli(["purge", "--older-than", "0s"], capsys)
    assert (code, err) == (0, "")
    assert purged["operations"] >= 1 and purged["events"] > 0
    operation = imported["operation_id"]
    code, _, err = cli(["undo", operation[:12]], capsys)
    assert code == 1 and "was purged on" in err
    assert cli(["verify"], capsys)[0] == 0


@settings(max_examples=15, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["tag", "purge"]), st.integers(0, 3)), min_size=1, max_size=8
    )
)
def test_after_any_purges_the_log_lists_what_the_model_says(
    home: Home, keyring: Keyring, tmp_path_factory: pytest.TempPathFactory, steps: list[Any]
) -> None:
    """A plain model: each operation finished at a known time; a purge with horizon H
    keeps those that finished H or less ago (nothing ties these together). What the user
    sees never changes with a purge, and the views equal their rebuild."""
    folder = tmp_path_factory.mktemp("purges")
    fresh = Home(folder / "home")
    fresh.path.mkdir()
    fresh.views.mkdir()
    fresh.key_file.write_bytes(home.key_file.read_bytes())
    clock = Clock()
    app = MailApplication(fresh, keyring, clock=clock)
    try:
        first = app.execute(ImportMailbox(path=write_mbox(folder / "m.mbox", 4, seed=1)))
        alive = {first.id.hex: first.finished_at}
        for n, (step, days) in enumerate(steps):
            clock.advance(days=1)
            if step == "tag":
                op = app.execute(TagMessages(action="add", tag=f"t{n}", query="*"))
            else:
                shown = seen(app)
                op = app.execute(Purge(older_than=f"{days}d"))
                cut = clock.now - timedelta(days=days)
                alive = {o: at for o, at in alive.items() if at is not None and at >= cut}
                assert seen(app) == shown
            alive[op.id.hex] = op.finished_at
            assert logged(app) == set(alive)
        assert digests(app) == rebuilt(app)
    finally:
        app.close()


def test_the_worker_requests_a_purge_once_a_day(
    mail: MailApplication, clock: Clock, tmp_path: Path
) -> None:
    old = a_day_of_use(mail, write_mbox(tmp_path / "a.mbox", 3, seed=1), "old")
    worker = Worker(mail, purge=Purge(older_than="1d"))
    clock.advance(days=2)
    first = worker.retention()
    assert first is not None and first.status == "complete"
    assert worker.retention() is None  # one a day
    assert not {op.id.hex for op in old} & logged(mail)
    clock.advance(hours=23)
    assert worker.retention() is None
    clock.advance(hours=2)
    assert worker.retention() is not None
    assert Worker(mail).retention() is None  # without a purge, none


def test_a_bad_purge_setting_stops_the_worker_in_one_line(
    cli_env: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli(["init"], capsys)[0] == 0
    end = log_end(cli_env)
    monkeypatch.setenv("EVENTPILE_PURGE_OLDER_THAN", "ninety days")
    code, _, err = cli(["worker", "--once"], capsys)
    assert code == 1 and err.startswith("eventpile: EVENTPILE_PURGE_OLDER_THAN=ninety days:")
    assert len(err.strip().splitlines()) == 1 and log_end(cli_env) == end


def test_a_peer_that_is_behind_is_not_stranded_and_its_undo_lands(tmp_path: Path) -> None:
    """A purges what it has synced; B, behind, takes it all from the folder, keeps its own
    history of it, and undoes one of A's purged operations: A takes every event of the
    undo, its mark on the operation it no longer has included (an event whose stream
    begins elsewhere is not a purged one: a stream's events may arrive in any order)."""
    two = Installations(tmp_path, 2)
    try:
        two.imported(0, "a", ["red", "green"])
        tagged = two[0].execute(TagMessages(action="add", tag="work", query="*"))
        two.sync(0)
        purged = two[0].execute(Purge(older_than="0s"))
        assert purged.result["operations"] == 2 and purged.result["kept_for_sync"] == 0
        assert two[0].load(Operation, tagged.id) is None
        [taken] = two.sync(1)
        assert taken["received"] > 0
        both = [("green", ["work"]), ("red", ["work"])]
        assert sync_seen(two[0]) == sync_seen(two[1]) == both
        assert two[1].load(Operation, tagged.id) is not None
        undone = two[1].execute(Undo(operation_id=tagged.id))
        two.sync(1)
        two.sync(0)
        wrote = {e.event_id for _, e in two[1].all_events() if e.operation_id == undone.id}
        here = {e.event_id for _, e in two[0].all_events()}
        assert len(wrote) > 1 and wrote <= here  # its mark on the purged operation too
        assert sync_seen(two[0]) == sync_seen(two[1]) == [("green", []), ("red", [])]
        for app in two.apps:
            assert all(view.verify(app) for view in app.views.values())
    finally:
        two.close()


def test_positions_stay_through_a_purge_and_its_vacuum(
    home: Home, keyring: Keyring, clock: Clock, tmp_path: Path
) -> None:
    """A log made before positions were explicit (implicit rowids, which a VACUUM may
    renumber) is converted at its first purge: every event that stays keeps its position."""
    app = MailApplication(home, keyring, clock=clock)
    app.execute(ImportMailbox(path=write_mbox(tmp_path / "a.mbox", 5, seed=1)))
    for n in range(30):
        app.execute(TagMessages(action="remove" if n % 2 else "add", tag="t", query="*"))
    app.close()
    db = sqlite3.connect(home.events_db)
    db.executescript(
        "CREATE TABLE old (originator_id TEXT, originator_version INTEGER, topic TEXT, "
        "state BLOB, PRIMARY KEY (originator_id, originator_version));"
        "INSERT INTO old (rowid, originator_id, originator_version, topic, state) "
        "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events;"
        "DROP TABLE stored_events; ALTER TABLE old RENAME TO stored_events;"
    )
    before = set(db.execute("SELECT rowid, originator_id, originator_version FROM stored_events"))
    db.close()
    app = MailApplication(home, keyring, clock=clock)
    try:
        clock.advance(days=2)
        purged = app.purge("1d")
        db = sqlite3.connect(home.events_db)
        after = set(
            db.execute("SELECT rowid, originator_id, originator_version FROM stored_events")
        )
        explicit = ("rowid", 1) in db.execute(
            "SELECT name, pk FROM pragma_table_info('stored_events')"
        ).fetchall()
        db.close()
        end = max(p for p, _, _ in before)
        kept = {row for row in after if row[0] <= end}
        assert kept <= before and len(before) - len(kept) == purged.result["events"]
        assert explicit
        assert digests(app) == rebuilt(app)
        assert app.check_log() == []
    finally:
        app.close()


def test_a_purge_that_an_undo_overtakes_plans_again(
    home: Home, keyring: Keyring, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process undoes an old operation between the purge's plan and its write:
    the purge writes nothing then, plans again, and keeps the operation with its undo."""
    app = MailApplication(home, keyring, clock=clock)
    other = MailApplication(home, keyring, clock=clock)
    try:
        app.execute(ImportMailbox(path=write_mbox(tmp_path / "a.mbox", 3, seed=1)))
        tagged = app.execute(TagMessages(action="add", tag="t", query="*"))
        clock.advance(days=2)
        plans, original = [], retention.purge_plan

        def planned(*args: Any) -> Any:
            plan = original(*args)
            if not plans:  # the first time, the other process comes in between
                other.execute(Undo(operation_id=tagged.id))
            plans.append(plan)
            return plan

        monkeypatch.setattr("eventpile.commands.retention.purge_plan", planned)
        purged = app.execute(Purge(older_than="1d"))
        assert len(plans) == 2 and tagged.id.hex in plans[0].streams
        assert tagged.id.hex not in plans[1].streams
        assert purged.result["operations"] == 1  # the import alone
        assert app.load(Operation, tagged.id).status == "undone"
        assert seen(app)["messages"] == [(s, []) for s, _ in seen(app)["messages"]]
        assert digests(app) == rebuilt(app)
    finally:
        other.close()
        app.close()
