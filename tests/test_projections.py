"""Projections: exactly-once catch-up, incremental views equal to their rebuild over random
command sequences (a hypothesis state machine), search before and after a rebuild, and the
query language."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sqlcipher3
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.mail.index import MessageIndex
from eventpile.mail.message import Message, MessageContent, MessageIndexed, MessageRemoved
from eventpile.mail.query import (
    MAX_TERMS,
    QueryError,
    all_tags,
    matching_ids,
    parse_query,
    search,
    words,
)
from eventpile.mail.synthetic import write_mbox
from eventpile.projections import base
from eventpile.projections.base import Page, Topics, View, rebuild_together
from eventpile.store import views
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from eventpile.store.views import COMMIT_ASIDE_FROM, SQLCipherDB, SQLCipherViewStore
from eventpile.testing.postgres import empty_database

QUERIES = (
    "",
    "patch",
    "the",
    "fix*",
    '"status update"',
    "subject:re*",
    "after:2024-01-01",
    "before:2023-07-01",
    "patch after:2023-06-01 before:2024-06-01",
)
TAGS = ("a", "b")


class UnindexMatching(Command):
    """Take the messages matching a query out of the index (a re-import brings them back)."""

    query: str


@handles(UnindexMatching)
def _unindex(command: UnindexMatching, ctx: Context) -> Outcome:
    index = ctx.app.view("messages")
    index.catch_up(ctx.app)
    removed = 0
    for message_hex in matching_ids(index.db, parse_query(command.query)):
        message = ctx.load(Message, uuid.UUID(message_hex))
        if message is not None and message.indexed:
            ctx.record(*message.remove())
            removed += 1
    return Outcome(f"Removed {removed}", {"removed": removed})


@pytest.fixture(scope="module")
def mailboxes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    where = tmp_path_factory.mktemp("mailboxes")
    return [write_mbox(where / f"{n}-{seed}.mbox", n, seed) for n, seed in ((6, 1), (6, 2), (9, 3))]


def total(app: MailApplication, query: str) -> int:
    return int(search(app.view("messages").db, parse_query(query), 1)["total"])


def results(app: MailApplication) -> dict[str, Any]:
    db = app.view("messages").db
    return {q: search(db, parse_query(q), 100) for q in QUERIES}


def test_tags_count_only_the_messages_in_the_index(imported: MailApplication) -> None:
    tagged = total(imported, "tag:a")
    assert 0 < tagged < total(imported, "")
    imported.execute(UnindexMatching(query="patch after:2023-06-01"))
    counts = {t["name"]: t["messages"] for t in all_tags(imported.view("messages").db)}
    assert counts["a"] == total(imported, "tag:a") < tagged
    assert counts["trash"] == 0


# exactly once -----------------------------------------------------------------------


@pytest.fixture
def imported(app: MailApplication, mailboxes: list[Path]) -> MailApplication:
    app.execute(ImportMailbox(path=mailboxes[2]))
    app.execute(TagMessages(action="add", tag="a", query="patch"))
    return app


def test_catching_up_twice_applies_nothing_new(imported: MailApplication) -> None:
    view = imported.view("messages")
    digest, position = view.digest(), view.position
    assert position == imported.max_position()
    assert view.catch_up(imported).events == 0
    assert (view.digest(), view.position) == (digest, position)


def test_a_command_s_views_take_its_events_from_memory_unless_another_wrote_between(
    imported: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    read = imported.read
    monkeypatch.setattr(
        imported, "read", lambda after, *rest, **kw: reads.append(after) or read(after, *rest, **kw)
    )
    decoded: list[object] = []  # the streams of the rows read from the log and decrypted
    decode = imported.mapper.decode

    def counted(*row: Any, **kw: Any) -> DomainEvent:
        if kw.get("foreign"):
            decoded.append(row[0])
        return decode(*row, **kw)

    monkeypatch.setattr(imported.mapper, "decode", counted)
    imported.execute(TagMessages(action="add", tag="b", query="patch"))
    assert reads == [] and all(v.verify(imported) for v in imported.views.values())

    other = App(imported.home, imported.keyring)
    try:  # another application writes between our two commands, leaving the views behind
        before = imported.max_position()
        other.append([other.request(TagMessages(action="add", tag="c", query="patch"))])
        reads.clear()
        decoded.clear()
        imported.execute(TagMessages(action="remove", tag="b", query="patch"))
        assert reads and set(reads) == {before}  # the other's event was read from the log
        assert len(decoded) == 1  # and only it was decrypted: ours came from memory
        assert all(v.verify(imported) for v in imported.views.values())
        assert total(imported, "tag:b") == 0
        assert imported.view("queue").db.execute("SELECT count(*) FROM queue").fetchone()[0] == 1
    finally:
        other.close()


def test_a_second_view_on_the_same_files_does_not_apply_again(
    imported: MailApplication, mailboxes: list[Path]
) -> None:
    live = imported.view("messages")
    other = View(MessageIndex(), live.store)
    try:
        assert other.catch_up(imported).events == 0
        assert other.digest() == live.digest()
        messages, before = total(imported, ""), imported.max_position()
        (_, first), *_ = imported.read(0, before, (MessageIndexed,), 1)
        removed = imported.load(Message, first.originator_id)
        assert removed is not None
        imported.append(removed.remove())
        new = imported.max_position() - before
        # whichever view catches up first applies the new events; the other finds none
        assert other.catch_up(imported).events == new == 1
        assert live.catch_up(imported).events == 0
        assert other.digest() == live.digest() and live.verify(imported)
        assert total(imported, "") == messages - 1
    finally:
        other.close()


def test_a_view_another_process_is_writing_is_caught_up_last(
    imported: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    with imported.deferring_catch_up():
        imported.execute(TagMessages(action="add", tag="waiting", query="patch"))
    end, busy = imported.max_position(), imported.view("operations")
    holder = busy.store.open("operations")
    holder.connection.execute("BEGIN IMMEDIATE")  # another process writes the view
    seen: dict[str, int] = {}
    reads: list[int] = []  # of the log, or of what this process wrote, kept in memory
    read = imported.written.read
    monkeypatch.setattr(
        imported.written, "read", lambda after, *rest: reads.append(after) or read(after, *rest)
    )
    first_round = base._fold_pages

    def then_the_other_catches_it_up(*args: Any) -> set[int]:
        left = first_round(*args)
        if not seen:  # the views it could write are done
            seen.update({view.name: view.position for view in imported.views.values()})
            holder.connection.execute("COMMIT")
            other = View(busy.projection, busy.store)
            assert other.catch_up(imported).events > 0
            other.close()
            reads.clear()
        return left

    monkeypatch.setattr(base, "_fold_pages", then_the_other_catches_it_up)
    reports = imported.catch_up()
    holder.close()
    assert seen == {view: end for view in imported.views} | {"operations": seen["operations"]}
    assert seen["operations"] < end == busy.position and reports["operations"].events == 0
    assert reads == []  # found where the other left it: the log not read again for it
    assert all(view.verify(imported) for view in imported.views.values())


def test_rebuild_and_verify_agree_with_the_live_views(imported: MailApplication) -> None:
    before = {name: view.digest() for name, view in imported.views.items()}
    found = results(imported)
    for view in imported.views.values():
        assert view.verify(imported)
        report = view.rebuild(imported)
        assert report.events > 0
    assert {name: view.digest() for name, view in imported.views.items()} == before
    assert results(imported) == found


def test_views_rebuilt_together_read_each_page_once_and_equal_the_live_views(
    imported: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "PAGE", 5)  # many pages
    before = {name: view.digest() for name, view in imported.views.items()}
    starts: list[int] = []

    class Log:
        def max_position(self) -> int:
            return imported.max_position()

        def read(self, after: int, upto: int, topics: Topics, limit: int) -> Page:
            starts.append(after)
            return imported.read(after, upto, topics, limit)

    reports = rebuild_together(list(imported.views.values()), Log())
    assert {name: view.digest() for name, view in imported.views.items()} == before
    assert starts == list(range(0, imported.max_position(), 5))
    assert reports["operations"].events == imported.max_position()


def test_a_rebuild_is_swapped_in_for_whoever_has_the_view_open(imported: MailApplication) -> None:
    """Another connection to the view (another process's) reads the rebuilt view, not a
    file taken from under it, and a connection opened later agrees. The name leads to
    the live file, and nothing of the files it replaced is left."""
    live = imported.view("messages")
    with live.db.transaction():
        live.db.execute("UPDATE messages SET size = size + 1")
    damaged = live.digest()
    other = View(MessageIndex(), live.store)
    directory = imported.home.views

    def files() -> list[str]:
        return sorted(p.name for p in directory.iterdir() if p.name.startswith("messages"))

    try:
        assert other.digest() == damaged
        generations = []
        for _ in range(3):
            generations.append(os.readlink(directory / "messages.db"))
            logs = [f"{generations[-1]}-shm", f"{generations[-1]}-wal"]  # connections are open
            assert files() == sorted(["messages.db", "messages.lock", generations[-1], *logs])
            live.rebuild(imported)
            assert other.digest() == live.digest() != damaged
        assert len(set(generations)) == 3
        later = View(MessageIndex(), live.store)
        assert later.digest() == other.digest() and later.verify(imported)
        later.close()
    finally:
        other.close()


def _generation(store: SQLCipherViewStore, value: str) -> SQLCipherDB:
    fresh = store.open_fresh("v")
    fresh.execute("CREATE TABLE t(x)")
    fresh.execute("BEGIN")
    fresh.execute("INSERT INTO t VALUES (?)", (value,))
    return fresh


def _live(store: SQLCipherViewStore) -> list[str]:
    db = store.open("v")
    try:
        return [x for (x,) in db.execute("SELECT x FROM t")]
    finally:
        db.close()


def test_swaps_of_one_view_at_once_each_swap_their_own(tmp_path: Path) -> None:
    """Two processes rebuild a view at once (two stores on one directory: their locks
    conflict as two processes' do): each swaps in what it built, the last one stays live,
    and nothing else is left."""
    first, second = SQLCipherViewStore(tmp_path, bytes(32)), SQLCipherViewStore(tmp_path, bytes(32))
    first.swap(_generation(first, "0"), "v")
    building = [_generation(first, "A"), _generation(second, "B")]
    first.swap(building[0], "v")  # its sweep leaves the one being built
    assert _live(second) == ["A"]
    second.swap(building[1], "v")
    assert _live(first) == ["B"]
    live = os.readlink(tmp_path / "v.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["v.db", "v.lock", live])


def test_a_swap_deletes_what_crashes_left(tmp_path: Path) -> None:
    """A generation neither live nor being built (a crash before the former one was
    deleted, or a home copied without its links) and a link never swapped in."""
    store = SQLCipherViewStore(tmp_path, bytes(32))
    store.swap(_generation(store, "0"), "v")
    left = tmp_path / f"v.{uuid.uuid4().hex}.db"
    shutil.copyfile(tmp_path / "v.db", left)
    (tmp_path / f"{left.name}.link").symlink_to(left.name)
    (tmp_path / "w.db").write_bytes(b"another view's file")
    store.swap(_generation(store, "1"), "v")
    live = os.readlink(tmp_path / "v.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["v.db", "v.lock", live, "w.db"])
    assert _live(store) == ["1"]


def test_a_view_opened_while_it_is_swapped_opens_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swap between finding the live file and opening it: the connection is on the
    new one, or knows that its file was replaced."""
    store = SQLCipherViewStore(tmp_path, bytes(32))
    store.swap(_generation(store, "0"), "v")
    real_stat, swapped = os.stat, []

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if not swapped:
            swapped.append(path)
            store.swap(_generation(store, "1"), "v")  # another process's, in the window
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    db = store.open("v")
    monkeypatch.undo()
    try:
        assert swapped
        assert [x for (x,) in db.execute("SELECT x FROM t")] == ["1"] and not db.replaced()
        store.swap(_generation(store, "2"), "v")
        assert db.replaced() and _live(store) == ["2"]
    finally:
        db.close()


def test_a_view_opened_as_its_file_is_deleted_opens_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file the name led to is deleted by a swap once SQLite has opened it: its
    first read fails as a damaged file's would, and the new one is opened instead
    (not taken for damaged and replaced by an empty one)."""
    store = SQLCipherViewStore(tmp_path, bytes(32))
    store.swap(_generation(store, "0"), "v")
    real, swapped = sqlcipher3.connect, []

    def connect(database: str, **kwargs: Any) -> Any:
        connection = real(database, **kwargs)
        if not swapped and database.endswith("mode=rw"):
            swapped.append(database)
            store.swap(_generation(store, "1"), "v")
        return connection

    monkeypatch.setattr(sqlcipher3, "connect", connect)
    db = store.open("v")
    try:
        assert swapped and [x for (x,) in db.execute("SELECT x FROM t")] == ["1"]
    finally:
        db.close()


def test_opening_a_view_deletes_what_crashes_and_earlier_versions_left(tmp_path: Path) -> None:
    """Not the live file of an earlier version (a file, with its write-ahead log)."""
    store = SQLCipherViewStore(tmp_path, bytes(32))
    legacy = SQLCipherDB(tmp_path / "v.db", bytes(32), bulk=True)
    legacy.execute("PRAGMA journal_mode=WAL")
    legacy.execute("CREATE TABLE t(x)")
    legacy.execute("INSERT INTO t VALUES ('legacy')")  # left in its write-ahead log
    left = [f"v.db.{purpose}" for purpose in ("rebuild", "verify", "drop")]
    crashed = f"v.{uuid.uuid4().hex}.db"
    for name in [*left, crashed, f"{crashed}.new", f"v.{uuid.uuid4().hex}.db-shm"]:
        (tmp_path / name).write_bytes(b"left")
    (tmp_path / "v.db.link").symlink_to("v.db.rebuild")
    db = store.open("v")
    try:
        assert [x for (x,) in db.execute("SELECT x FROM t")] == ["legacy"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "v.db",
            "v.db-shm",
            "v.db-wal",
            "v.lock",
        ]
    finally:
        db.close()
        legacy.close()
    store.swap(_generation(store, "new"), "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["v.db", "v.lock", os.readlink(tmp_path / "v.db")]
    )


def test_views_reached_through_a_link_or_a_relative_path_keep_their_live_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to("real")
    monkeypatch.chdir(tmp_path)
    for directory in (tmp_path / "alias", Path("alias/../real")):
        store = SQLCipherViewStore(directory, bytes(32))
        for value in ("0", "1"):
            store.swap(_generation(store, value), "v")
            assert _live(store) == [value]


def test_a_view_that_cannot_be_opened_says_so(tmp_path: Path) -> None:
    (tmp_path / "v.db").mkdir()
    with pytest.raises(StoreError, match=r"v\.db cannot be opened"):
        SQLCipherViewStore(tmp_path, bytes(32)).open("v")


def test_a_large_transaction_commits_aside_and_the_next_use_waits_for_it(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    db = store.open("big")
    db.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    rows = [(n,) for n in range(COMMIT_ASIDE_FROM)]
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?)", rows)
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == len(rows)
    other = store.open("big")  # another connection: committed, once the first has waited
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == len(rows)
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?)", [(n + len(rows),) for n in range(len(rows))])
    db.close()  # waits for the commit
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 2 * len(rows)
    other.close()


def test_a_commit_aside_that_fails_fails_the_next_use_and_changes_nothing(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    db = store.open("failing")
    db.script(
        "PRAGMA foreign_keys = ON;"
        "CREATE TABLE parent (n INTEGER PRIMARY KEY);"
        "CREATE TABLE child (n INTEGER PRIMARY KEY, parent INTEGER "
        "REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    )
    with db.transaction():  # the constraint fails at COMMIT, in the committing thread
        db.executemany("INSERT INTO child VALUES (?, 1)", [(n,) for n in range(COMMIT_ASIDE_FROM)])
    with pytest.raises(sqlcipher3.IntegrityError, match="FOREIGN KEY"):
        db.execute("SELECT 1")
    assert db.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    with db.transaction():  # and the connection goes on
        db.execute("INSERT INTO parent VALUES (1)")
    assert db.execute("SELECT count(*) FROM parent").fetchone()[0] == 1
    db.close()


def _written_by_another(tmp_path: Path) -> tuple[SQLCipherDB, SQLCipherDB]:
    """Two connections to a view with a table ``t``: the second (another process, as
    SQLite sees it) has a write under way."""
    store = SQLCipherViewStore(tmp_path, bytes(32))
    db, holder = store.open("v"), store.open("v")
    db.script("CREATE TABLE t (n INTEGER)")
    holder.connection.execute("BEGIN IMMEDIATE")
    return db, holder


def test_a_write_waits_for_another_process_s_in_short_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, holder = _written_by_another(tmp_path)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            holder.connection.execute("COMMIT")  # the other's write ends

    monkeypatch.setattr(views, "sleep", pause)
    with db.transaction():
        db.execute("INSERT INTO t VALUES (1)")
    assert pauses == list(views.BUSY_PAUSES_S[:3])
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == views.BUSY_TIMEOUT_MS
    assert holder.execute("SELECT n FROM t").fetchall() == [(1,)]
    db.close()
    holder.close()


def test_a_write_that_waited_too_long_for_another_s_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, holder = _written_by_another(tmp_path)
    # its time runs out at the first refusal
    monkeypatch.setattr(views, "monotonic", itertools.chain([0.0], itertools.repeat(1e9)).__next__)
    monkeypatch.setattr(views, "sleep", lambda seconds: pytest.fail("paused"))
    with pytest.raises(sqlcipher3.OperationalError, match="locked"), db.transaction():
        db.execute("INSERT INTO t VALUES (1)")
    assert not db.connection.in_transaction
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == views.BUSY_TIMEOUT_MS
    holder.connection.execute("COMMIT")
    with db.transaction():  # the connection goes on
        db.execute("INSERT INTO t VALUES (2)")
    assert holder.execute("SELECT n FROM t").fetchall() == [(2,)]
    db.close()
    holder.close()


@pytest.mark.parametrize("rows", [3, COMMIT_ASIDE_FROM], ids=["here", "aside"])
def test_deferred_statements_run_last_in_their_transaction(tmp_path: Path, rows: int) -> None:
    db = SQLCipherViewStore(tmp_path, bytes(32)).open("deferred")
    db.script("CREATE TABLE staged (n INTEGER PRIMARY KEY); CREATE TABLE kept (n INTEGER)")
    with db.transaction():
        db.defer("INSERT INTO kept SELECT n FROM staged")  # after the rows below
        db.executemany("INSERT INTO staged VALUES (?)", [(n,) for n in range(rows)])
        db.defer("DELETE FROM staged")
    assert db.execute("SELECT count(*) FROM kept").fetchone()[0] == rows
    assert db.execute("SELECT count(*) FROM staged").fetchone()[0] == 0
    db.defer("INSERT INTO kept VALUES (-1)")  # outside a transaction: at once
    assert db.execute("SELECT min(n) FROM kept").fetchone()[0] == -1
    with pytest.raises(KeyError), db.transaction():
        db.defer("DELETE FROM kept")
        raise KeyError  # rolled back: the deferred statement goes too
    assert db.execute("SELECT count(*) FROM kept").fetchone()[0] == rows + 1
    db.close()


def test_a_fresh_file_commits_what_was_deferred_between_its_transactions(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    fresh = store.open_fresh("v")
    fresh.script("CREATE TABLE t (n INTEGER)")
    with fresh.transaction():  # its one transaction for all begins
        fresh.execute("INSERT INTO t VALUES (1)")
    fresh.defer("INSERT INTO t VALUES (2)")
    store.swap(fresh, "v")
    live = store.open("v")
    assert [n for (n,) in live.execute("SELECT n FROM t ORDER BY n")] == [1, 2]
    live.close()


def test_a_deferred_statement_that_fails_aside_fails_the_next_use(tmp_path: Path) -> None:
    db = SQLCipherViewStore(tmp_path, bytes(32)).open("deferred")
    db.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(COMMIT_ASIDE_FROM)])
        db.defer("INSERT INTO t VALUES (0)")  # a duplicate key, found aside
    with pytest.raises(sqlcipher3.IntegrityError, match="UNIQUE"):
        db.execute("SELECT 1")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # all rolled back
    db.close()


def test_a_deferred_statement_that_fails_here_rolls_its_transaction_back(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    db, other = store.open("small"), store.open("small")
    db.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    with pytest.raises(sqlcipher3.IntegrityError), db.transaction():
        db.execute("INSERT INTO t VALUES (1)")
        db.defer("INSERT INTO t VALUES (1)")
    assert not db.connection.in_transaction  # the view's write lock is not kept
    with other.transaction():
        other.execute("INSERT INTO t VALUES (2)")
    assert [n for (n,) in db.execute("SELECT n FROM t")] == [2]
    db.close()
    other.close()


def test_a_failure_aside_lets_other_writers_in_before_the_next_use(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    db, other = store.open("big"), store.open("big")
    db.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(COMMIT_ASIDE_FROM)])
        db.defer("INSERT INTO t VALUES (0)")
    with other.transaction():  # waits for the lock at most until it is rolled back aside
        other.execute("INSERT INTO t VALUES (-1)")
    with pytest.raises(sqlcipher3.IntegrityError):
        db.close()
    assert [n for (n,) in other.execute("SELECT n FROM t")] == [-1]
    other.close()


def test_a_fresh_file_whose_page_failed_aside_is_discarded_all_the_same(tmp_path: Path) -> None:
    store = SQLCipherViewStore(tmp_path, bytes(32))
    fresh = store.open_fresh("v")
    fresh.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    with fresh.transaction():
        fresh.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(COMMIT_ASIDE_FROM)])
        fresh.defer("INSERT INTO t VALUES (0)")
    with pytest.raises(sqlcipher3.IntegrityError):
        store.discard(fresh)
    assert not list(tmp_path.glob("v.*.db*"))


def test_ctrl_c_while_waiting_for_the_work_aside_stops_it_and_leaves_the_view_as_it_was(
    tmp_path: Path,
) -> None:
    db = SQLCipherViewStore(tmp_path, bytes(32)).open("long")
    db.script("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    with db.transaction():
        db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(COMMIT_ASIDE_FROM)])
        db.defer(  # minutes of work, in one step
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
            " SELECT count(*) FROM c"
        )
    interrupt = threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)
    )
    interrupt.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        db.execute("SELECT 1")
    assert time.monotonic() - started < 30  # stopped, not waited out (that takes minutes)
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # rolled back
    with db.transaction():  # and the connection goes on
        db.execute("INSERT INTO t VALUES (1)")
    db.close()


def test_a_view_that_differs_from_its_rebuild_fails_verify(imported: MailApplication) -> None:
    view = imported.view("messages")
    with view.db.transaction():
        view.db.execute("UPDATE messages SET size = size + 1")
    assert not view.verify(imported)
    view.rebuild(imported)
    assert view.verify(imported)


# a page of index changes -----------------------------------------------------------

CONTENTS = (
    MessageContent(header_id="a", subject="status update", sender="ann", text="fix it"),
    MessageContent(
        header_id="a", subject="re: patch\x00", to="bob", sent=datetime(2024, 1, 2, tzinfo=UTC)
    ),
)
MESSAGES = [uuid.UUID(int=n) for n in range(3)]


@given(
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 1)), max_size=12),
    split=st.integers(0, 12),
)
def test_a_page_of_index_changes_equals_its_events_applied_one_by_one(
    app: MailApplication,
    steps: list[tuple[bool, int, int]],
    split: int,
) -> None:
    """Messages indexed, removed and indexed again in the same page (whose writes are
    deferred) and in the page before: the rows are those of each message's last
    indexing, unless it was removed after it."""
    with operation_scope(uuid7(), uuid.uuid4()):
        events = [
            (
                n,
                (MessageIndexed if index else MessageRemoved)(
                    originator_id=MESSAGES[m], originator_version=n, **CONTENTS[c].model_dump()
                ),
            )
            for n, (index, m, c) in enumerate(steps, 1)
        ]
    expected: dict[str, str] = {}
    for index, m, c in steps:
        expected.pop(MESSAGES[m].hex, None)
        if index:
            expected[MESSAGES[m].hex] = CONTENTS[c].subject
    projection, store = MessageIndex(), app.view("messages").store
    contents = []
    for pages in ([events[:split], events[split:]], [[e] for e in events]):
        db = store.open_fresh("messages")
        try:
            projection.create(db)
            for page in pages:
                with db.transaction():
                    projection.apply_page(db, page)
            contents.append(
                [[tuple(row) for row in db.execute(q)] for q in projection.content_queries()]
            )
        finally:
            store.discard(db)
    assert contents[0] == contents[1]
    rows = {id_: subject for _rowid, id_, subject, *_ in contents[0][0]}
    assert rows == expected


# incremental == rebuild, for random command sequences -------------------------------


class Views(RuleBasedStateMachine):
    """Random imports, tag changes, removals and restarts; the views always equal a fold
    of the log from scratch, and every command's effect shows in search at once. Each
    example's home is SQLite files, or the ``database`` emptied."""

    mailboxes: ClassVar[list[Path]] = []
    keyring: ClassVar[Keyring]
    database: ClassVar[str | None] = None

    @initialize()
    def open_home(self) -> None:
        self.where = Path(tempfile.mkdtemp(prefix="eventpile-views-"))
        (self.where / "views").mkdir()
        if self.database:
            empty_database(self.database)
        self.home = Home(self.where, self.database)
        self.app = App(self.home, self.keyring)
        self.expected_total = 0
        self.import_mailbox(0)  # start with some mail, some of it tagged
        self.tag_messages("add", TAGS[0], "patch")

    def teardown(self) -> None:
        if hasattr(self, "app"):
            self.app.close()
            shutil.rmtree(self.where)

    def run(self, command: Command) -> dict[str, Any] | None:
        """Execute; a refusal writes nothing."""
        before = self.app.max_position()
        try:
            return self.app.execute(command).result
        except DomainError:
            assert self.app.max_position() == before
            return None

    @rule(mailbox=st.integers(0, 2))
    def import_mailbox(self, mailbox: int) -> None:
        result = self.run(ImportMailbox(path=self.mailboxes[mailbox]))
        assert result is not None
        self.expected_total += result["indexed"]

    @rule(
        action=st.sampled_from(["add", "remove"]),
        tag=st.sampled_from(TAGS),
        query=st.sampled_from(QUERIES),
    )
    def tag_messages(self, action: str, tag: str, query: str) -> None:
        matching = set(matching_ids(self.app.view("messages").db, parse_query(query)))
        result = self.run(TagMessages(action=action, tag=tag, query=query))
        tagged = set(matching_ids(self.app.view("messages").db, parse_query(f"tag:{tag}")))
        if action == "add":
            assert result is not None and matching <= tagged
        else:
            assert not matching & tagged

    @rule(old=st.sampled_from(TAGS), new=st.sampled_from(TAGS))
    def rename_tag(self, old: str, new: str) -> None:
        db = self.app.view("messages").db
        members = set(matching_ids(db, parse_query(f"tag:{old}")))
        if self.run(RenameTag(tag=old, new_name=new)) is not None:
            assert set(matching_ids(db, parse_query(f"tag:{new}"))) == members

    @rule(tag=st.sampled_from(TAGS))
    def remove_tag(self, tag: str) -> None:
        self.run(RemoveTag(tag=tag))
        assert total(self.app, f"tag:{tag}") == 0

    @rule(query=st.sampled_from(QUERIES[1:]))
    def unindex(self, query: str) -> None:
        result = self.run(UnindexMatching(query=query))
        assert result is not None
        self.expected_total -= result["removed"]
        assert total(self.app, query) == 0

    @rule()
    def restart(self) -> None:
        self.app.close()
        self.app = App(self.home, self.keyring)

    @rule(name=st.sampled_from(["messages", "operations"]))
    def rebuild(self, name: str) -> None:
        view = self.app.view(name)
        before = view.digest()
        found = results(self.app)
        view.rebuild(self.app)
        assert view.digest() == before
        assert results(self.app) == found

    @invariant()
    def views_are_current_and_complete(self) -> None:
        if not hasattr(self, "app"):
            return
        for view in self.app.views.values():
            assert view.position == self.app.max_position()
        assert total(self.app, "") == self.expected_total

    def check_against_rebuild(self) -> None:
        for view in self.app.views.values():
            assert view.verify(self.app)


def test_incremental_views_equal_a_rebuild_for_any_command_sequence(
    mailboxes: list[Path], database_url: str | None
) -> None:
    class Machine(Views):
        def teardown(self) -> None:
            if hasattr(self, "app"):
                self.check_against_rebuild()
            super().teardown()

    Machine.mailboxes = mailboxes
    Machine.database = database_url
    Machine.keyring = Keyring(uuid.uuid4(), {1: os.urandom(32)}, 1)
    # on PostgreSQL (under the ``ci`` profile) fewer programs: each view write is a round trip
    examples = settings.default.max_examples // (1 if database_url is None else 2)
    run_state_machine_as_test(
        Machine, settings=settings(max_examples=examples or 1, stateful_step_count=10)
    )


# the query language -----------------------------------------------------------------


def day(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


def test_an_apostrophe_is_a_word_break_as_in_the_index(imported: MailApplication) -> None:
    subject = search(imported.view("messages").db, parse_query("*"), 1)["results"][0]["subject"]
    first, second = words(subject)[:2]
    assert total(imported, f"{first}'{second}") == total(imported, f'"{first} {second}"') > 0


def test_a_query_of_as_many_terms_as_allowed_runs(imported: MailApplication) -> None:
    most = " ".join(f"tag:t{n}" for n in range(MAX_TERMS))
    assert search(imported.view("messages").db, parse_query(most))["total"] == 0
    with pytest.raises(QueryError, match="more than"):
        parse_query(most + " one")


def test_date_bounds_are_after_inclusive_before_exclusive(imported: MailApplication) -> None:
    """Counted independently from the events' own dates."""
    events = imported.read(0, imported.max_position(), (MessageIndexed,), 1000)
    sent = [e.sent for _, e in events if isinstance(e, MessageIndexed)]
    dates = sorted(int(s.timestamp()) for s in sent if s is not None)
    assert len(dates) == total(imported, "") > 2
    middle = datetime.fromtimestamp(dates[len(dates) // 2], UTC).strftime("%Y-%m-%d")
    bound = day(middle)
    assert total(imported, f"after:{middle}") == sum(d >= bound for d in dates)
    assert total(imported, f"before:{middle}") == sum(d < bound for d in dates)
    assert total(imported, f"after:{middle} before:{middle}") == 0


def test_prefixes_phrases_and_fields_narrow_as_they_should(imported: MailApplication) -> None:
    assert total(imported, "patch*") >= total(imported, "patch") > 0
    assert total(imported, '"status update"') <= total(imported, "status update")
    assert total(imported, "subject:patch") <= total(imported, "patch")
    assert total(imported, "tag:a") == total(imported, "patch")
    assert total(imported, "tag:nosuchtag") == 0
    first = search(imported.view("messages").db, parse_query(""), 1)["results"][0]
    address = first["from"].rpartition("<")[2].rstrip(">")
    assert total(imported, f'from:"{address}"') >= 1


class App(MailApplication):
    """The mail application with this module's own test commands."""

    handlers = (_unindex,)
