"""The log proves itself whole: every way of damaging it that leaves each remaining
ciphertext intact (deleting, moving, swapping, copying rows in, cutting the end off,
touching the seals) is found by ``check_log`` and named by position, on SQLite and
PostgreSQL; what the application itself writes (undo, purge, rekey, a sync) keeps it
whole (the testing kit's laws check that after every step)."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventpile.commands.undo import Undo
from eventpile.domain.events import operation_scope, uuid7
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.message import Message, MessageIndexed, MessageTagged
from eventpile.mail.synthetic import write_mbox
from eventpile.store import seals
from eventpile.store.errors import StoreError, TamperedData
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE, cli

TAG = uuid.UUID(int=7)


def _fill(app: MailApplication, mbox: Path) -> None:
    app.execute(ImportMailbox(path=mbox))
    tagged = app.execute(TagMessages(action="add", tag="kept", query="*"))
    app.execute(TagMessages(action="remove", tag="kept", query="subject:a*"))
    app.execute(Undo(operation_id=tagged.id))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, Home]]:
    """A home with a few operations, and another home with the same passphrase."""
    base = tmp_path_factory.mktemp("sealed")
    homes = []
    for name in ("home", "other"):
        home = Home(base / name)
        app = MailApplication(home, home.init(PASSPHRASE))
        _fill(app, write_mbox(base / f"{name}.mbox", 12, seed=len(homes)))
        app.close()
        homes.append(home)
    yield homes[0], homes[1]


def _raw_log(backend: str, home: Home) -> tuple[Any, str, str, str]:
    """A connection to the home's log past eventpile (as whoever has the disk or the
    server could write), its events table, position column and parameter mark."""
    if backend == "postgres":
        import psycopg

        url = home.database_file.read_text().strip()
        return psycopg.connect(url, autocommit=True), "eventpile_events", "notification_id", "%s"
    db = sqlite3.connect(home.events_db, isolation_level=None)
    return db, "stored_events", "rowid", "?"


def _rows(db: sqlite3.Connection) -> list[int]:
    return [p for (p,) in db.execute("SELECT rowid FROM stored_events ORDER BY rowid")]


Tamper = Callable[[sqlite3.Connection, sqlite3.Connection, Any], tuple[str, list[int]]]
"""Damage the log (and the other home's log to copy from): what ``check_log`` must say
(a part of the line) and the positions it must name."""


def delete(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    position = pick(_rows(db))
    db.execute("DELETE FROM stored_events WHERE rowid = ?", (position,))
    return "missing (deleted)", [position]


def swap(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    first = pick(_rows(db))
    second = pick([p for p in _rows(db) if p != first])
    states = dict(
        db.execute("SELECT rowid, state FROM stored_events WHERE rowid IN (?, ?)", (first, second))
    )
    for position, other in ((first, second), (second, first)):
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (states[other], position))
    return "changed, moved or swapped", sorted([first, second])


def move(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    position = pick(_rows(db))
    to = max(_rows(db)) + 3
    db.execute("UPDATE stored_events SET rowid = ? WHERE rowid = ?", (to, position))
    return "no seal holds", [to]


def renumber(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    position = pick(_rows(db))
    db.execute(
        "UPDATE stored_events SET originator_version = originator_version + 1000 WHERE rowid = ?",
        (position,),
    )
    return "changed, moved or swapped", [position]


def copy_in(db: sqlite3.Connection, other: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    row = other.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid = ?",
        (pick(_rows(other)),),
    ).fetchone()
    to = max(_rows(db)) + 1
    db.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?, ?)", (to, *row))
    return "no seal holds", [to]


def cut(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    """The end of the log with the seals that hold it."""
    seals = [n for (n,) in db.execute("SELECT number FROM log_seals ORDER BY number")]
    first = pick(seals[1:])
    db.execute("DELETE FROM log_seals WHERE number >= ?", (first,))
    held: set[int] = set()
    for (entries,) in db.execute("SELECT entries FROM log_seals"):
        held |= {p for p, _ in struct.iter_unpack(">q16s", entries)}
    db.execute(f"DELETE FROM stored_events WHERE rowid NOT IN ({','.join(map(str, held))})")
    return "the log was replaced or cut", []


def drop_seal(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    seals = [n for (n,) in db.execute("SELECT number FROM log_seals ORDER BY number")]
    number = pick(seals[:-1])
    db.execute("DELETE FROM log_seals WHERE number = ?", (number,))
    return "seals missing", []


def flip_seal(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    number, entries = pick(list(db.execute("SELECT number, entries FROM log_seals")))
    at = pick(range(len(entries)))
    changed = entries[:at] + bytes([entries[at] ^ 1]) + entries[at + 1 :]
    db.execute("UPDATE log_seals SET entries = ? WHERE number = ?", (changed, number))
    return "not this home's", []


def replay_seal(db: sqlite3.Connection, _: sqlite3.Connection, pick: Any) -> tuple[str, list[int]]:
    """One seal copied over another (what it says then stands in the other's place)."""
    seals = list(db.execute("SELECT number, entries, mac FROM log_seals"))
    number, entries, mac = pick(seals)
    over = pick([n for n, _, _ in seals if n != number])
    db.execute("UPDATE log_seals SET entries = ?, mac = ? WHERE number = ?", (entries, mac, over))
    return "not this home's", []


TAMPERS: list[Tamper] = [
    delete,
    swap,
    move,
    renumber,
    copy_in,
    cut,
    drop_seal,
    flip_seal,
    replay_seal,
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.__name__ for t in TAMPERS])
@given(data=st.data())
def test_every_damage_is_found_and_named(
    template: tuple[Home, Home], tmp_path_factory: pytest.TempPathFactory, tamper: Tamper, data: Any
) -> None:
    source, other = template
    home = Home(tmp_path_factory.mktemp("tampered") / "home")
    shutil.copytree(source.path, home.path)

    def pick(choices: Any) -> Any:
        return data.draw(st.sampled_from(list(choices)))

    with sqlite3.connect(home.events_db) as db, sqlite3.connect(other.events_db) as foreign:
        says, positions = tamper(db, foreign, pick)
    app = MailApplication(home, source.unlock(PASSPHRASE))  # the same keys
    try:
        before = app.max_position()
        found = app.check_log()
        assert app.max_position() == before  # it only reads
    finally:
        app.close()
    assert found, "the damage went unseen"
    line = next((line for line in found if says in line), None)
    assert line is not None, found
    for position in positions:
        assert f"{position:,}" in line, (line, position)


def test_what_the_application_writes_keeps_the_log_whole(
    template: tuple[Home, Home], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Including a rekey (which replaces every ciphertext), on the command line."""
    home, _ = template
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    for args in (["verify"], ["rekey"], ["verify"], ["tag", "add", "later", "*"], ["verify"]):
        code, out, err = cli(args, capsys)
        assert (code, err) == (0, ""), (args, out)
    assert out["log"] == {"sealed": True, "damage": []}


def test_a_check_sees_one_state_of_the_log_while_another_process_writes(
    app: MailApplication, home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another application on the same home writes, and purges, between the rows the
    check reads: it compares the state it began with, and finds it whole."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 10, seed=3))
    other = MailApplication(home, home.unlock(PASSPHRASE))
    sealer = cast(Any, app.recorder).sealer
    checking = sealer.check

    def check_while_writing(seals: Any, rows: Any) -> Any:
        def rows_meanwhile() -> Any:
            for n, row in enumerate(rows):
                if n == 1:
                    other.execute(TagMessages(action="add", tag="meanwhile", query="*"))
                yield row

        return checking(seals, rows_meanwhile())

    monkeypatch.setattr(sealer, "check", check_while_writing)
    monkeypatch.setattr(seals, "PAGE_ROWS", 2)  # the rows read a page at a time, meanwhile
    try:
        assert app.check_log() == []
        monkeypatch.undo()
        assert app.check_log() == [] and other.check_log() == []
    finally:
        other.close()


def test_damage_is_found_on_each_backend(
    app: MailApplication, backend: str, home: Home, tmp_path: Path
) -> None:
    """On PostgreSQL the rows are changed through the server, as its administrator could."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 10, seed=3))
    assert app.check_log() == []
    db, table, position, mark = _raw_log(backend, home)
    try:
        positions = [p for (p,) in db.execute(f"SELECT {position} FROM {table} ORDER BY 1")]
        gone, first, second = positions[3], positions[5], positions[-2]
        db.execute(f"DELETE FROM {table} WHERE {position} = {mark}", (gone,))
        states = dict(
            db.execute(
                f"SELECT {position}, state FROM {table} WHERE {position} IN ({mark}, {mark})",
                (first, second),
            ).fetchall()
        )
        for at, other in ((first, second), (second, first)):
            db.execute(
                f"UPDATE {table} SET state = {mark} WHERE {position} = {mark}", (states[other], at)
            )
    finally:
        db.close()
    assert app.check_log() == [
        f"the log has 2 events changed, moved or swapped: at positions {first:,}, {second:,}",
        f"the log has 1 event missing (deleted): at position {gone:,}",
    ]


def test_the_librarys_database_functions_cannot_write_around_the_seals(
    home: Home, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(PostgreSQL: the library's own insert function would write rows unsealed.)"""
    monkeypatch.setenv("POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    app = MailApplication(home, home.init(PASSPHRASE))
    try:
        _fill(app, write_mbox(tmp_path / "m.mbox", 5, seed=4))
        assert app.check_log() == []
    finally:
        app.close()


@pytest.mark.parametrize("damage", ["deleted", "cut", "seal", "first seal"])
def test_a_command_stops_at_damage_it_reads_across(
    app: MailApplication, backend: str, home: Home, tmp_path: Path, damage: str
) -> None:
    """Another process's writes (the views not caught up with them) read after a row was
    deleted among them, a seal of theirs (the first, with its rows), or the end cut off
    with its seals: the catch-up stops with one line naming the damage, and the views
    fold nothing of it."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 10, seed=3))
    behind = {name: view.position for name, view in app.views.items()}
    writer = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        with operation_scope(uuid7(), uuid.uuid4()):
            for _ in range(6):  # six transactions, six seals
                writer.append(
                    [MessageTagged(originator_id=uuid.uuid4(), originator_version=1, tag_id=TAG)]
                )
        writer.save_head()
    finally:
        writer.close()
    db, table, position, mark = _raw_log(backend, home)
    try:
        written = [
            p
            for (p,) in db.execute(
                f"SELECT {position} FROM {table} WHERE {position} > {mark} ORDER BY 1",
                (max(behind.values()),),
            ).fetchall()
        ]
        assert len(written) == 6
        if damage == "deleted":
            db.execute(f"DELETE FROM {table} WHERE {position} = {mark}", (written[2],))
            says = f"the log has 1 event missing (deleted): at position {written[2]:,}"
        elif damage in ("seal", "first seal"):
            at = written[2 if damage == "seal" else 0]
            (sealed,) = db.execute(
                f"SELECT number FROM log_seals WHERE low <= {mark} AND high >= {mark}",
                (at, at),
            ).fetchone()
            db.execute(f"DELETE FROM log_seals WHERE number = {mark}", (sealed,))
            if damage == "first seal":  # its rows too: nothing left to say they were there
                db.execute(f"DELETE FROM {table} WHERE {position} = {mark}", (at,))
            first = sealed - 2 if damage == "seal" else sealed  # of the six seals
            low = first - 1 if damage == "seal" else sealed  # before what still spans them
            says = f"the log has seals missing between {low:,} and {first + 5:,}"
        else:
            (last,) = db.execute("SELECT max(number) FROM log_seals").fetchone()
            db.execute(f"DELETE FROM {table} WHERE {position} = {mark}", (written[-1],))
            db.execute(f"DELETE FROM log_seals WHERE number = {mark}", (last,))
            says = f"the log was replaced or cut: this home wrote its seal {last:,}"
    finally:
        db.close()
    if damage == "deleted":  # a read of what follows first (a search, say) checks that alone
        assert len(app.read(written[3], written[-1], (), 10)) == 2
    with pytest.raises(TamperedData) as refused:
        app.catch_up()
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value)
    assert {name: view.position for name, view in app.views.items()} == behind
    if damage == "cut":  # and no write seals the cut log, nor lowers the head
        saved = app.head.load()
        with pytest.raises(StoreError, match="the log was replaced or cut"):
            app.execute(TagMessages(action="add", tag="after", query="*"))
        with operation_scope(uuid7(), uuid.uuid4()), pytest.raises(StoreError, match="cut"):
            app.append(  # straight to the store: its seal is refused, its rows roll back
                [MessageTagged(originator_id=uuid.uuid4(), originator_version=1, tag_id=TAG)]
            )
        assert app.head.load() == saved and app.max_position() == written[-2]


def test_a_row_of_ours_changed_among_anothers_writes_stops_the_catch_up(
    app: MailApplication, backend: str, home: Home, tmp_path: Path
) -> None:
    """This process's writes with another's between them, the views not caught up, and a
    row of ours overwritten by another of ours (its ciphertext copied over): the
    catch-up takes our events from memory only where their rows are still the ones
    written, so it stops at the changed row, and the views fold nothing of it."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 4, seed=6))
    behind = {name: view.position for name, view in app.views.items()}
    other = MailApplication(home, home.unlock(PASSPHRASE))

    def tagged(writer: MailApplication) -> list[int]:
        event = MessageTagged(originator_id=uuid.uuid4(), originator_version=1, tag_id=TAG)
        return writer.append([event])

    try:
        with app.deferring_catch_up(), operation_scope(uuid7(), uuid.uuid4()):
            [ours], _, [later] = tagged(app), tagged(other), tagged(app)
    finally:
        other.close()
    db, table, position, mark = _raw_log(backend, home)
    try:
        where = f"WHERE {position} = {mark}"
        (state,) = db.execute(f"SELECT state FROM {table} {where}", (later,)).fetchone()
        db.execute(f"UPDATE {table} SET state = {mark} {where}", (state, ours))
    finally:
        db.close()
    with pytest.raises(TamperedData):
        app.catch_up()
    assert {name: view.position for name, view in app.views.items()} == behind


@pytest.mark.parametrize("garbage", [b"not a seal\n", b"12 zz\n", b"\xff\xfe 00\n", b"7 " * 3000])
def test_a_damaged_head_stops_every_command_and_nothing_is_written(
    app: MailApplication, home: Home, tmp_path: Path, garbage: bytes
) -> None:
    """A head file that names no seal (bytes not a number and a MAC in hex, or more than
    a head holds) refuses a command in one line, with nothing written to the log."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 4, seed=5))
    end = app.max_position()
    home.head_file.write_bytes(garbage)
    with pytest.raises(StoreError, match="is damaged: it holds no seal of the log"):
        app.execute(TagMessages(action="add", tag="after", query="*"))
    assert app.max_position() == end


def test_seals_written_before_they_kept_a_span_are_given_one(
    app: MailApplication, backend: str, home: Home, tmp_path: Path
) -> None:
    """A log sealed by the version before: its seals get their spans when it is opened
    again, and reads across it are checked as any."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 10, seed=3))
    app.close()
    db = _raw_log(backend, home)[0]
    try:
        spans = db.execute("SELECT number, low, high FROM log_seals ORDER BY number").fetchall()
        db.execute(f"DROP INDEX {seals.SPANS_INDEX}")
        db.execute("ALTER TABLE log_seals DROP COLUMN low")
        db.execute("ALTER TABLE log_seals DROP COLUMN high")
        reopened = MailApplication(home, home.unlock(PASSPHRASE))
        try:
            again = db.execute("SELECT number, low, high FROM log_seals ORDER BY number")
            assert again.fetchall() == spans and all(low <= high for _, low, high in spans)
            assert reopened.check_log() == []
            assert list(reopened.read(0, reopened.max_position(), (), 10))
        finally:
            reopened.close()
    finally:
        db.close()


def test_a_record_with_an_event_deleted_is_not_folded(
    app: MailApplication, backend: str, home: Home, tmp_path: Path
) -> None:
    """A command deciding on a record whose middle or first event was deleted stops with
    one line, instead of deciding on part of its history."""
    _fill(app, write_mbox(tmp_path / "m.mbox", 3, seed=3))
    message = next(e.originator_id for _, e in app.all_events() if isinstance(e, MessageIndexed))
    app.execute(TagMessages(action="add", tag="a", query="*"))
    app.execute(TagMessages(action="add", tag="b", query="*"))
    versions = [e.originator_version for e in app.stream(message)]
    assert len(versions) >= 3
    db, table, _, mark = _raw_log(backend, home)
    try:
        deleted = db.execute(
            f"DELETE FROM {table} WHERE originator_id = {mark} AND originator_version = 2 "
            "RETURNING originator_version",
            (message if backend == "postgres" else message.hex,),
        ).fetchall()
        assert deleted == [(2,)]
    finally:
        db.close()
    with pytest.raises(TamperedData, match=f"lost events of record {message}: versions 2 to 2"):
        app.load(Message, message)
    with pytest.raises(TamperedData, match="lost events"):
        app.load_many(Message, [message])
