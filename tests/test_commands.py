"""The dispatcher: one transaction per immediate command, nothing written for invalid
or refused commands, a failed operation (and no domain events) for a crashing handler,
conflict retries; and the mail commands: idempotent import, tag counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eventpile.commands import dispatcher
from eventpile.commands.base import Command, Outcome, explain, handles
from eventpile.commands.context import Context
from eventpile.commands.dispatcher import CommandFailed
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.domain.operation import (
    OperationCompleted,
    OperationFailed,
    OperationRequested,
    OperationStarted,
    Status,
)
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.mail.message import MessageIndexed, MessageTagged, MessageUntagged
from eventpile.mail.query import parse_query, search
from eventpile.mail.synthetic import write_mbox
from eventpile.mail.tag import Tag, TagCreated, TagRenamed

MESSAGES = 24

BAD_ENTRIES = b"""From a@b Mon Jan  1 00:00:00 2024
just some text without any header

From a@b Mon Jan  1 00:00:00 2024
X-Foo: only a header no mail has

body

"""


@pytest.fixture(scope="module")
def mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mbox(tmp_path_factory.mktemp("mail") / "small.mbox", MESSAGES, seed=7)


@pytest.fixture
def imported(app: MailApplication, mbox: Path) -> MailApplication:
    app.execute(ImportMailbox(path=mbox))
    return app


def counts(result: dict[str, Any]) -> tuple[int, int, int]:
    return result["indexed"], result["skipped"], result["failed"]


def new_events(app: MailApplication, after: int) -> list[tuple[int, DomainEvent]]:
    return app.read(after, app.max_position(), (), 100_000)


def total(app: MailApplication, query: str) -> int:
    index = app.view("messages")
    index.catch_up(app)
    return int(search(index.db, parse_query(query), 1)["total"])


def digests(app: MailApplication) -> dict[str, str]:
    app.catch_up()
    return {name: view.digest() for name, view in app.views.items()}


@pytest.fixture
def appends(app: MailApplication, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each write transaction of the event store carried."""
    sizes: list[int] = []
    insert = app.recorder.insert_events

    def counting(stored_events: Any, **kwargs: Any) -> Any:
        sizes.append(len(stored_events))
        return insert(stored_events, **kwargs)

    monkeypatch.setattr(app.recorder, "insert_events", counting)
    return sizes


# one command, one transaction -------------------------------------------------------


def test_an_immediate_command_is_one_transaction_of_its_lifecycle_and_domain_events(
    imported: MailApplication, appends: list[int]
) -> None:
    before = imported.max_position()
    operation = imported.execute(TagMessages(action="add", tag="all", query=""))
    written = new_events(imported, before)
    assert appends == [len(written)]
    types = [type(e) for _, e in written]
    assert types == [
        OperationRequested,
        OperationStarted,
        TagCreated,
        *[MessageTagged] * MESSAGES,
        OperationCompleted,
    ]
    assert [p for p, _ in written] == list(range(before + 1, before + len(written) + 1))
    assert {e.operation_id for _, e in written} == {operation.id}
    assert {e.origin for _, e in written} == {imported.keyring.installation_id}
    assert operation.status is Status.COMPLETE
    assert operation.result["changed"] == MESSAGES


def test_the_views_have_caught_up_when_a_command_returns(imported: MailApplication) -> None:
    imported.execute(TagMessages(action="add", tag="seen", query=""))
    for view in imported.views.values():
        assert view.position == imported.max_position()
    assert total(imported, "tag:seen") == MESSAGES


# nothing written ----------------------------------------------------------------------


INVALID: list[tuple[type[Command], dict[str, Any], str]] = [
    (TagMessages, {"action": "add", "tag": "two words", "query": ""}, "tag"),
    (TagMessages, {"action": "add", "tag": "", "query": ""}, "tag"),
    (TagMessages, {"action": "toggle", "tag": "x", "query": ""}, "action"),
    (TagMessages, {"action": "add", "tag": "x", "query": "colour:red"}, "query"),
    (TagMessages, {"action": "add", "tag": "x", "query": "after:yesterday"}, "query"),
    (TagMessages, {"action": "add", "tag": "x", "query": '"unbalanced'}, "query"),
    (TagMessages, {"action": "add", "tag": "x"}, "query"),
    (ImportMailbox, {"path": "/no/such/mailbox.mbox"}, "path"),
    (RenameTag, {"tag": "x", "new_name": "bad name"}, "new_name"),
]


def test_invalid_arguments_are_refused_before_anything_is_written(app: MailApplication) -> None:
    before = digests(app), app.max_position()
    for command, args, field in INVALID:
        with pytest.raises(ValidationError) as caught:
            app.execute(command.model_validate(args))
        message = explain(caught.value)
        assert message.startswith(f"{field}: ") and "\n" not in message, message
    assert (digests(app), app.max_position()) == before


@pytest.mark.parametrize(
    "command",
    [
        TagMessages(action="remove", tag="nosuchtag", query=""),
        RenameTag(tag="nosuchtag", new_name="other"),
        RemoveTag(tag="nosuchtag"),
        RenameTag(tag="first", new_name="second"),
    ],
    ids=["untag-unknown", "rename-unknown", "remove-unknown", "rename-onto-existing"],
)
def test_a_refused_command_writes_nothing(imported: MailApplication, command: Command) -> None:
    for name in ("first", "second"):
        imported.execute(TagMessages(action="add", tag=name, query="patch"))
    before = digests(imported), imported.max_position()
    with pytest.raises(DomainError):
        imported.execute(command)
    assert (digests(imported), imported.max_position()) == before


def test_a_rename_onto_a_tag_made_moments_before_is_refused_even_while_views_wait(
    imported: MailApplication,
) -> None:
    """A worker defers catching its views up between operations: the rename still sees
    the tag the previous operation created."""
    imported.execute(TagMessages(action="add", tag="first", query="patch"))
    with imported.deferring_catch_up():
        imported.execute(TagMessages(action="add", tag="second", query="patch"))
        with pytest.raises(DomainError, match="already a tag"):
            imported.execute(RenameTag(tag="first", new_name="second"))


# a crashing handler -------------------------------------------------------------------


class CrashAfterRecording(Command):
    """Records a new tag, then fails."""

    name: str


@handles(CrashAfterRecording)
def _crash(command: CrashAfterRecording, ctx: Context) -> Outcome:
    ctx.record(Tag.create(command.name))
    raise RuntimeError("the handler broke")


def test_a_crashing_handler_leaves_a_failed_operation_and_no_domain_events(
    app: MailApplication,
) -> None:
    before = app.max_position()
    with pytest.raises(CommandFailed, match="the handler broke") as caught:
        app.execute(CrashAfterRecording(name="never"))
    written = [e for _, e in new_events(app, before)]
    assert [type(e) for e in written][:2] == [OperationRequested, OperationStarted]
    assert isinstance(written[-1], OperationFailed)
    assert {e.originator_id for e in written} == {caught.value.operation_id}
    assert (written[-1].error_type, written[-1].error) == ("RuntimeError", "the handler broke")
    from eventpile.projections.operations import find

    app.catch_up()
    (record,) = find(app.view("operations").db, caught.value.operation_id.hex, private=True)
    assert (record["status"], record["error_type"]) == ("failed", "RuntimeError")
    assert total(app, "") == 0 and app.view("messages").verify(app)


# conflicts ----------------------------------------------------------------------------


class RenameWhileRacing(Command):
    """Renames a tag; another writer renames it too during the first ``races`` attempts."""

    tag_id: uuid.UUID
    new_name: str
    races: int


seen_versions: list[int] = []


@handles(RenameWhileRacing)
def _rename_racing(command: RenameWhileRacing, ctx: Context) -> Outcome:
    tag = ctx.load(Tag, command.tag_id)
    assert tag is not None
    seen_versions.append(tag.version)
    if len(seen_versions) <= command.races:
        with operation_scope(uuid7(), None):  # another process, between load and append
            ctx.app.append(tag.rename(f"elsewhere{len(seen_versions)}"))
    ctx.record(*tag.rename(command.new_name))
    return Outcome("Renamed")


@pytest.fixture
def racing(app: MailApplication) -> Iterator[uuid.UUID]:
    seen_versions.clear()
    created = Tag.create("racing")
    app.append([created])
    yield created.originator_id
    seen_versions.clear()


def test_a_conflicting_write_is_decided_again_on_fresh_state(
    app: MailApplication, racing: uuid.UUID
) -> None:
    operation = app.execute(RenameWhileRacing(tag_id=racing, new_name="mine", races=2))
    assert operation.status is Status.COMPLETE
    assert seen_versions == [1, 2, 3]
    stream = list(app.stream(racing))
    assert [type(e) for e in stream] == [TagCreated, TagRenamed, TagRenamed, TagRenamed]
    last = stream[-1]
    assert isinstance(last, TagRenamed)
    assert (last.old_name, last.new_name, last.operation_id) == ("elsewhere2", "mine", operation.id)
    requested = [e for _, e in new_events(app, 0) if isinstance(e, OperationRequested)]
    assert [e.originator_id for e in requested] == [operation.id]
    assert app.view("messages").verify(app) and app.view("operations").verify(app)


def test_a_conflict_that_persists_fails_the_operation_without_its_domain_events(
    app: MailApplication, racing: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher, "CONFLICT_BACKOFF_S", 0)  # no pauses between attempts
    said = "another command changed 1 tag at the same time, 12 times in a row: nothing of it"
    with pytest.raises(CommandFailed, match=said) as caught:
        app.execute(RenameWhileRacing(tag_id=racing, new_name="mine", races=100))
    tag_events = list(app.stream(racing))
    assert not [e for e in tag_events if e.operation_id == caught.value.operation_id]
    operation_events = list(app.stream(caught.value.operation_id))
    assert isinstance(operation_events[-1], OperationFailed)
    assert operation_events[-1].error_type == "Conflict"


# the mail commands --------------------------------------------------------------------


def test_import_indexes_each_message_once_and_reimport_skips_them_all(
    app: MailApplication, mbox: Path
) -> None:
    first = app.execute(ImportMailbox(path=mbox))
    assert counts(first.result) == (MESSAGES, 0, 0)
    after_first = app.max_position()
    again = app.execute(ImportMailbox(path=mbox))
    assert counts(again.result) == (0, MESSAGES, 0)
    assert not [e for _, e in new_events(app, after_first) if isinstance(e, MessageIndexed)]
    assert total(app, "") == MESSAGES


def test_malformed_and_duplicate_messages_are_counted_and_never_abort(
    app: MailApplication, mbox: Path, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed.mbox"
    original = mbox.read_bytes()
    mixed.write_bytes(BAD_ENTRIES + original + original)
    operation = app.execute(ImportMailbox(path=mixed))
    assert counts(operation.result) == (MESSAGES, MESSAGES, 2)
    assert len(operation.private_result["problems"]) == 2
    assert total(app, "") == MESSAGES


def test_tag_add_and_remove_report_what_they_changed(imported: MailApplication) -> None:
    subset = "patch"
    some = total(imported, subset)
    assert 0 < some < MESSAGES
    add = imported.execute(TagMessages(action="add", tag="t", query=subset))
    assert add.result == {"changed": some, "created_tag": True}
    assert imported.execute(TagMessages(action="add", tag="t", query=subset)).result == {
        "changed": 0,
        "created_tag": False,
    }
    assert imported.execute(TagMessages(action="add", tag="t", query="")).result["changed"] == (
        MESSAGES - some
    )
    remove = imported.execute(TagMessages(action="remove", tag="t", query=subset))
    assert remove.result["changed"] == some
    assert (
        imported.execute(TagMessages(action="remove", tag="t", query=subset)).result["changed"] == 0
    )
    assert total(imported, "tag:t") == MESSAGES - some
    untagged = [e for _, e in new_events(imported, 0) if isinstance(e, MessageUntagged)]
    assert len(untagged) == some and all(len(e.dots) == 1 for e in untagged)


def test_trash_is_reserved_it_cannot_be_renamed_or_removed(imported: MailApplication) -> None:
    imported.execute(TagMessages(action="add", tag="trash", query="patch"))
    before = digests(imported), imported.max_position()
    for command in (RenameTag(tag="trash", new_name="bin"), RemoveTag(tag="trash")):
        with pytest.raises(DomainError) as refused:
            imported.execute(command)
        assert str(refused.value) == "the tag 'trash' is reserved: it cannot be renamed or removed"
    assert (digests(imported), imported.max_position()) == before


def test_a_tag_named_in_decomposed_unicode_is_found_by_its_composed_name(
    imported: MailApplication,
) -> None:
    imported.execute(TagMessages(action="add", tag="cafe\u0301", query="patch"))
    tagged = total(imported, "tag:caf\u00e9")
    assert tagged > 0
    assert total(imported, "tag:cafe\u0301") == tagged  # a search names it either way
    assert imported.execute(TagMessages(action="add", tag="caf\u00e9", query="")).result == {
        "changed": MESSAGES - tagged,
        "created_tag": False,
    }


def test_rename_and_remove_a_tag(imported: MailApplication) -> None:
    imported.execute(TagMessages(action="add", tag="old", query=""))
    imported.execute(RenameTag(tag="old", new_name="new"))
    assert (total(imported, "tag:old"), total(imported, "tag:new")) == (0, MESSAGES)
    imported.execute(RemoveTag(tag="new"))
    assert total(imported, "tag:new") == 0
    again = imported.execute(TagMessages(action="add", tag="new", query="patch"))
    assert again.result["created_tag"] is True
    assert total(imported, "tag:new") == total(imported, "patch")


class App(MailApplication):
    """The mail application with this module's own test commands."""

    handlers = (
        _crash,
        _rename_racing,
    )
