"""Sync between installations of one user through a folder: the cases users meet.

Each test makes installations that share the data keys (as ``join`` does), works on
them apart, syncs, and checks what a user sees: search results, tags, operations.
"""

from __future__ import annotations

import mailbox
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import CommandFailed, DomainError, DomainEvent, Home, Undo, fold
from eventpile.commands.operations import answer
from eventpile.commands.sync import Sync
from eventpile.commands.worker import Worker
from eventpile.domain.operation import Operation
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.mail.message import Message, MessageContent
from eventpile.mail.query import all_tags, parse_query, search
from eventpile.mail.tag import Tag, TagCreated
from eventpile.projections.operations import recent
from eventpile.store.segments import (
    Folder,
    FolderError,
    Head,
    LocalFiles,
    Record,
    Segment,
    padded_length,
)
from eventpile.testing.sync import decided, interleaved, shared_events
from tests.conftest import PASSPHRASE, cli, eventpile_process
from tests.test_send import Server, free_port, mail


def write_mbox(path: Path, subjects: list[str], text: str = "about") -> Path:
    """A mailbox with a message per subject (its Message-ID made of the subject, its
    text ``text`` and the subject)."""
    box = mailbox.mbox(path)
    for subject in subjects:
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = "Ann <ann@example.org>"
        message["Message-ID"] = f"<{subject.replace(' ', '.')}@example.org>"
        message.set_content(f"{text} {subject}")
        box.add(message)
    box.flush()
    box.close()
    return path


class Installations:
    """Installations of one user (SQLite, or the PostgreSQL databases given) and a folder."""

    def __init__(self, root: Path, count: int, databases: list[str | None] | None = None):
        self.root = root
        self.folder = root / "folder"
        self.folder.mkdir(exist_ok=True)
        databases = databases or [None] * count
        first = Home(root / "i0", databases[0])
        keys = first.init(PASSPHRASE)
        self.apps = [MailApplication(first, keys)]
        for n in range(1, count):
            home = Home(root / f"i{n}", databases[n])
            self.apps.append(MailApplication(home, home.init(PASSPHRASE, keys)))

    def __getitem__(self, n: int) -> MailApplication:
        return self.apps[n]

    def sync(self, *which: int) -> list[dict[str, int]]:
        return [self.apps[n].sync(self.folder).result for n in which or range(len(self))]

    def converge(self) -> None:
        """Sync each twice round: everything each has reaches every other."""
        self.sync()
        self.sync()

    def imported(self, n: int, name: str, subjects: list[str], text: str = "about") -> Operation:
        path = write_mbox(self.root / f"{name}.mbox", subjects, text)
        return self.apps[n].execute(ImportMailbox(path=str(path)))

    def __len__(self) -> int:
        return len(self.apps)

    def close(self) -> None:
        for app in self.apps:
            app.close()


def seen(app: MailApplication, query: str = "*") -> list[tuple[str, list[str]]]:
    """What a search shows: each message's subject and tags, by subject."""
    results = search(app.current("messages"), parse_query(query), limit=1000)["results"]
    return sorted((r["subject"], sorted(r["tags"])) for r in results)


def tags(app: MailApplication) -> list[tuple[str, int]]:
    return sorted((t["name"], t["messages"]) for t in all_tags(app.current("messages")))


event_ids = shared_events


@pytest.fixture
def two(tmp_path: Path) -> Iterator[Installations]:
    installations = Installations(tmp_path, 2)
    yield installations
    installations.close()


# what converges, and how ------------------------------------------------------------


def test_work_apart_then_sync_ends_identical(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    two.imported(1, "b", ["blue"])
    two[0].execute(TagMessages(action="add", tag="work", query="subject:red"))
    two[1].execute(TagMessages(action="add", tag="home", query="subject:blue"))
    two.converge()
    expected = [("blue", ["home"]), ("green", []), ("red", ["work"])]
    assert seen(two[0]) == seen(two[1]) == expected
    assert event_ids(two[0]) == event_ids(two[1])
    for app in two.apps:
        assert all(view.verify(app) for view in app.views.values())


def test_the_same_message_imported_on_both_is_one_message(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    two.imported(1, "b", ["green", "blue"])
    two.converge()
    assert [s for s, _ in seen(two[0])] == [s for s, _ in seen(two[1])] == ["blue", "green", "red"]


def test_an_add_wins_over_a_concurrent_remove(two: Installations) -> None:
    two.imported(0, "a", ["red"])
    two[0].execute(TagMessages(action="add", tag="work", query="*"))
    two.converge()
    two[1].execute(TagMessages(action="remove", tag="work", query="*"))
    # A, not knowing of the removal, removes and adds again: a new add
    two[0].execute(TagMessages(action="remove", tag="work", query="*"))
    two[0].execute(TagMessages(action="add", tag="work", query="*"))
    two.converge()
    assert seen(two[0]) == seen(two[1]) == [("red", ["work"])]


def test_a_tag_made_with_one_name_on_both_ends_as_one_tag(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    two.converge()
    two[0].execute(TagMessages(action="add", tag="work", query="subject:red"))
    two[1].execute(TagMessages(action="add", tag="work", query="subject:green"))
    two.converge()
    assert tags(two[0]) == tags(two[1]) == [("trash", 0), ("work", 2)]
    assert (
        seen(two[0], "tag:work")
        == seen(two[1], "tag:work")
        == [
            ("green", ["work"]),
            ("red", ["work"]),
        ]
    )


def test_renames_at_once_decide_the_same_on_both(two: Installations) -> None:
    two.imported(0, "a", ["red"])
    two[0].execute(TagMessages(action="add", tag="work", query="*"))
    two.converge()
    two[0].execute(RenameTag(tag="work", new_name="job"))
    two[1].execute(RenameTag(tag="work", new_name="office"))
    two.converge()
    assert tags(two[0]) == tags(two[1])
    assert [name for name, _ in tags(two[0])] in (["job", "trash"], ["office", "trash"])


def test_a_removal_and_a_rename_at_once_decide_the_same_on_both(two: Installations) -> None:
    two.imported(0, "a", ["red"])
    two[0].execute(TagMessages(action="add", tag="work", query="*"))
    two.converge()
    two[0].execute(RemoveTag(tag="work"))
    two[1].execute(RenameTag(tag="work", new_name="job"))
    two.converge()
    assert tags(two[0]) == tags(two[1])
    assert seen(two[0]) == seen(two[1])


def test_undo_on_one_of_an_operation_done_on_the_other(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    tagged = two[0].execute(TagMessages(action="add", tag="work", query="*"))
    two.converge()
    undone = two[1].execute(Undo(operation_id=tagged.id))
    assert "Reverted" in undone.message or undone.result
    two.converge()
    assert seen(two[0]) == seen(two[1]) == [("green", []), ("red", [])]
    # undo stays per operation: A's own undo of it now finds it undone
    with pytest.raises(DomainError, match="already undone"):
        two[0].execute(Undo(operation_id=tagged.id))


def test_an_operation_runs_only_where_it_was_requested(two: Installations) -> None:
    two.imported(0, "a", ["red"])
    requested = two[0].submit(TagMessages(action="add", tag="later", query="*"))
    two.converge()
    assert Worker(two[1]).drain() == []
    assert seen(two[1]) == [("red", [])]
    with pytest.raises(Exception, match=r"runs on installation \w+, not on this one"):
        two[1].run(requested.id)
    ran = Worker(two[0]).drain()
    assert [r.operation_id for r in ran] == [requested.id]
    two.converge()
    assert seen(two[0]) == seen(two[1]) == [("red", ["later"])]


def test_a_question_asked_on_one_and_answered_on_the_other_runs_its_answer_once_there(
    two: Installations,
) -> None:
    """The second stage of an import runs where the import ran (it reads that machine's
    mailbox), whichever installation answered; an answer given again is refused."""
    two.imported(0, "a", ["red"])
    asking = two.imported(0, "b", ["red"], text="other words for")
    assert asking.status == "waiting"
    two.converge()
    _answered, follow_up = answer(two[1], asking.id, "replace")
    assert follow_up is not None and follow_up.status == "pending"
    assert follow_up.runs_on == two[0].keyring.installation_id
    assert Worker(two[1]).drain() == []
    with pytest.raises(DomainError, match="not waiting"):
        answer(two[1], asking.id, "keep")
    two.converge()
    [ran] = Worker(two[0]).drain()
    assert (ran.operation_id, ran.status) == (follow_up.id, "complete")
    assert Worker(two[0]).drain() == []
    two.converge()
    for app in two.apps:
        assert seen(app, "other") == [("red", [])]
        assert app.require(Operation, follow_up.id).attempts == 1


def test_a_mail_queued_on_one_is_sent_once_and_by_it(
    two: Installations, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server(free_port())
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{server.port}")
    server.start()
    try:
        queued = two[0].submit(mail())
        two.converge()
        assert Worker(two[1]).drain() == []  # the desktop's worker leaves it to the laptop
        assert server.inbox.received == []
        [sent] = Worker(two[0]).drain()
        assert (sent.operation_id, sent.status) == (queued.id, "complete")
        two.converge()
        assert Worker(two[1]).drain() == Worker(two[0]).drain() == []
        assert len(server.inbox.received) == 1
        for app in two.apps:
            assert app.require(Operation, queued.id).status == "complete"
    finally:
        server.stop()


def test_three_installations_reach_each_other_through_two_folders(tmp_path: Path) -> None:
    """A syncs with B through one folder, B with C through another: C gets A's events
    from B's segments (relayed), and A gets C's."""
    three = Installations(tmp_path, 3)
    other = tmp_path / "other"
    other.mkdir()
    try:
        three.imported(0, "a", ["red"])
        three.imported(2, "c", ["blue"])
        # C's events reach B on the second round, B's folder on the third, A on the fourth
        for _ in range(4):
            three[0].sync(three.folder)
            three[1].sync(three.folder)
            three[1].sync(other)
            three[2].sync(other)
        assert seen(three[0]) == seen(three[1]) == seen(three[2]) == [("blue", []), ("red", [])]
        assert event_ids(three[0]) == event_ids(three[2])
    finally:
        three.close()


# the folder: what is there, and what a bad file does ------------------------------------


def test_a_segment_read_twice_or_copied_is_taken_once(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    two.sync(0)
    segments = list((two.folder / two[0].keyring.installation_id.hex).glob("*.seg"))
    # a sync tool's conflict copy, and a temporary file of another writer
    for segment in segments:
        shutil.copy(segment, segment.with_name(segment.stem + " (conflicted copy).seg"))
        shutil.copy(segment, segment.with_name("." + segment.name + ".1234.tmp"))
    [first] = two.sync(1)
    assert first["received"] > 0
    [again] = two.sync(1)
    assert again["received"] == 0
    assert len(seen(two[1])) == 2


def test_an_altered_segment_is_refused_and_nothing_of_it_applied(two: Installations) -> None:
    two.imported(0, "a", ["red", "green"])
    two.sync(0)
    [segment] = (two.folder / two[0].keyring.installation_id.hex).glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 1
    segment.write_bytes(bytes(data))
    with pytest.raises(CommandFailed, match="fails authentication"):
        two[1].sync(two.folder)
    [failed] = [r for r in recent(two[1].current("operations"), 5) if r["command"] == "Sync"]
    assert failed["status"] == "failed"  # in the log and the feed, like any operation
    assert seen(two[1]) == []
    # the failed sync wrote its own operation's record, and nothing of the segment
    assert not any(e.origin == two[0].keyring.installation_id for _, e in two[1].all_events())


def test_an_event_that_does_not_open_is_refused_and_nothing_of_its_segment_taken(
    two: Installations,
) -> None:
    """A peer that holds the keys but sends what they do not open (a bug, a damaged disk)."""
    peer = uuid.uuid4()
    folder = Folder(LocalFiles(two.folder), two[1].keyring.purpose_key("sync"), peer)
    good = Record(peer.hex, 1, uuid.uuid4(), 1, "eventpile.mail.tag:TagCreated", b"")
    two.imported(0, "a", ["red"])
    [row] = two[0].recorder.select_export(0, 1, 1)  # type: ignore[attr-defined]
    good = good._replace(originator_id=uuid.UUID(row[1]), topic=row[3], state=row[4])
    bad = good._replace(seq=2, originator_id=uuid.uuid4(), state=b"\x01" * 60)
    folder.write(Segment(peer, 0, 2, [good, bad]))
    folder.write_head(Head(2, 2, {peer.hex: 2}, {}))
    with pytest.raises(CommandFailed, match="does not open with this home's keys"):
        two[1].sync(two.folder)
    assert not any(e.origin == two[0].keyring.installation_id for _, e in two[1].all_events())


def test_a_segment_renamed_or_moved_fails(two: Installations) -> None:
    two.imported(0, "a", ["red"])
    two.sync(0)
    mine = two.folder / two[0].keyring.installation_id.hex
    [segment] = mine.glob("*.seg")
    folder = Folder(
        LocalFiles(two.folder), two[1].keyring.purpose_key("sync"), two[1].keyring.installation_id
    )
    after, last = (int(x, 16) for x in segment.stem.split("-"))
    moved = two.folder / uuid.uuid4().hex
    moved.mkdir()
    shutil.copy(segment, moved / segment.name)
    with pytest.raises(FolderError, match="fails authentication"):
        folder.read(uuid.UUID(moved.name), after, last)
    renamed = mine / f"{after:016x}-{last + 1:016x}.seg"
    shutil.copy(segment, renamed)
    with pytest.raises(FolderError, match="fails authentication"):
        folder.read(two[0].keyring.installation_id, after, last + 1)


def test_segments_missing_from_the_folder_wait_and_nothing_is_lost(two: Installations) -> None:
    """A folder that shows a writer's segments late, or out of order (a sync tool still
    copying): what follows a missing one waits for it."""
    two.imported(0, "a", ["red"])
    two.sync(0)
    two.imported(0, "b", ["green"])
    two.sync(0)
    mine = two.folder / two[0].keyring.installation_id.hex
    segments = sorted(mine.glob("*.seg"))
    aside = two.root / "aside"
    aside.mkdir()
    shutil.move(segments[0], aside / segments[0].name)
    [first] = two.sync(1)
    assert first["received"] == 0
    assert seen(two[1]) == []
    shutil.move(aside / segments[0].name, segments[0])
    two.sync(1)
    assert [s for s, _ in seen(two[1])] == ["green", "red"]


def test_a_sync_with_nothing_to_do_reads_the_heads_only(
    two: Installations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It costs what there are installations, not what their logs hold."""
    for n in range(2):
        two.imported(n, f"m{n}", [f"subject {n}"])
    two.converge()
    read: list[str] = []
    get = LocalFiles.get

    def counted(self: LocalFiles, name: str) -> bytes | None:
        read.append(name)
        return get(self, name)

    monkeypatch.setattr(LocalFiles, "get", counted)
    [result] = two.sync(0)
    assert (result["sent"], result["received"]) == (0, 0)
    peers = {app.keyring.installation_id.hex for app in two.apps}
    assert sorted(read) == sorted(["keys.json", *(f"{p}/head" for p in peers)])


def test_a_send_cut_short_before_its_head_loses_nothing(
    two: Installations, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment written, then the head not (a crash, a stick pulled out): the next send
    writes again from the old head, and readers take everything once, whichever of the
    two segments that start there they find first."""
    two.imported(0, "a", ["red"])
    write_head = Folder.write_head

    def cut(self: Folder, head: Head) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Folder, "write_head", cut)
    with pytest.raises(KeyboardInterrupt):
        two[0].execute(Sync(folder=str(two.folder)))
    monkeypatch.setattr(Folder, "write_head", write_head)
    two.imported(0, "b", ["green"])
    two.sync(0)
    starts = [p.name[:16] for p in (two.folder / two[0].keyring.installation_id.hex).glob("*.seg")]
    assert len(starts) == 2 and len(set(starts)) == 1  # two segments from one position
    [taken] = two.sync(1)
    assert (taken["received"], taken["duplicates"]) == (len(event_ids(two[0])), 0)
    assert seen(two[1]) == seen(two[0]) == [("green", []), ("red", [])]


def test_an_older_copy_of_a_home_is_refused_a_send(two: Installations, tmp_path: Path) -> None:
    """A home restored from a backup made before its last sync would give new events the
    positions its peers know from events they have: refused, in one line."""
    home = two[0].home
    backup = tmp_path / "backup"
    shutil.copytree(home.path, backup)
    two.imported(0, "a", ["red"])
    two.sync(0)
    two[0].close()
    shutil.rmtree(home.path)
    shutil.copytree(backup, home.path)
    two.apps[0] = MailApplication(home, home.unlock(PASSPHRASE))
    with pytest.raises(CommandFailed, match="older copy"):
        two[0].sync(two.folder)


def test_the_folder_holds_no_plaintext(two: Installations) -> None:
    two.imported(0, "a", ["confidential", "secret plans"])
    two[0].execute(TagMessages(action="add", tag="private-tag", query="*"))
    two.sync(0)
    for path in two.folder.rglob("*"):
        if path.is_file() and path.name != "keys.json":
            data = path.read_bytes()
            for word in (b"confidential", b"secret", b"private-tag", b"ann@example.org", b"Ann"):
                assert word not in data, (path, word)


def test_padding_leaves_few_lengths() -> None:
    lengths = range(1, 70_000)
    assert all(n <= padded_length(n) <= n * 1.12 + 1 for n in lengths)
    # under two hundred sizes stand for 70,000 lengths
    assert len({padded_length(n) for n in lengths}) < 200


# the command line --------------------------------------------------------------------


def test_join_and_sync_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    first, second = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("EVENTPILE_HOME", str(first))
    code, made, _ = cli(["init"], capsys)
    assert code == 0
    mbox = write_mbox(tmp_path / "m.mbox", ["red", "green"])
    assert cli(["import", str(mbox)], capsys)[0] == 0
    code, synced, _ = cli(["sync", str(folder)], capsys)
    assert code == 0
    assert set(synced) >= {"sent", "received", "duplicates", "peers"}
    assert synced["sent"] > 0
    monkeypatch.setenv("EVENTPILE_HOME", str(second))
    code, joined, err = cli(["join", str(folder)], capsys)
    assert code == 0, err
    assert joined["received"] == synced["sent"]
    assert joined["peers"] == 1
    code, found, _ = cli(["search", "*"], capsys)
    assert sorted(r["subject"] for r in found["results"]) == ["green", "red"]
    # the log says where each operation came from
    _, log, _ = cli(["log"], capsys)
    [imported] = [r for r in log["operations"] if r["command"] == "ImportMailbox"]
    assert imported["origin"] == uuid.UUID(made["installation_id"]).hex
    assert {r["origin"] for r in log["operations"] if r["command"] == "Sync"} == {
        uuid.UUID(joined_installation(second)).hex
    }
    # the second is an installation of its own: joining again is refused, in one line
    code, _, err = cli(["join", str(folder)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert "already an eventpile home" in err
    # a no-op sync sends only its own record
    code, again, _ = cli(["sync", str(folder)], capsys)
    assert again["received"] == 0


def joined_installation(home: Path) -> str:
    return str(Home(home).unlock(PASSPHRASE).installation_id)


def test_join_with_a_wrong_passphrase_makes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    first = Home(tmp_path / "a")
    app = MailApplication(first, first.init(PASSPHRASE))
    app.sync(folder)
    app.close()
    second = Home(tmp_path / "b")
    done = eventpile_process(second, "join", str(folder), passphrase="wrong")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "wrong passphrase" in done.stderr
    assert not second.path.exists()
    nowhere = eventpile_process(second, "join", str(tmp_path / "nowhere"), passphrase=PASSPHRASE)
    assert nowhere.returncode == 1
    assert "keys.json" in nowhere.stderr
    assert not second.path.exists()


def test_a_sync_is_an_operation_in_the_log(two: Installations) -> None:
    operation = two[0].execute(Sync(folder=str(two.folder)))
    assert operation.status == "complete"
    counts = {"sent": 0, "received": 0, "duplicates": 0, "peers": 0}
    assert {k: operation.result[k] for k in counts} == counts
    # the folder holds this log up to where the sync began (it sends nothing of its own)
    assert operation.result["sent_upto"] < two[0].max_position()
    again = two[0].execute(Sync(folder=str(two.folder)))
    assert operation.result["sent_upto"] < again.result["sent_upto"] < two[0].max_position()
    with pytest.raises(CommandFailed, match="is not a folder"):
        two[0].execute(Sync(folder=str(two.root / "missing")))


@pytest.mark.postgres
def test_an_installation_on_postgresql_syncs_with_one_on_sqlite(
    tmp_path: Path, pg_url: str
) -> None:
    both = Installations(tmp_path, 2, [None, pg_url])
    try:
        both.imported(0, "a", ["red"])
        both.imported(1, "b", ["blue"])
        both[1].execute(TagMessages(action="add", tag="work", query="*"))
        both.converge()
        assert seen(both[0]) == seen(both[1]) == [("blue", ["work"]), ("red", [])]
        assert event_ids(both[0]) == event_ids(both[1])
    finally:
        both.close()


def test_events_of_unknown_types_are_kept_reported_once_and_applied_after_an_upgrade(
    tmp_path: Path,
) -> None:
    """The address book stands for a newer version: the mail application knows none of
    its events. They are kept and passed on, reported by the sync that brought them,
    and an application that knows them (the upgrade) has them."""
    from examples.contacts import AddressBook, ContactDirectory, CreateContact
    from examples.contacts.domain import Contact

    folder = tmp_path / "folder"
    folder.mkdir()
    newer = Home(tmp_path / "newer")
    keys = newer.init(PASSPHRASE)
    book = AddressBook(newer, keys)
    book.execute(CreateContact(name="Ann", emails=("ann@example.org",)))
    book.sync(folder)
    book.close()
    older = Home(tmp_path / "older")
    mail = MailApplication(older, older.init(PASSPHRASE, keys))
    synced = mail.sync(folder)
    assert synced.result["unknown"] == {"ContactCreated": 1, "EmailAdded": 1}
    assert "not applied until an upgrade" in synced.message
    assert "unknown" not in mail.sync(folder).result
    assert all(view.verify(mail) for view in mail.views.values())
    keyring = mail.keyring
    mail.close()

    class Upgraded(MailApplication):
        aggregates = (Contact,)
        projections = (ContactDirectory,)

    upgraded = Upgraded(older, keyring)
    try:
        upgraded.view("contacts").rebuild(upgraded)
        assert [c["name"] for c in AddressBook.find(upgraded, "ann@example.org")] == ["Ann"]  # type: ignore[arg-type]
    finally:
        upgraded.close()


# the law of one stream: events decided apart fold alike in any causal order ----------

TAG_NAMES = ("work", "job", "office")
T = TypeVar("T")


TAG_DECISIONS: dict[str, Callable[[str], Callable[[Tag], list[DomainEvent]]]] = {
    "rename": lambda name: lambda tag: tag.rename(name),
    "remove": lambda name: lambda tag: tag.remove(),
    "revive": lambda name: lambda tag: [tag.event(TagCreated, name=name)] if tag.removed else [],
}
MESSAGE_DECISIONS: dict[str, Callable[[uuid.UUID], Callable[[Message], list[DomainEvent]]]] = {
    "tag": lambda tag: lambda message: message.tag(tag),
    "untag": lambda tag: lambda message: message.untag(tag),
    "remove": lambda tag: lambda message: message.remove(),
    "reindex": lambda tag: lambda message: message.reindex(message.content()),
}


def decisions(table: dict[str, Callable[[T], Any]], values: Sequence[T]) -> st.SearchStrategy[Any]:
    """Up to four decisions of ``table``, each with one of ``values``."""
    pairs = st.tuples(st.sampled_from(sorted(table)), st.sampled_from(values))
    return st.lists(pairs.map(lambda pair: table[pair[0]](pair[1])), max_size=4)


def _same_in_any_order(
    aggregate: type[Tag] | type[Message],
    prefix: list[DomainEvent],
    branches: list[list[DomainEvent]],
    data: st.DataObject,
) -> None:
    marks = [b for b, branch in enumerate(branches) for _ in branch]
    order = data.draw(st.permutations(marks))
    one = fold(aggregate, interleaved(prefix, branches, marks))
    other = fold(aggregate, interleaved(prefix, branches, order))
    assert one is not None and other is not None
    assert one.model_copy(update={"version": 0}) == other.model_copy(update={"version": 0})


CHEAP = settings(max_examples=max(400, settings.default.max_examples))
"""Folding a few events costs microseconds: many examples, even in the ``ci`` profile."""


@CHEAP
@given(data=st.data())
def test_a_tag_changed_apart_folds_alike_in_any_order(data: st.DataObject) -> None:
    prefix: list[DomainEvent] = [Tag.create("work")]
    state = fold(Tag, prefix)
    assert state is not None
    branches = [decided(state, data.draw(decisions(TAG_DECISIONS, TAG_NAMES))) for _ in "ab"]
    _same_in_any_order(Tag, prefix, branches, data)


@CHEAP
@given(data=st.data())
def test_a_message_changed_apart_folds_alike_in_any_order(data: st.DataObject) -> None:
    content = MessageContent(header_id="<m@example.org>", subject="red", size=10)
    prefix: list[DomainEvent] = [Message.index(uuid.uuid4(), content)]
    state = fold(Message, prefix)
    assert state is not None
    tags = [uuid.UUID(int=n) for n in (1, 2)]
    branches = [decided(state, data.draw(decisions(MESSAGE_DECISIONS, tags))) for _ in "ab"]
    _same_in_any_order(Message, prefix, branches, data)
