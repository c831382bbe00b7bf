"""The shortcuts taken for speed give the same answers as the plain paths: batched
aggregate loads, parsing a mailbox in a second process, imports that use both, the
garbage collector pause of bulk folds, and tag searches led by the tag's index."""

from __future__ import annotations

import gc
import gzip
import mailbox
import multiprocessing
import multiprocessing.queues
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile.commands.dispatcher import CommandFailed
from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.mail import commands as mail
from eventpile.mail import mailparse
from eventpile.mail import query as messages_query
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.index import MessageIndex
from eventpile.mail.language import And, Dates
from eventpile.mail.mailparse import (
    MailboxError,
    count_messages,
    read_mailbox,
    read_mailbox_aside,
)
from eventpile.mail.message import (
    Message,
    MessageContent,
    MessageIndexed,
    MessageRemoved,
    MessageTagged,
)
from eventpile.mail.query import _plan, matching_ids, parse_query, search
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.base import View, catch_up_together, gc_paused
from eventpile.store.sqlite import STREAMS_PER_QUERY
from eventpile.store.views import SQLCipherViewStore

DAY = 86400
MALFORMED = b"From a@b Mon Jan  1 00:00:00 2024\njust text, no header\n\n"


@pytest.fixture(scope="module")
def mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_mbox(tmp_path_factory.mktemp("mail") / "box.mbox", 60, seed=3)
    with path.open("ab") as f:
        f.write(MALFORMED)
    return path


def test_load_many_equals_one_load_each(app: MailApplication) -> None:
    ids = [uuid.uuid4() for _ in range(STREAMS_PER_QUERY + 7)]
    tag_id = uuid.uuid4()
    with operation_scope(uuid7(), None):
        events: list[DomainEvent] = [
            Message.index(i, MessageContent(header_id=f"<{i}>")) for i in ids[::2]
        ]
        events += [
            MessageTagged(originator_id=i, originator_version=2, tag_id=tag_id) for i in ids[::4]
        ]
    app.append(events)
    asked = [*ids, uuid.uuid4()]  # and one that was never written
    loaded = app.load_many(Message, asked)
    assert loaded == {i: app.load(Message, i) for i in asked}
    assert sum(state is not None for state in loaded.values()) == len(ids[::2])
    assert all(loaded[i].has_tag(tag_id) for i in ids[::4])  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["mbox", "gzip", "maildir"])
def test_reading_aside_counts_what_it_yields(mbox: Path, tmp_path: Path, kind: str) -> None:
    """The count comes from the reading process (a gzip file's after the messages of its
    head); so does the error of a path that is no mailbox of its kind."""
    path, bad = mbox, tmp_path / "notes.txt"
    bad.write_text("no mail here\n")
    if kind == "gzip":
        path, bad = tmp_path / "box.mbox.gz", tmp_path / "notes.gz"
        path.write_bytes(gzip.compress(mbox.read_bytes()))
        bad.write_bytes(gzip.compress(b"no mail here\n"))
    elif kind == "maildir":
        path, bad = tmp_path / "Mail", tmp_path / "NotMail"
        box = mailbox.Maildir(path)
        for n in range(12):
            box.add(f"From: a@b\nMessage-ID: <{n}@b>\n\nmail {n}\n".encode())
        bad.mkdir()
    items = read_mailbox_aside(path, batch=5)
    assert items.total() == count_messages(path) == len(list(items))
    assert items.total() == (12 if kind == "maildir" else 61)
    with pytest.raises(MailboxError, match="not a"):
        read_mailbox_aside(bad).total()
    assert not multiprocessing.active_children()


def test_reading_aside_yields_what_reading_here_does(mbox: Path) -> None:
    here = list(read_mailbox(mbox))
    aside = list(read_mailbox_aside(mbox, batch=7))
    assert [str(m) for m in aside] == [str(m) for m in here]
    assert [m for m in aside if not isinstance(m, Exception)] == [
        m for m in here if not isinstance(m, Exception)
    ]
    assert len(here) == 61 and isinstance(aside[-1], ValueError)
    assert not multiprocessing.active_children()


@settings(max_examples=15, deadline=None)
@given(head=st.integers(min_value=1, max_value=40_000))
def test_a_gzip_file_read_aside_yields_what_reading_it_here_does_whatever_its_head(
    mbox: Path, tmp_path_factory: pytest.TempPathFactory, head: int
) -> None:
    """Its head (the first ``head`` bytes, decompressed apart) is parsed while the whole
    is decompressed by another process: together, the same messages, each once, in order."""
    path = tmp_path_factory.mktemp("gzip") / "box.mbox.gz"
    path.write_bytes(gzip.compress(mbox.read_bytes()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mailparse, "HEAD_BYTES", head)  # the reading process is forked
        items = read_mailbox_aside(path, batch=7)
        aside = list(items)
    here = list(read_mailbox(path))
    assert [str(m) for m in aside] == [str(m) for m in here]
    assert [m for m in aside if not isinstance(m, Exception)] == [
        m for m in here if not isinstance(m, Exception)
    ]
    assert items.total() == len(here) == 61
    assert not multiprocessing.active_children()


def test_an_import_of_a_gzip_file_cut_short_writes_nothing(
    app: MailApplication, mbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its head's messages are parsed (and looked up) before the cut is found: the cut
    fails the import before anything is written."""
    packed = gzip.compress(mbox.read_bytes())
    cut = tmp_path / "cut.mbox.gz"
    cut.write_bytes(packed[: len(packed) * 3 // 4])
    monkeypatch.setattr(mail, "PARSE_ASIDE_FROM", 1)
    monkeypatch.setattr(mail, "FLUSH_EVERY", 5)
    monkeypatch.setattr(mail, "FLUSH_WAITING_FROM", 1)
    monkeypatch.setattr(mailparse, "HEAD_BYTES", 2_000)
    before = app.max_position()
    with pytest.raises(CommandFailed, match="not a readable gzip file"):
        app.execute(ImportMailbox(path=cut))
    assert app.read(before, app.max_position(), (MessageIndexed,), 100) == []


def test_reading_aside_raises_the_readers_error_and_stops_early(mbox: Path, tmp_path: Path) -> None:
    not_mail = tmp_path / "notes.txt"
    not_mail.write_text("no mail here\n")
    with pytest.raises(MailboxError, match="not an mbox"):
        list(read_mailbox_aside(not_mail))
    items = read_mailbox_aside(mbox, batch=5)
    next(items)
    items.close()
    assert not multiprocessing.active_children()


def test_reading_aside_stopped_early_ends_even_when_term_raises(tmp_path: Path) -> None:
    """The command line turns TERM into KeyboardInterrupt; a reader forked from it that
    is stopped early with a full queue still ends (it waited forever on its pipe)."""
    probe = (
        "import signal, sys\n"
        "from pathlib import Path\n"
        "from eventpile.mail.mailparse import read_mailbox_aside\n"
        "def raise_(signum, frame): raise KeyboardInterrupt\n"
        "signal.signal(signal.SIGTERM, raise_)\n"
        "items = read_mailbox_aside(Path(sys.argv[1]), batch=50)\n"
        "next(items)\n"
        "import time; time.sleep(1)  # its queue fills up\n"
        "items.close()\n"
        "print('ended')\n"
    )
    big = write_mbox(tmp_path / "big.mbox", 3000, seed=3)  # more than a pipe holds
    done = subprocess.run(
        [sys.executable, "-c", probe, str(big)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout == "ended\n", done.stderr


@pytest.mark.parametrize("aside_from", [1, 10**9], ids=["aside", "here"])
def test_import_parsing_aside_or_here(
    app: MailApplication, mbox: Path, monkeypatch: pytest.MonkeyPatch, aside_from: int
) -> None:
    monkeypatch.setattr(mail, "PARSE_ASIDE_FROM", aside_from)
    monkeypatch.setattr(mail, "FLUSH_EVERY", 25)  # several batches of preloaded states
    first = app.execute(ImportMailbox(path=mbox)).result
    again = app.execute(ImportMailbox(path=mbox)).result
    assert (first["indexed"], first["skipped"], first["failed"]) == (60, 0, 1)
    assert (again["indexed"], again["skipped"], again["failed"]) == (0, 60, 1)


def test_gc_paused_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyError), gc_paused():
        assert not gc.isenabled()
        raise KeyError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


SECONDS = (-2 * DAY, -1, 0, DAY - 1, DAY, DAY + 1, 2 * DAY, None)
DAY_QUERIES = ("", "after:1970-01-02", "before:1970-01-02", "after:1969-12-31 before:1970-01-03")
QUERIES = (*DAY_QUERIES, *(f"mail {q}" for q in DAY_QUERIES))  # the last through full text


class Log:
    """A list of events as the source of a view."""

    def __init__(self, events: list[DomainEvent]):
        self.events = list(enumerate(events, 1))

    def max_position(self) -> int:
        return len(self.events)

    def read(
        self, after: int, upto: int, topics: Sequence[type[DomainEvent]], limit: int
    ) -> list[tuple[int, DomainEvent]]:
        found = [(p, e) for p, e in self.events[after:upto] if not topics or type(e) in topics]
        return found[:limit]


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(SECONDS), st.booleans(), st.booleans()),
        max_size=40,
    )
)
def test_sqlite_rowids_sort_and_filter_like_dates(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int | None, bool, bool]]
) -> None:
    """Newest first (undated last), ties by arrival; date ranges; through reindexing and
    removal, within a page of events and across pages."""
    ids = [uuid.UUID(int=n + 1) for n in range(6)]
    versions = dict.fromkeys(ids, 0)
    events: list[DomainEvent] = []
    expected: dict[uuid.UUID, tuple[int | None, int]] = {}  # id: (date, arrival)
    pages: list[int] = []  # catch up after these many events
    for n, second, remove, page_ends in steps:
        message_id = ids[n]
        versions[message_id] += 1
        sent = None if second is None else datetime.fromtimestamp(second, UTC)
        content = MessageContent(header_id=str(n), subject=f"mail {n}", sent=sent).model_dump()
        kind = MessageRemoved if remove and message_id in expected else MessageIndexed
        events.append(
            kind(originator_id=message_id, originator_version=versions[message_id], **content)
        )
        if kind is MessageRemoved:
            del expected[message_id]
        else:
            expected[message_id] = (second, len(events))
        if page_ends:
            pages.append(len(events))
    view = View(MessageIndex(), SQLCipherViewStore(tmp_path_factory.mktemp("view"), bytes(32)))
    try:
        for end in [*pages, len(events)]:
            view.catch_up(Log(events[:end]))
        for text in QUERIES:
            query = parse_query(text)
            ranges = [
                n
                for n in (query.root.nodes if isinstance(query.root, And) else (query.root,))
                if isinstance(n, Dates)
            ]
            kept = [
                (date, arrival, i.hex)
                for i, (date, arrival) in expected.items()
                if all(
                    date is not None
                    and (r.start is None or date >= r.start)
                    and (r.end is None or date < r.end)
                    for r in ranges
                )
            ]
            kept.sort(key=lambda k: (k[0] is not None, k[0] or 0, k[1]), reverse=True)
            assert matching_ids(view.db, query) == [k[2] for k in kept], text
            assert search(view.db, query)["total"] == len(kept), text
    finally:
        view.close()


@settings(max_examples=30)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), max_size=25))
def test_a_full_second_spills_and_rebuilds_the_same(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, bool, bool]]
) -> None:
    """Past the rowids of one second (two here: ``DATE_BITS`` of 1) a message takes any
    free one; every indexed message keeps one row that its words find, through removals
    and reindexing within and across pages, and the fold in one page equals it."""
    ids = [uuid.UUID(int=n + 1) for n in range(5)]
    versions = dict.fromkeys(ids, 0)
    events: list[DomainEvent] = []
    indexed: set[uuid.UUID] = set()
    pages: list[int] = []
    sent = datetime.fromtimestamp(DAY, UTC)
    for n, remove, page_ends in steps:
        versions[ids[n]] += 1
        content = MessageContent(header_id=str(n), subject=f"mail{n}", sent=sent).model_dump()
        kind = MessageRemoved if remove and ids[n] in indexed else MessageIndexed
        events.append(kind(originator_id=ids[n], originator_version=versions[ids[n]], **content))
        (indexed.discard if kind is MessageRemoved else indexed.add)(ids[n])
        if page_ends:
            pages.append(len(events))
    view = View(MessageIndex(), SQLCipherViewStore(tmp_path_factory.mktemp("view"), bytes(32)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("eventpile.mail.index.DATE_BITS", 1)
        try:
            for end in [*pages, len(events)]:
                view.catch_up(Log(events[:end]))
            rows = view.db.execute("SELECT id FROM messages").fetchall()
            assert sorted(r[0] for r in rows) == sorted(i.hex for i in indexed)
            for n, message_id in enumerate(ids):
                found = matching_ids(view.db, parse_query(f"mail{n}"))
                assert found == ([message_id.hex] if message_id in indexed else [])
            assert view.verify(Log(events))
        finally:
            view.close()


def test_views_caught_up_together_equal_their_rebuilds(app: MailApplication, mbox: Path) -> None:
    """Views at different positions, with different topics, read the log once, exactly once."""
    app.execute(ImportMailbox(path=mbox))
    app.execute(TagMessages(action="add", tag="t", query="patch"))
    with operation_scope(uuid7(), None):
        late = [Message.index(uuid.uuid4(), MessageContent(header_id=f"<{n}@x>")) for n in (1, 2)]
    app.append(late[:1])
    app.view("messages").catch_up(app)  # ahead of the others by one event
    app.append(late[1:])
    reports = catch_up_together(list(app.views.values()), app)
    assert reports["messages"].events == 1 and reports["operations"].events == 2
    assert all(
        report.events == 0 for report in catch_up_together(list(app.views.values()), app).values()
    )
    for view in app.views.values():
        assert view.position == app.max_position()
        assert view.verify(app), view.name


def _read_in_daemon(path: Path, results: multiprocessing.queues.Queue[list[str]]) -> None:
    results.put([str(m) for m in read_mailbox_aside(path)])


def test_a_daemonic_process_reads_in_place(mbox: Path) -> None:
    """Daemonic processes may not start processes: reading aside falls back to reading here."""
    context = multiprocessing.get_context("fork")
    results: multiprocessing.queues.Queue[list[str]] = context.Queue()
    process = context.Process(target=_read_in_daemon, args=(mbox, results), daemon=True)
    process.start()
    try:
        assert results.get(timeout=20) == [str(m) for m in read_mailbox(mbox)]
    finally:
        process.join()


@pytest.mark.parametrize(
    "text",
    [
        "tag:many",
        "tag:one",
        "tag:none",
        "tag:many tag:one",
        "tag:many patch",
        "tag:many after:2024-03-01",
    ],
)
def test_tag_searches_find_the_same_however_they_are_led(
    app: MailApplication, mbox: Path, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the tag's index leads (few tagged) or each message is tested newest first
    (many tagged), a search finds the same messages in the same order."""
    app.execute(ImportMailbox(path=mbox))
    app.execute(TagMessages(action="add", tag="many", query="*"))
    newest = search(app.view("messages").db, parse_query("*"), limit=1)["results"][0]
    app.execute(TagMessages(action="add", tag="one", query=f'subject:"{newest["subject"]}"'))
    app.execute(TagMessages(action="add", tag="none", query="*"))
    app.execute(TagMessages(action="remove", tag="none", query="*"))
    db, query = app.view("messages").db, parse_query(text)
    tested = _plan(db, query, tags_lead=False)
    expected = [row[0] for row in db.execute(f"SELECT m.id{tested.source}", tested.params)]
    assert sorted(matching_ids(db, query)) == sorted(expected)
    pages = []
    for few in (0, 10**9):
        monkeypatch.setattr(messages_query, "FEW_TAGGED", few)
        pages.append(search(db, query, limit=10))
    assert pages[0] == pages[1]
    assert pages[0]["total"] == len(expected)
    assert [r["id"] for r in pages[0]["results"]] == matching_ids(db, query)[:10]
