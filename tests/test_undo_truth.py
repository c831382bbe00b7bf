"""Undo and redo tell the truth about tags, as a user sees them through the command line.

Four programs that once gave wrong answers: a membership given back onto a tag that
no longer existed (counted as reverted, found by no search), and changes counted
that nobody could see. Each runs on a mailbox where ``subject:barrier`` matches
:data:`BARRIER` messages and :data:`SMP_QUERY` :data:`SMP` of those (on the real
corpus of the report: 138 and 6, its ``smp`` being in identifiers such as
``__smp_mb``, one word each as in notmuch), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import pytest

from eventpile import uuid7
from eventpile.mail.app import MailApplication
from eventpile.mail.message import Message
from eventpile.mail.query import matching_ids, parse_query, tag_ids
from eventpile.mail.tag import Tag
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE, cli

BARRIER, SMP, OTHER = 12, 4, 5
SMP_QUERY = "(subject:smp* OR subject:__smp*)"


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    subjects = [f"[PATCH] smp barrier fix {n}" for n in range(SMP)]
    subjects += [f"[PATCH] memory barrier cleanup {n}" for n in range(BARRIER - SMP)]
    subjects += [f"unrelated note {n}" for n in range(OTHER)]
    parts = [
        f"From someone@example.org Mon Jan  1 00:00:00 2024\n"
        f"From: Someone <someone@example.org>\nTo: list@example.org\n"
        f"Subject: {subject}\nMessage-ID: <m{n}@example.org>\n"
        f"Date: Mon, 1 Jan 2024 00:{n // 60:02d}:{n % 60:02d} +0000\n\nbody {n}\n\n"
        for n, subject in enumerate(subjects)
    ]
    path = tmp_path_factory.mktemp("mail") / "barrier.mbox"
    path.write_text("".join(parts))
    return path


class User:
    """Runs ``eventpile --json`` commands and reads what a user reads."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def run(self, *argv: str) -> Any:
        code, data, err = cli(list(argv), self.capsys)
        assert code == 0, err
        return data

    def tag(self, action: str, name: str, query: str) -> str:
        return str(self.run("tag", action, name, query)["operation_id"])

    def undo(self, operation_id: str) -> dict[str, Any]:
        return dict(self.run("undo", operation_id))

    def redo(self, operation_id: str) -> dict[str, Any]:
        return dict(self.run("redo", operation_id))

    def found(self, query: str) -> int:
        return int(self.run("search", query)["total"])

    def tags(self) -> dict[str, int]:
        return {t["name"]: t["messages"] for t in self.run("tags")["tags"] if t["name"] != "trash"}

    def verified(self) -> bool:
        return bool(self.run("verify")["ok"])


@pytest.fixture
def user(cli_env: Any, mailbox: Path, capsys: pytest.CaptureFixture[str]) -> User:
    person = User(capsys)
    person.run("init")
    person.run("import", str(mailbox))
    return person


def counts(result: dict[str, Any]) -> tuple[int, int, dict[str, int]]:
    return result["reverted"], result["skipped"], result["reasons"]


TAKEN = "another tag has this name now"
AGAIN = "the tag was added again since"
REMOVED = "the tag was removed since"


def case_1(user: User, name: str, barrier: int) -> None:
    """Redo gives the name back to the messages that do not have it any more."""
    a = user.tag("add", name, "subject:barrier")
    assert counts(user.undo(a)) == (barrier + 1, 0, {})  # the memberships, and the tag
    assert name not in user.tags()
    user.tag("add", name, "subject:barrier")  # a new tag of that name
    user.tag("remove", name, "subject:barrier")
    assert user.found(f"tag:{name}") == 0
    assert counts(user.redo(a)) == (barrier, 1, {TAKEN: 1})
    assert user.found(f"tag:{name}") == barrier
    assert user.tags()[name] == barrier


def case_2(user: User, name: str, barrier: int, smp: int) -> None:
    """The name is free: the tag comes back with the memberships given back."""
    a = user.tag("add", name, "subject:barrier")
    r = user.tag("remove", name, SMP_QUERY)
    assert user.found(f"tag:{name}") == barrier - smp
    assert counts(user.undo(a)) == (barrier - smp + 1, smp, {REMOVED: smp})
    assert name not in user.tags()
    assert counts(user.undo(r)) == (smp, 0, {})
    assert user.found(f"tag:{name}") == smp == user.found(f"tag:{name} {SMP_QUERY}")
    assert user.tags()[name] == smp


def case_3(user: User, name: str, barrier: int) -> None:
    """Every message has the name again: the redo has nothing to give back."""
    a = user.tag("add", name, "subject:barrier")
    u = user.undo(a)["operation_id"]
    user.tag("add", name, "subject:barrier")
    assert counts(user.undo(u)) == (0, barrier + 1, {AGAIN: barrier, TAKEN: 1})
    assert user.found(f"tag:{name}") == barrier
    assert user.tags()[name] == barrier


def case_4(user: User, name: str, barrier: int) -> None:
    """The tag was removed, made again and given to the same messages."""
    a = user.tag("add", name, "subject:barrier")
    r = user.tag("remove", name, "subject:barrier")
    assert counts(user.undo(a)) == (1, barrier, {REMOVED: barrier})  # only the tag
    assert name not in user.tags()
    user.tag("add", name, "subject:barrier")
    assert counts(user.undo(r)) == (0, barrier, {AGAIN: barrier})
    assert user.found(f"tag:{name}") == barrier
    assert user.tags()[name] == barrier


def test_a_redo_onto_a_name_taken_since_gives_the_messages_to_that_tag(user: User) -> None:
    case_1(user, "alpha", BARRIER)
    assert user.verified()


def test_undoing_an_untagging_of_a_removed_tag_brings_the_tag_back(user: User) -> None:
    case_2(user, "alpha", BARRIER, SMP)
    assert user.verified()


def test_a_redo_of_what_was_added_again_since_changes_nothing(user: User) -> None:
    case_3(user, "alpha", BARRIER)
    assert user.verified()


def test_undoing_an_untagging_when_the_tag_was_made_again_changes_nothing(user: User) -> None:
    case_4(user, "alpha", BARRIER)
    assert user.verified()


@pytest.mark.corpus
def test_the_four_cases_on_the_reported_corpus(
    cli_env: Any, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The numbers of the report, on the 2,000 real messages it used (a tag name each)."""
    mbox = tmp_path / "corpus.mbox"
    mbox.write_bytes(gzip.decompress(corpus.read_bytes()))
    user = User(capsys)
    user.run("init")
    user.run("import", str(mbox))
    barrier, smp = user.found("subject:barrier"), user.found(f"subject:barrier {SMP_QUERY}")
    assert (barrier, smp) == (138, 6)
    case_1(user, "one", barrier)
    case_2(user, "two", barrier, smp)
    case_3(user, "three", barrier)
    case_4(user, "four", barrier)
    assert user.tags() == {"one": 138, "two": 6, "three": 138, "four": 138}
    assert user.verified()


def test_memberships_an_earlier_version_left_on_removed_tags_are_reported_and_repaired(
    user: User, cli_env: Home
) -> None:
    """Before this version, removing a tag left its memberships on it, found by no
    search: ``verify`` says so, ``tag repair`` takes them off, and its undo gives them
    back to the tag (here brought back: its name is free)."""
    user.tag("add", "alpha", "subject:barrier")
    app = MailApplication(cli_env, cli_env.unlock(PASSPHRASE))
    try:  # what RemoveTag wrote then: the tag's removal alone
        [tag_id] = tag_ids(app.current("messages"), "alpha")
        tag = app.require(Tag, uuid.UUID(tag_id))
        with app.scope(uuid7()):
            app.append(tag.remove())
    finally:
        app.close()
    assert user.tags() == {} and user.found("tag:alpha") == 0
    code, verified, _ = cli(["verify"], user.capsys)
    assert (code, verified["ok"]) == (1, False)
    assert verified["problems"] == [
        f"{BARRIER} tag memberships of {BARRIER} messages are on removed tags (left by an "
        "earlier version, or by commands that raced); no search finds them: 'eventpile tag "
        "repair' takes them off (its undo gives them to a tag of the same name)"
    ]
    repaired = user.run("tag", "repair")
    assert repaired["untagged"] == BARRIER
    assert user.verified()
    assert counts(user.undo(repaired["operation_id"])) == (BARRIER, 0, {})
    assert user.tags() == {"alpha": BARRIER}
    assert user.verified()


def test_a_name_two_tags_hold_is_reported_and_merged_by_the_repair(
    user: User, cli_env: Home
) -> None:
    """Two ``tag add`` of a new name at once each make a tag (nothing serialises names):
    ``verify`` says so, and ``tag repair`` gives the name's messages to one tag."""
    user.tag("add", "alpha", "subject:smp")
    app = MailApplication(cli_env, cli_env.unlock(PASSPHRASE))
    try:  # what the second of two racing commands wrote
        twin = Tag.create("alpha")
        with app.scope(uuid7()):
            others = [
                app.require(Message, uuid.UUID(m)).tag(twin.originator_id)
                for m in matching_ids(app.current("messages"), parse_query("subject:barrier"))
            ]
            app.append([twin, *(e for events in others for e in events)])
    finally:
        app.close()
    code, verified, _ = cli(["verify"], user.capsys)
    assert (code, verified["problems"]) == (
        1,
        [
            "1 tag names are held by more than one tag (commands that made them at once): "
            "'eventpile tag repair' gives each name's messages to one tag and removes the others"
        ],
    )
    repaired = user.run("tag", "repair")
    assert (repaired["untagged"], repaired["merged"]) == (0, 1)
    assert user.tags() == {"alpha": BARRIER}
    assert user.found("tag:alpha") == BARRIER
    assert user.verified()
