"""Undo and redo: compensating events appended as new operations, only what is still in
effect reverted, refusals that write nothing, the CLI; and the testing kit's own
helpers (command strategies, given/when/then)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

from eventpile import testing
from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.eventlog import registry_of
from eventpile.commands.operations import cancel
from eventpile.commands.undo import Redo, Undo
from eventpile.domain.aggregate import DomainError
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import Operation, OperationRedone, OperationUndone, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.commands import (
    ImportMailbox,
    RemoveTag,
    RenameTag,
    ResolveDuplicates,
    TagMessages,
)
from eventpile.mail.message import (
    TRASH_TAG_ID,
    Message,
    MessageContent,
    MessageIndexed,
    MessageRemoved,
    MessageRetagged,
    MessageTagged,
    MessageUntagged,
)
from eventpile.mail.query import parse_query, search, tag_ids
from eventpile.mail.synthetic import write_mbox
from eventpile.mail.tag import Tag, TagCreated, TagRemoved, TagRenamed
from eventpile.projections.operations import find
from eventpile.store.home import Home

from .conftest import cli, log_end

MESSAGES = 20


@pytest.fixture(scope="module")
def mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mbox(tmp_path_factory.mktemp("mail") / "undo.mbox", MESSAGES, seed=11)


@pytest.fixture
def imported(app: MailApplication, mbox: Path) -> MailApplication:
    app.execute(ImportMailbox(path=mbox))
    return app


def total(app: MailApplication, query: str) -> int:
    return int(search(app.view("messages").db, parse_query(query), 1)["total"])


def tag_names(app: MailApplication) -> list[str]:
    rows = app.view("messages").db.execute("SELECT name FROM tags ORDER BY name")
    return [name for (name,) in rows]


def written(app: MailApplication, operation_id: uuid.UUID) -> list[DomainEvent]:
    return [e for _, e in app.all_events() if e.operation_id == operation_id]


def record(app: MailApplication, operation_id: uuid.UUID) -> dict[str, Any]:
    [found] = find(app.view("operations").db, operation_id.hex, private=True)
    return found


# undo and redo ---------------------------------------------------------------------------


def test_undo_appends_the_inverses_newest_first_as_a_linked_operation(
    imported: MailApplication,
) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="t", query="*"))
    before = imported.max_position()
    undo = imported.execute(Undo())
    assert undo.result == {
        "undid": str(tagging.id),
        "reverted": MESSAGES + 1,
        "skipped": 0,
        "reasons": {},
    }
    tags = [e for e in written(imported, tagging.id) if isinstance(e, MessageTagged)]
    inverses = [e for e in written(imported, undo.id) if e.originator_id != undo.id]
    assert [type(e) for e in inverses] == [
        OperationUndone,
        *[MessageUntagged] * MESSAGES,
        TagRemoved,
    ]
    untags = [e for e in inverses if isinstance(e, MessageUntagged)]
    assert [e.dots for e in untags] == [(e.event_id,) for e in reversed(tags)]
    assert [e.originator_version for e in inverses[1:-1]] == [3] * MESSAGES
    assert len(imported.read(0, before, (), 100_000)) == before  # appended, nothing deleted
    assert total(imported, "tag:t") == 0 and tag_names(imported) == ["trash"]
    assert record(imported, tagging.id)["status"] == "undone"
    assert record(imported, tagging.id)["undone_by"] == undo.id.hex
    state = imported.load(Operation, tagging.id)
    assert state is not None and (state.status, state.undone_by) == (Status.UNDONE, undo.id)


def test_redo_is_the_undo_of_the_undo(imported: MailApplication) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="t", query="patch"))
    tagged = total(imported, "tag:t")
    undo = imported.execute(Undo(operation_id=tagging.id))
    redo = imported.execute(Redo())
    assert redo.result["redid"] == str(tagging.id) and redo.result["undid"] == str(undo.id)
    assert redo.result["reverted"] == tagged + 1
    assert total(imported, "tag:t") == tagged and tag_names(imported) == ["t", "trash"]
    assert record(imported, tagging.id)["status"] == "complete"
    assert record(imported, undo.id)["status"] == "undone"
    assert isinstance(written(imported, redo.id)[-2], OperationRedone)
    again = imported.execute(Undo())  # undoing it again reverts what the redo brought back
    assert again.result["undid"] == str(tagging.id) and again.result["reverted"] == tagged + 1
    assert total(imported, "tag:t") == 0
    [importing] = [r["id"] for r in _log(imported) if r["command"] == "ImportMailbox"]
    assert imported.execute(Undo()).result["undid"] == str(uuid.UUID(importing))


def test_undo_and_redo_walk_back_and_forth_through_the_operations(
    imported: MailApplication,
) -> None:
    states = [(total(imported, "tag:a"), total(imported, "tag:b"), tag_names(imported))]
    for command in (
        TagMessages(action="add", tag="a", query="*"),
        TagMessages(action="add", tag="b", query="patch"),
        RenameTag(tag="a", new_name="c"),
        RemoveTag(tag="b"),
    ):
        imported.execute(command)
        states.append((total(imported, "tag:a"), total(imported, "tag:b"), tag_names(imported)))
    for state in reversed(states[:-1]):
        imported.execute(Undo())
        assert (total(imported, "tag:a"), total(imported, "tag:b"), tag_names(imported)) == state
    for state in states[1:]:
        imported.execute(Redo())
        assert (total(imported, "tag:a"), total(imported, "tag:b"), tag_names(imported)) == state
    with pytest.raises(DomainError, match="nothing to redo"):
        imported.execute(Redo())


def test_undo_of_an_older_operation_reverts_only_what_is_still_in_effect(
    imported: MailApplication,
) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="t", query="*"))
    removed = imported.execute(TagMessages(action="remove", tag="t", query="patch")).result
    undo = imported.execute(Undo(operation_id=tagging.id))
    assert undo.result["reverted"] == MESSAGES - removed["changed"] + 1
    assert undo.result["skipped"] == removed["changed"]
    assert undo.result["reasons"] == {"the tag was removed since": removed["changed"]}
    assert "the tag was removed since" in undo.message
    assert total(imported, "tag:t") == 0


def test_an_add_brought_back_by_undoing_its_removal_is_undone_with_the_add(
    imported: MailApplication,
) -> None:
    imported.execute(TagMessages(action="add", tag="t", query="*"))
    imported.execute(TagMessages(action="remove", tag="t", query="*"))
    back = imported.execute(Undo())
    assert total(imported, "tag:t") == MESSAGES
    assert {type(e) for e in written(imported, back.id)} >= {MessageRetagged}
    undo = imported.execute(Undo())  # the add: its dots were removed, their stand-ins are not
    assert (undo.result["reverted"], undo.result["skipped"]) == (MESSAGES + 1, 0)
    assert total(imported, "tag:t") == 0
    untagged = [
        e.originator_id for e in written(imported, undo.id) if isinstance(e, MessageUntagged)
    ]
    assert len(untagged) == MESSAGES
    assert all(getattr(imported.load(Message, m), "tags", None) == {} for m in untagged)
    imported.execute(Redo())
    imported.execute(Redo())
    assert total(imported, "tag:t") == 0 and tag_names(imported) == ["t", "trash"]
    imported.execute(Undo())
    assert total(imported, "tag:t") == MESSAGES
    assert imported.view("messages").verify(imported)  # adds and removals of one page in order


def test_undo_of_an_import_leaves_the_index_and_redo_brings_the_messages_back(
    imported: MailApplication, mbox: Path
) -> None:
    imported.execute(TagMessages(action="add", tag="t", query="patch"))
    tagged = total(imported, "tag:t")
    listed = search(imported.view("messages").db, parse_query(""), MESSAGES)
    [importing] = [r for r in _log(imported) if r["command"] == "ImportMailbox"]
    undo = imported.execute(Undo(operation_id=uuid.UUID(importing["id"])))
    assert undo.result["reverted"] == MESSAGES
    assert total(imported, "") == 0 and total(imported, "tag:t") == 0
    assert _terms(imported) == []
    redo = imported.execute(Redo())
    assert redo.result["reverted"] == MESSAGES
    assert (total(imported, ""), total(imported, "tag:t")) == (MESSAGES, tagged)
    assert search(imported.view("messages").db, parse_query(""), MESSAGES) == listed
    assert imported.view("messages").verify(imported)


def _terms(app: MailApplication) -> list[Any]:
    """What the full-text index holds, word by word."""
    return app.view("messages").db.execute("SELECT * FROM messages_terms").fetchall()


def test_a_replaced_message_gets_its_old_content_back(
    imported: MailApplication, mbox: Path, tmp_path: Path
) -> None:
    message_id = next(
        e.originator_id for _, e in imported.all_events() if isinstance(e, MessageIndexed)
    )
    before = imported.load(Message, message_id)
    assert before is not None
    changed = tmp_path / "changed.mbox"
    changed.write_bytes(mbox.read_bytes().replace(b"\n\n", b"\n\nEdited.\n", 1))
    replace = imported.execute(
        ResolveDuplicates(action="replace", path=changed, fingerprints=_fingerprints(changed))
    )
    assert replace.result["changed"] == 1
    replaced = imported.load(Message, message_id)
    assert replaced is not None and replaced.content() != before.content()
    assert total(imported, "edited") == 1
    imported.execute(Undo())
    after = imported.load(Message, message_id)
    assert after is not None and after.indexed and after.content() == before.content()
    assert total(imported, "edited") == 0  # removed and indexed again in one page
    assert imported.view("messages").verify(imported)


def _fingerprints(mbox: Path) -> tuple[str, ...]:
    from eventpile.mail.mailparse import ParsedMail, read_mailbox

    return tuple(m.fingerprint for m in read_mailbox(mbox) if isinstance(m, ParsedMail))[:1]


def _log(app: MailApplication) -> list[dict[str, Any]]:
    from eventpile.projections.operations import recent

    return recent(app.view("operations").db, 1000, private=True)


def test_undo_of_a_tag_creation_after_a_rename_removes_it_by_its_name_now(
    imported: MailApplication,
) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="old", query="*"))
    imported.execute(RenameTag(tag="old", new_name="new"))
    undo = imported.execute(Undo(operation_id=tagging.id))
    assert undo.result["reverted"] == MESSAGES + 1 and tag_names(imported) == ["trash"]
    imported.execute(Redo())
    assert tag_names(imported) == ["new", "trash"] and total(imported, "tag:new") == MESSAGES


def test_a_rename_renamed_again_since_is_not_reverted(imported: MailApplication) -> None:
    imported.execute(TagMessages(action="add", tag="a", query="*"))
    first = imported.execute(RenameTag(tag="a", new_name="b"))
    imported.execute(RenameTag(tag="b", new_name="c"))
    undo = imported.execute(Undo(operation_id=first.id))
    assert (undo.result["reverted"], undo.result["skipped"]) == (0, 1)
    assert undo.result["reasons"] == {"the tag was renamed again since": 1}
    assert tag_names(imported) == ["c", "trash"]


@pytest.mark.parametrize("freed_by", ["rename", "removal"])
def test_undo_does_not_give_back_a_name_another_tag_took_since(
    imported: MailApplication, freed_by: str
) -> None:
    imported.execute(TagMessages(action="add", tag="red", query="patch"))
    on_red = total(imported, "tag:red")
    freeing = imported.execute(
        RenameTag(tag="red", new_name="blue") if freed_by == "rename" else RemoveTag(tag="red")
    )
    taking = imported.execute(TagMessages(action="add", tag="red", query="*"))
    assert taking.result["created_tag"]
    before = tag_names(imported)
    undo = imported.execute(Undo(operation_id=freeing.id))
    if freed_by == "rename":
        assert (undo.result["reverted"], undo.result["skipped"]) == (0, 1)
        assert undo.result["reasons"] == {"another tag has this name now": 1}
        assert undo.message == (
            "Undid “Renamed a tag”: 0 changes reverted, 1 not in effect any more "
            "(another tag has this name now (1))"
        )
    else:  # its messages were given back to the red tag of now: they all have it
        assert (undo.result["reverted"], undo.result["skipped"]) == (0, on_red + 1)
        assert undo.result["reasons"] == {
            "another tag has this name now": 1,
            "the tag was added again since": on_red,
        }
    assert tag_names(imported) == before and before.count("red") == 1
    assert total(imported, "tag:red") == MESSAGES
    if freed_by == "rename":
        assert total(imported, "tag:blue") == on_red
    imported.execute(Redo())  # the undo changed nothing: neither does its redo
    assert tag_names(imported) == before


class RenameTags(Command):
    """Renames tags one after another, in one operation."""

    renames: tuple[tuple[str, str], ...]


@handles(RenameTags)
def _rename_tags(command: RenameTags, ctx: Context) -> Outcome:
    renamed: dict[str, uuid.UUID] = {}  # (the view does not see this operation's renames)
    for old, new in command.renames:
        tag_id = renamed.pop(old, None) or uuid.UUID(*tag_ids(ctx.app.current("messages"), old))
        tag = ctx.load(Tag, tag_id)
        assert tag is not None
        ctx.record(*tag.rename(new))
        renamed[new] = tag_id
    return Outcome("Renamed tags")


def test_a_name_an_undo_frees_can_be_given_back_by_the_same_undo(imported: MailApplication) -> None:
    """Undoing a swap of two names frees each name before giving it back; a name the undo
    cannot free (another tag took the other one since) is not given back either."""
    for name in ("a", "b"):
        imported.execute(TagMessages(action="add", tag=name, query=name))
    names = [(name, total(imported, f"tag:{name}")) for name in ("a", "b")]
    swap = RenameTags(renames=(("a", "c"), ("b", "a"), ("c", "b")))
    swapped = imported.execute(swap)
    undo = imported.execute(Undo())
    assert (undo.result["reverted"], undo.result["skipped"]) == (3, 0)
    assert [(name, total(imported, f"tag:{name}")) for name in ("a", "b")] == names
    imported.execute(Redo())
    imported.execute(TagMessages(action="add", tag="c", query="*"))
    undo = imported.execute(Undo(operation_id=swapped.id))
    assert (undo.result["reverted"], undo.result["skipped"]) == (0, 3)
    assert undo.result["reasons"] == {  # "c" is taken, so "b" is not freed, nor then "a"
        "another tag has this name now": 2,
        "the tag was renamed again since": 1,
    }
    assert tag_names(imported) == ["a", "b", "c", "trash"]


def test_undoing_a_tag_creation_keeps_the_tag_on_messages_tagged_since(
    imported: MailApplication,
) -> None:
    creating = imported.execute(TagMessages(action="add", tag="red", query="patch"))
    first = creating.result["changed"]
    imported.execute(TagMessages(action="add", tag="red", query="*"))
    undo = imported.execute(Undo(operation_id=creating.id))
    assert (undo.result["reverted"], undo.result["skipped"]) == (first, 1)
    assert undo.result["reasons"] == {"the tag is still on messages tagged since": 1}
    assert undo.message == (
        f"Undid “Tagged {first} messages”: {first} changes reverted, 1 not in effect any more"
        " (the tag is still on messages tagged since (1))"
    )
    assert tag_names(imported) == ["red", "trash"]
    assert total(imported, "tag:red") == MESSAGES - first
    imported.execute(Redo())
    assert total(imported, "tag:red") == MESSAGES and tag_names(imported) == ["red", "trash"]
    again = imported.execute(Undo(operation_id=creating.id))  # the redo's: no tag event
    assert (again.result["reverted"], again.result["skipped"]) == (first, 0)
    assert total(imported, "tag:red") == MESSAGES - first
    assert imported.view("messages").verify(imported)


def test_undoing_a_tag_creation_removes_the_tag_when_this_undo_untags_its_last_messages(
    imported: MailApplication,
) -> None:
    """Messages keep a tag only through adds the undo does not revert: here a later add,
    after the first one was removed, keeps it on one message."""
    creating = imported.execute(TagMessages(action="add", tag="red", query="*"))
    undo = imported.execute(Undo())
    assert (undo.result["reverted"], tag_names(imported)) == (MESSAGES + 1, ["trash"])
    imported.execute(Redo())
    imported.execute(TagMessages(action="remove", tag="red", query="patch"))
    readded = imported.execute(TagMessages(action="add", tag="red", query="patch")).result
    undo = imported.execute(Undo(operation_id=creating.id))
    assert undo.result["reasons"] == {
        "the tag was removed since": readded["changed"],
        "the tag is still on messages tagged since": 1,
    }
    assert total(imported, "tag:red") == readded["changed"]


@pytest.mark.parametrize("by", ["redo", "undo of the undo"])
def test_redoing_a_tag_removal_keeps_the_tag_on_messages_tagged_since(
    imported: MailApplication, by: str
) -> None:
    """Removing a tag takes it from its messages first; redoing that takes it from them
    again, but the messages a later operation tagged keep it, so the tag stays."""
    imported.execute(TagMessages(action="add", tag="red", query="patch"))
    on_red = total(imported, "tag:red")
    removing = imported.execute(RemoveTag(tag="red"))
    assert removing.result == {"untagged": on_red}
    undo = imported.execute(Undo())
    assert (undo.result["reverted"], total(imported, "tag:red")) == (on_red + 1, on_red)
    imported.execute(TagMessages(action="add", tag="red", query="*"))
    redo = imported.execute(
        Redo(operation_id=removing.id) if by == "redo" else Undo(operation_id=undo.id)
    )
    assert (redo.result["reverted"], redo.result["skipped"]) == (on_red, 1)
    assert redo.result["reasons"] == {"the tag is still on messages tagged since": 1}
    assert tag_names(imported) == ["red", "trash"]
    assert total(imported, "tag:red") == MESSAGES - on_red


# refusals: nothing written ---------------------------------------------------------------


class MarkAndSend(Command):
    """Stands for sending a mail: it changes data, and cannot be taken back."""

    undoable = False


@handles(MarkAndSend)
def _mark_and_send(command: MarkAndSend, ctx: Context) -> Outcome:
    tag = Tag.create("sent")
    ctx.record(tag)
    return Outcome("Sent")


def refused(app: MailApplication, command: Command, match: str) -> None:
    end = app.max_position()
    with pytest.raises(DomainError, match=match):
        app.execute(command)
    assert app.max_position() == end


def test_what_cannot_be_undone_is_refused_and_nothing_is_written(imported: MailApplication) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="t", query="*"))
    nothing = imported.execute(TagMessages(action="add", tag="t", query="*"))
    sent = imported.execute(MarkAndSend())
    refused(imported, Undo(operation_id=sent.id), "cannot be undone")
    refused(imported, Undo(operation_id=nothing.id), "changed nothing")
    refused(imported, Undo(operation_id=uuid.UUID(int=7)), "there is no operation")
    refused(imported, Redo(operation_id=tagging.id), "not undone: nothing to redo")
    refused(imported, Redo(), "there is nothing to redo")
    undo = imported.execute(Undo())  # the latest that can be undone and changed something
    assert undo.result["undid"] == str(tagging.id)
    refused(imported, Undo(operation_id=tagging.id), "already undone")
    imported.execute(Undo())  # then the import
    refused(imported, Undo(), "there is nothing to undo")


def test_a_plain_undo_refuses_while_the_latest_operation_waits_for_an_answer(
    imported: MailApplication, mbox: Path, tmp_path: Path
) -> None:
    """An import of new mail and of a known message changed indexes the new mail and asks
    what to do with the changed one: a plain undo neither reverts it (it is not finished)
    nor passes over it to the operation before."""
    tagging = imported.execute(TagMessages(action="add", tag="t", query="*"))
    changed = mbox.read_bytes().replace(b"\n\n", b"\n\nEdited.\n", 1)
    mixed = tmp_path / "mixed.mbox"
    mixed.write_bytes(changed + write_mbox(tmp_path / "new.mbox", 3, seed=99).read_bytes())
    waiting = imported.execute(ImportMailbox(path=mixed))
    assert waiting.status is Status.WAITING and waiting.result["indexed"] == 3
    refused(
        imported,
        Undo(),
        re.escape(
            f"the latest operation that changed something, {waiting.id} (ImportMailbox), is "
            "waiting: answer or cancel it first, or give the id of the operation to undo"
        ),
    )
    assert imported.execute(Undo(operation_id=tagging.id)).result["undid"] == str(tagging.id)
    cancel(imported, waiting.id)
    assert imported.execute(Undo()).result["undid"] == str(waiting.id)
    assert total(imported, "") == MESSAGES


def test_undoing_an_undo_explicitly_is_a_redo(imported: MailApplication) -> None:
    tagging = imported.execute(TagMessages(action="add", tag="t", query="*"))
    undo = imported.execute(Undo())
    imported.execute(Undo(operation_id=undo.id))
    assert total(imported, "tag:t") == MESSAGES
    assert record(imported, tagging.id)["status"] == "complete"


# the command line ------------------------------------------------------------------------


def test_the_undo_and_redo_commands(
    cli_env: Home, mbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["init"], capsys)[0] == 0
    _, importing, _ = cli(["import", str(mbox)], capsys)
    _, tagging, _ = cli(["tag", "add", "t", "*"], capsys)
    code, undone, _ = cli(["undo"], capsys)
    assert code == 0 and set(undone) == {"operation_id", "undid", "reverted", "skipped", "reasons"}
    assert (undone["undid"], undone["reverted"], undone["skipped"]) == (
        tagging["operation_id"],
        MESSAGES + 1,
        0,
    )
    _, redone, _ = cli(["redo"], capsys)
    assert redone["undid"] == undone["operation_id"] and redone["reverted"] == MESSAGES + 1
    _, by_prefix, _ = cli(["undo", importing["operation_id"][:13]], capsys)
    assert by_prefix["undid"] == importing["operation_id"]

    def refusal(argv: list[str], error: str) -> None:
        end = log_end(cli_env)
        code, data, err = cli(argv, capsys)
        assert (code, data, err.count("\n")) == (1, None, 1) and error in err, err
        assert log_end(cli_env) == end

    refusal(["undo", importing["operation_id"]], "already undone")
    refusal(["undo", "0000ffff"], "no operation has an id starting with")
    refusal(["redo", tagging["operation_id"]], "nothing to redo")
    assert main(["undo"]) == 0 and main(["undo"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("Undid “Tagged") and err == "eventpile: there is nothing to undo\n"


# the protocol and the testing kit --------------------------------------------------------

MESSAGE = uuid.UUID("01234567-89ab-8def-8123-456789abcdef")
TAG = uuid.UUID(int=0xA)
CONTENT = MessageContent(header_id="<1@example.org>", subject="Hello", size=10)
indexed = Message.index(MESSAGE, CONTENT)


def test_every_event_belongs_to_the_aggregate_that_declares_it() -> None:
    registry = registry_of(MailApplication)
    assert registry.aggregate_of(MessageTagged) is Message
    assert registry.aggregate_of(TagRenamed) is Tag
    assert registry.aggregate_of(OperationUndone) is Operation  # through its base
    with pytest.raises(DomainError, match="no aggregate of this application declares DomainEvent"):
        registry.aggregate_of(DomainEvent)


def test_given_when_then_checks_events_and_that_each_one_is_undone_by_its_inverse() -> None:
    story = testing.given(indexed)
    tagged = story.when(lambda m: m.tag(TAG)).then(story.event(MessageTagged, tag_id=TAG))
    testing.given(indexed, *tagged).when(lambda m: m.tag(TAG)).then_nothing()
    later = testing.given(indexed, *tagged)
    later.when(lambda m: m.untag(TAG)).then(
        later.event(MessageUntagged, tag_id=TAG, dots=(tagged[0].event_id,))
    )
    changed = CONTENT.model_copy(update={"subject": "Hi"})
    story.when(lambda m: m.reindex(changed)).then(
        story.event(MessageRemoved, **CONTENT.model_dump()),
        story.event(MessageIndexed, 2, **changed.model_dump()),
    )
    removed = testing.given(indexed, story.event(MessageRemoved, **CONTENT.model_dump()))
    removed.when(lambda m: m.remove()).then_raises(DomainError, "not in the index")
    fresh = testing.given(aggregate=Tag)
    created = fresh.when(lambda _: Tag.create("t")).events
    testing.given(*created).when(lambda t: t.rename("u")).then(
        TagRenamed(
            originator_id=created[0].originator_id, originator_version=2, old_name="t", new_name="u"
        )
    )
    with pytest.raises(AssertionError):
        story.when(lambda m: m.tag(TAG)).then()
    with pytest.raises(AssertionError):
        story.when(lambda m: m.tag(TAG)).then_raises(DomainError)


def test_compensation_reverts_only_what_is_in_effect() -> None:
    tag = MessageTagged(originator_id=MESSAGE, originator_version=2, tag_id=TAG)
    untag = MessageUntagged(
        originator_id=MESSAGE, originator_version=3, tag_id=TAG, dots=(tag.event_id,)
    )
    again = MessageTagged(originator_id=MESSAGE, originator_version=4, tag_id=TAG)
    state = testing.given(indexed, tag, untag, again).state
    assert state is not None
    assert state.compensate(tag) == "the tag was removed since"
    assert state.compensate(untag) == "the tag was added again since"
    [reverted] = state.compensate(again)
    assert isinstance(reverted, MessageUntagged) and reverted.dots == (again.event_id,)
    assert reverted.originator_version == 5
    trash = MessageTagged(originator_id=MESSAGE, originator_version=2, tag_id=TRASH_TAG_ID)
    assert isinstance(trash.inverse(3), MessageUntagged)  # trash and restore are a tag
    with pytest.raises(DomainError, match="cannot be undone"):
        state.compensate(Noted(originator_id=MESSAGE, originator_version=5))
    created = TagCreated(originator_id=TAG, originator_version=1, name="a")
    removed = testing.given(created, TagRemoved(originator_id=TAG, originator_version=2, name="a"))
    assert removed.state is not None
    assert removed.state.compensate(created) == "the tag was removed since"


class Noted(DomainEvent):
    """An event without an inverse."""


@hypothesis_given(
    testing.command_strategy(TagMessages, tag=st.sampled_from(["a", "b"]), query=st.just("*"))
)
def test_command_strategy_draws_valid_commands_from_the_model(command: TagMessages) -> None:
    assert command.action in ("add", "remove") and command.tag in ("a", "b")


def test_command_strategy_refuses_a_field_the_model_lacks() -> None:
    with pytest.raises(TypeError, match="has no field colour"):
        testing.command_strategy(TagMessages, colour=st.just("red"))


class App(MailApplication):
    """The mail application with this module's own test commands."""

    handlers = (
        _rename_tags,
        _mark_and_send,
    )
