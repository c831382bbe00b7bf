"""``eventpile forget ADDRESS``: what the log holds of a person becomes unreadable
everywhere, and everyone else's stays as it was.

Checked against a plain model of what a user sees (who sent what, which words find
which message), on SQLite and PostgreSQL: the forgotten sender's messages read
"[forgotten]" and no word, sender or subject finds them; a message *to* them from
someone else still reads whole; a copy of the log from before opens for everyone but
them; undo refuses to restore them; the views rebuild to what they show; bad input
changes nothing; cut short, it is finished by running it again; another process stops
opening their values when it reads the forgetting; a sync takes the forgetting to the
other installations and to the folder's copy of the key file.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import FORGOTTEN, DomainError
from eventpile.commands.support import Pseudonyms, write_records
from eventpile.commands.undo import Undo
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.message import Message, MessageIndexed
from eventpile.mail.query import parse_query, search
from eventpile.store.home import Home
from eventpile.store.keys import unwrap_keys
from eventpile.store.people import Tree
from eventpile.store.segments import KEYS
from tests.conftest import PASSPHRASE, cli, log_end

PEOPLE = ("ann@example.org", "bob@example.net", "cy@example.com")


@dataclass(frozen=True)
class Mail:
    """One message of the model: who sent it, to whom, and a word only it has."""

    sender: str
    to: str
    word: str

    @property
    def subject(self) -> str:
        return f"About {self.word}"


def write(path: Path, mails: list[Mail], start: int = 0) -> Path:
    """An mbox of ``mails`` (each with its own Message-ID and date)."""
    out = io.BytesIO()
    for n, mail in enumerate(mails, start):
        message = EmailMessage()
        message["From"] = f"{mail.sender.split('@')[0].title()} <{mail.sender}>"
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Message-ID"] = f"<m{n}.{mail.word}@example.org>"
        message["Date"] = format_datetime(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=n))
        message.set_content(f"Text of {mail.word}, from {mail.sender}.\n")
        out.write(b"From " + mail.sender.encode() + b" Thu Jan  1 00:00:00 2025\n")
        out.write(message.as_bytes().replace(b"\nFrom ", b"\n>From ") + b"\n")
    path.write_bytes(out.getvalue())
    return path


def seen(app: MailApplication) -> dict[str, tuple[str, str]]:
    """What the index shows: by each message's word (or its row id, when forgotten),
    its sender and subject."""
    found = search(app.current("messages"), parse_query("*"), limit=1000)["results"]
    return {
        r["subject"].removeprefix("About ") if r["subject"] != FORGOTTEN else r["id"]: (
            r["from"],
            r["subject"],
        )
        for r in found
    }


def finds(app: MailApplication, query: str) -> set[str]:
    """The subjects of the messages ``query`` finds."""
    found = search(app.current("messages"), parse_query(query), limit=1000)["results"]
    return {r["subject"] for r in found}


def verified(app: MailApplication) -> bool:
    """Does every view equal a fresh fold of the log?"""
    return all(view.verify(app) for view in app.views.values())


MAILS = [
    Mail("ann@example.org", "bob@example.net", "apricot"),
    Mail("ann@example.org", "cy@example.com", "banana"),
    Mail("bob@example.net", "ann@example.org", "cherry"),
    Mail("cy@example.com", "bob@example.net, ann@example.org", "damson"),
]


@pytest.fixture
def mail(app: MailApplication, tmp_path: Path) -> MailApplication:
    app.execute(ImportMailbox(path=write(tmp_path / "m.mbox", MAILS)))
    return app


def test_the_forgotten_sender_reads_forgotten_and_no_word_finds_them(
    mail: MailApplication,
) -> None:
    before = seen(mail)
    assert finds(mail, "apricot") == {"About apricot"}
    operation = mail.forget("Ann@Example.org")
    assert operation.status.value == "complete" and operation.result["people"] == 1
    after = seen(mail)
    # the others' messages as they were, to Ann too; hers: two rows, all forgotten
    assert {w: s for w, s in after.items() if w in ("cherry", "damson")} == {
        w: before[w] for w in ("cherry", "damson")
    }
    assert (
        sorted(v for w, v in after.items() if w not in ("cherry", "damson"))
        == [(FORGOTTEN, FORGOTTEN)] * 2
    )
    for query in ("apricot", "banana", "from:ann", "subject:apricot", "ann@example.org"):
        assert not finds(mail, query) - {"About cherry", "About damson"}, query
    assert finds(mail, "cherry") == {"About cherry"}  # to Ann, from Bob: whole
    assert finds(mail, "forgotten") == set()  # the placeholder is not a word of theirs
    assert verified(mail)
    for view in mail.views.values():
        view.rebuild(mail)
    assert seen(mail) == after


def test_the_log_holds_none_of_their_values(mail: MailApplication) -> None:
    """Every event of hers reads forgotten, from the log; nobody else's does."""
    mail.forget("ann@example.org")
    indexed = [e for _, e in mail.all_events() if isinstance(e, MessageIndexed)]
    forgotten = [e for e in indexed if type(e).forgotten]
    assert len(forgotten) == 2 and all(e.subject == FORGOTTEN for e in forgotten)
    assert all(e.sent is None and e.references == () for e in forgotten)
    assert sorted(e.subject for e in indexed if not type(e).forgotten) == [
        "About cherry",
        "About damson",
    ]


def test_a_copy_of_the_log_from_before_opens_for_everyone_but_them(
    home: Home, keyring: Any, tmp_path: Path
) -> None:
    """A backup of the log (its file, as a copy of the disk holds it), opened afterwards
    with the passphrase and the home's key file: her values do not open, the rest does."""
    app = MailApplication(home, keyring)
    app.execute(ImportMailbox(path=write(tmp_path / "m.mbox", MAILS)))
    app.close()
    backup = tmp_path / "backup.sqlite3"
    shutil.copy(home.events_db, backup)
    app_after = MailApplication(home, home.unlock(PASSPHRASE))
    app_after.forget("ann@example.org")
    # the backup put back in the home, with the key file as it is now
    restored = Home(tmp_path / "restored")
    restored.path.mkdir()
    (restored.path / "views").mkdir()
    shutil.copy(home.key_file, restored.key_file)
    shutil.copy(backup, restored.events_db)
    old = MailApplication(restored, restored.unlock(PASSPHRASE))
    try:
        indexed = [e for _, e in old.all_events() if isinstance(e, MessageIndexed)]
        assert sorted(e.subject for e in indexed) == [
            "About cherry",
            "About damson",
            FORGOTTEN,
            FORGOTTEN,
        ]
        # and a fresh fold of it shows the same
        assert sorted(v for v in seen(old).values()) == sorted(v for v in seen(app_after).values())
    finally:
        old.close()
        app_after.close()


def test_undo_refuses_to_restore_what_was_forgotten(app: MailApplication, tmp_path: Path) -> None:
    imported = app.execute(ImportMailbox(path=write(tmp_path / "m.mbox", MAILS)))
    app.forget("ann@example.org")
    before = seen(app)
    with pytest.raises(DomainError, match=r"forgotten since.*can no longer be restored"):
        app.execute(Undo(operation_id=imported.id))
    assert seen(app) == before


def test_new_mail_from_them_gets_a_new_key(mail: MailApplication, tmp_path: Path) -> None:
    mail.forget("ann@example.org")
    later = write(
        tmp_path / "later.mbox", [Mail("ann@example.org", "bob@example.net", "elder")], 10
    )
    mail.execute(ImportMailbox(path=later))
    assert finds(mail, "elder") == {"About elder"} and finds(mail, "apricot") == set()
    mail.close()
    again = MailApplication(mail.home, mail.home.unlock(PASSPHRASE))
    try:
        for view in again.views.values():
            view.rebuild(again)
        assert finds(again, "from:ann") == {"About elder"}
    finally:
        again.close()


def test_the_support_bundle_no_longer_links_their_values(mail: MailApplication) -> None:
    """A bundle replaces private values by keyed pseudonyms: before the forget, the same
    pseudonym stood for her address on every message of hers; afterwards none does."""
    key = b"k" * 32

    def bundle() -> str:
        out = io.StringIO()
        write_records(out, {}, [], mail.all_events(), Pseudonyms(key))
        return out.getvalue()

    hers = Pseudonyms(key)("Ann <ann@example.org>")
    assert bundle().count(hers) == 2
    mail.forget("ann@example.org")
    text = bundle()
    assert hers not in text and "ann@example.org" not in text


@pytest.mark.parametrize(
    ("who", "said"),
    [
        ("not an address", "is not an email address"),
        ("nobody@example.org", "holds no personal data of nobody@example.org"),
        ("Ann <ann@example.org>", "is not an email address"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    mail: MailApplication, who: str, said: str
) -> None:
    keys, end = mail.home.key_file.read_bytes(), mail.max_position()
    with pytest.raises(DomainError, match=said):
        mail.forget(who)
    assert mail.home.key_file.read_bytes() == keys and mail.max_position() == end


def test_the_command_line(
    cli_env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["init"], capsys)[0] == 0
    assert cli(["import", str(write(tmp_path / "m.mbox", MAILS))], capsys)[0] == 0
    code, done, err = cli(["forget", "ann@example.org"], capsys)
    assert (code, err) == (0, "") and done["people"] == 1
    code, found, _ = cli(["search", "from:ann"], capsys)
    assert code == 0 and found["total"] == 0
    # again: nothing of her is left, and it says so in one line, changing nothing
    end = log_end(cli_env)
    code, out, err = cli(["forget", "ann@example.org"], capsys)
    assert (code, out) == (1, None) and err.count("\n") == 1 and "nothing to forget" in err
    assert log_end(cli_env) == end
    assert cli(["verify"], capsys)[0] == 0
    [record] = [o for o in cli(["log"], capsys)[1]["operations"] if o["command"] == "Forget"]
    assert record["status"] == "complete" and "ann" not in json.dumps(record)


def test_cut_short_it_is_finished_by_the_next_command(
    mail: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once the forgetting was recorded, before the key file was punctured: the
    next command of any process reads the record, punctures the key file, and the views
    are made anew without her."""

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(MailApplication, "forget_keys", killed)
    with pytest.raises(KeyboardInterrupt):
        mail.forget("ann@example.org")
    monkeypatch.undo()
    first_id = next(iter(mail.people.ids_of("ann@example.org")))
    on_file = Tree.from_bytes(mail.home.unlock(PASSPHRASE).people_tree())
    assert on_file.key(first_id) is not None  # not punctured yet
    fresh = MailApplication(mail.home, mail.home.unlock(PASSPHRASE))  # it heeds at start
    try:
        on_file = Tree.from_bytes(mail.home.unlock(PASSPHRASE).people_tree())
        assert on_file.key(first_id) is None
        assert finds(fresh, "apricot") == set() and finds(fresh, "cherry") == {"About cherry"}
        assert verified(fresh)
    finally:
        fresh.close()


def test_what_the_index_no_longer_shows_is_forgotten_too(
    app: MailApplication, tmp_path: Path
) -> None:
    """Her import undone, her messages are out of the index, but the log still holds
    them: forgetting her reaches them, and redoing the import is refused."""
    imported = app.execute(ImportMailbox(path=write(tmp_path / "m.mbox", MAILS)))
    undone = app.execute(Undo(operation_id=imported.id))
    assert finds(app, "apricot") == set()
    assert app.forget("ann@example.org").result == {"people": 1}
    with pytest.raises(DomainError, match="can no longer be restored"):
        app.execute(Undo(operation_id=undone.id))
    assert finds(app, "apricot") == set() and verified(app)


def test_a_process_that_read_the_keys_before_stops_at_the_forgetting(
    mail: MailApplication,
) -> None:
    """Another process, open since before: once it reads the forgetting in the log (any
    command catches up first), it no longer opens her values either."""
    other = MailApplication(mail.home, mail.home.unlock(PASSPHRASE))
    try:
        hers = [e.originator_id for _, e in other.all_events() if isinstance(e, MessageIndexed)]
        mail.forget("ann@example.org")
        assert finds(other, "apricot") == set()
        subjects = {other.load(Message, m).subject for m in hers}  # type: ignore[union-attr]
        assert subjects == {FORGOTTEN, "About cherry", "About damson"}
    finally:
        other.close()


def test_a_forgetting_reaches_the_other_installations_and_the_folder(
    mail: MailApplication, tmp_path: Path
) -> None:
    """Forgotten on one installation, then synced: forgotten on the other (its key file
    too), and in the folder's copy of the key file, which ``join`` hands out: with it and
    the passphrase, her key is derived no more, so the segments do not open for her."""
    folder = tmp_path / "folder"
    folder.mkdir()
    mail.sync(folder)
    other_home = Home(tmp_path / "other")
    other_home.init(PASSPHRASE, unwrap_keys((folder / KEYS).read_bytes(), PASSPHRASE, folder))
    other = MailApplication(other_home, other_home.unlock(PASSPHRASE))
    try:
        other.sync(folder)
        assert finds(other, "apricot") == {"About apricot"}
        ann = other.people.current_id("ann@example.org")
        mail.forget("ann@example.org")
        mail.sync(folder)
        in_folder = unwrap_keys((folder / KEYS).read_bytes(), PASSPHRASE, folder)
        assert Tree.from_bytes(in_folder.people_tree()).key(ann) is None
        other.sync(folder)
        assert finds(other, "apricot") == set() and finds(other, "cherry") == {"About cherry"}
        assert Tree.from_bytes(other_home.unlock(PASSPHRASE).people_tree()).key(ann) is None
        assert seen(other) == seen(mail)
    finally:
        other.close()


# the law, against a plain model ----------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("mail"), st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)),
        st.tuples(st.just("forget"), st.sampled_from(PEOPLE), st.none()),
    ),
    min_size=1,
    max_size=8,
)


@settings(deadline=None)
@given(steps=steps)
def test_what_is_seen_is_what_the_model_says(
    steps: list[tuple[str, str, str | None]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Mail from random people and forgetting of random people, in any order: each
    message reads whole, and its word finds it, unless its sender was forgotten after
    it came; a rebuild shows the same."""
    where = tmp_path_factory.mktemp("law")
    home = Home(where / "home")
    app = MailApplication(home, home.init(PASSPHRASE))
    model: dict[str, tuple[str, bool]] = {}  # word: sender, readable
    try:
        for n, (kind, person, to) in enumerate(steps):
            if kind == "mail":
                assert to is not None
                word = f"w{n}x"
                app.execute(
                    ImportMailbox(path=write(where / f"{n}.mbox", [Mail(person, to, word)], n))
                )
                model[word] = (person, True)
            elif any(sender == person and ok for sender, ok in model.values()):
                app.forget(person)
                model = {w: (s, ok and s != person) for w, (s, ok) in model.items()}
            else:
                with pytest.raises(DomainError, match="nothing to forget"):
                    app.forget(person)
        shown = seen(app)
        for word, (sender, readable) in model.items():
            assert (finds(app, word) == {f"About {word}"}) == readable
            if readable:
                assert shown[word][0].endswith(f"<{sender}>")
        assert sum(v == (FORGOTTEN, FORGOTTEN) for v in shown.values()) == sum(
            not ok for _, ok in model.values()
        )
        for view in app.views.values():
            view.rebuild(app)
        assert seen(app) == shown
    finally:
        app.close()


def test_an_agent_that_holds_the_keys_hands_out_the_tree_as_it_is_now(
    mail: MailApplication,
) -> None:
    """``eventpile unlock`` started before the forget: what it hands to the next command
    no longer derives her key."""
    from eventpile.store import agent

    agent.start(mail.home, mail.home.unlock(PASSPHRASE), 60)
    try:
        ann = mail.people.current_id("ann@example.org")
        held = agent.keyring(mail.home)
        assert held is not None and Tree.from_bytes(held.people_tree()).key(ann) is not None
        mail.forget("ann@example.org")
        held = agent.keyring(mail.home)
        assert held is not None and Tree.from_bytes(held.people_tree()).key(ann) is None
    finally:
        agent.stop(mail.home)
