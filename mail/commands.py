"""Mail commands: import a mailbox, tag and untag messages, manage tags."""

from __future__ import annotations

import uuid
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator

from eventpile import FORGOTTEN, Command, Context, DomainError, Outcome, Private, handles
from eventpile.mail.message import TRASH_TAG_ID, Message, MessageContent, message_uuid
from eventpile.mail.query import (
    QueryError,
    matching_ids,
    orphan_memberships,
    parse_query,
    shared_names,
    tag_dots,
    tag_ids,
)
from eventpile.mail.tag import Tag, TagName

if TYPE_CHECKING:
    from eventpile.mail.mailparse import ParsedMail

FLUSH_EVERY = 500
FLUSH_WAITING_FROM = 100
"""An import writes what it holds once it holds this many messages and the next ones are
not parsed yet (early in a large import, parsing is behind): rather than wait idle."""
LOAD_EVERY = 100
"""Messages are looked up this many at a time (the first ones as soon as they are parsed)."""
PARSE_ASIDE_FROM = 2_000_000
"""Mailboxes of this many bytes (~1,000 messages) are parsed in a second process (forking
costs ~10 ms); Maildirs always are."""


def _mailbox(path: Path) -> Path:
    from eventpile.mail.mailparse import check_mailbox

    return check_mailbox(path)


def _query(text: str) -> str:
    try:
        parse_query(text)
    except QueryError as e:
        raise ValueError(str(e)) from None
    return text


class ImportMailbox(Command):
    """Index the messages of an mbox, a gzipped mbox or a Maildir."""

    path: Annotated[Path, AfterValidator(_mailbox), Private]

    def describe(self) -> str:
        return "Import a mailbox"


@handles(ImportMailbox)
def import_mailbox(command: ImportMailbox, ctx: Context) -> Outcome:
    """Index what is new; ask once about known messages whose content differs."""
    from eventpile.mail.mailparse import (
        MalformedMail,
        ParsedMail,
        read_mailbox_aside,
        read_mailbox_counted,
    )

    key = ctx.app.keyring.purpose_key("message-id")
    large = command.path.is_dir() or command.path.stat().st_size >= PARSE_ASIDE_FROM
    read = read_mailbox_aside if large else read_mailbox_counted
    with closing(items := read(command.path)):
        indexed = skipped = failed = done = held = 0
        problems: list[str] = []
        differing: list[str] = []
        while batch := list(islice(items, LOAD_EVERY)):
            ids = {m: message_uuid(key, m.message_id) for m in batch if isinstance(m, ParsedMail)}
            ctx.preload(Message, ids.values())
            for item in batch:
                if isinstance(item, MalformedMail):
                    failed += 1
                    problems.append(str(item))
                    continue
                message_id = ids[item]
                content = message_content(item)
                state = ctx.load(Message, message_id)
                if state is None:
                    ctx.record(Message.index(message_id, content))
                    indexed += 1
                elif not state.indexed:
                    ctx.record(*state.reindex(content))
                    indexed += 1
                elif _differs(ctx, key, state, item):
                    differing.append(content.fingerprint)
                else:
                    skipped += 1
            done, held = done + len(batch), held + len(batch)
            if held >= FLUSH_EVERY or (held >= FLUSH_WAITING_FROM and not items.ready()):
                held = 0
                # the count, counted where it is parsed; it comes once the mailbox was read
                # whole, so nothing is written of one that cannot be (a gzip file cut short)
                ctx.progress(done, items.total(), f"Importing: {done:,} messages read")
                ctx.flush()
        items.total()  # before the end, when the operation writes what it holds
    result = {"indexed": indexed, "skipped": skipped, "failed": failed, "differing": len(differing)}
    message = f"Imported {indexed:,} messages ({skipped:,} already known, {failed:,} malformed)"
    if differing:
        message += f"; {len(differing):,} known messages differ (a question waits)"
        fingerprints = tuple(differing)
        ctx.ask(
            f"Found {len(differing):,} already indexed message(s) with different content: "
            "keep the existing ones, replace them, or keep both?",
            {
                action: ResolveDuplicates(
                    action=action, path=command.path, fingerprints=fingerprints
                )
                for action in DUPLICATE_ACTIONS
            },
        )
    return Outcome(message, result, {"problems": problems[:100]})


def message_content(item: ParsedMail) -> MessageContent:
    """What indexing records of a parsed message."""
    return MessageContent(
        header_id=item.message_id,
        subject=item.subject,
        sender=item.sender,
        to=item.to,
        cc=item.cc,
        sent=item.date,
        references=item.references,
        text=item.text,
        attachments=item.attachments,
        mimetypes=item.mimetypes,
        location=item.location,
        fingerprint=item.fingerprint,
        size=item.size,
    )


def _copy_id(key: bytes, header_id: str, fingerprint: str) -> uuid.UUID:
    """The id of the second copy of a message kept beside a different one ("keep both")."""
    return message_uuid(key, f"{header_id}\0{fingerprint}")


def _fingerprints(item: ParsedMail) -> set[str]:
    """What a message indexed from ``item`` may hold as fingerprint: its own or, if indexed by
    an earlier version, the digest of its bytes as stored in the mailbox."""
    return {item.fingerprint, item.raw_fingerprint}


def _differs(ctx: Context, key: bytes, state: Message, item: ParsedMail) -> bool:
    """Is ``item`` new for an indexed message with the same Message-ID (nor a kept copy)?
    Not if its sender was forgotten: their mail read again stays forgotten."""
    known = _fingerprints(item)
    if state.fingerprint in ("", FORGOTTEN, *known):
        return False
    copies = (ctx.load(Message, _copy_id(key, item.message_id, f)) for f in known)
    return not any(copy is not None and copy.indexed for copy in copies)


DuplicateAction = Literal["keep-existing", "replace", "keep-both"]
DUPLICATE_ACTIONS: tuple[DuplicateAction, ...] = ("keep-existing", "replace", "keep-both")


class ResolveDuplicates(Command):
    """What to do with messages found again with different content (a second stage)."""

    action: DuplicateAction
    path: Annotated[Path, Private]
    fingerprints: Annotated[tuple[str, ...], Private]

    def describe(self) -> str:
        return f"Duplicates: {self.action} ({len(self.fingerprints):,} messages)"


@handles(ResolveDuplicates)
def resolve_duplicates(command: ResolveDuplicates, ctx: Context) -> Outcome:
    from eventpile.mail.mailparse import ParsedMail, read_mailbox

    wanted = set(command.fingerprints)
    if command.action == "keep-existing":
        kept = len(wanted)
        return Outcome(f"Kept the indexed version of {kept:,} messages", {"kept": kept})
    key = ctx.app.keyring.purpose_key("message-id")
    changed = 0
    for item in read_mailbox(command.path):
        if not isinstance(item, ParsedMail) or not (found := wanted & _fingerprints(item)):
            continue  # a question of an earlier version holds raw fingerprints
        wanted -= found
        content = message_content(item)
        if command.action == "replace":
            message_id = message_uuid(key, item.message_id)
        else:
            message_id = _copy_id(key, item.message_id, item.fingerprint)
        state = ctx.load(Message, message_id)
        events = [Message.index(message_id, content)] if state is None else state.reindex(content)
        ctx.record(*events)
        changed += bool(events)
    verb = "Replaced" if command.action == "replace" else "Kept a second copy of"
    return Outcome(
        f"{verb} {changed:,} messages ({len(wanted):,} no longer in the mailbox)",
        {"changed": changed, "missing": len(wanted)},
    )


class TagMessages(Command):
    """Add a tag to, or remove it from, every message matching a query."""

    action: Literal["add", "remove"]
    tag: Annotated[TagName, Private]
    query: Annotated[str, AfterValidator(_query), Private]

    def describe(self) -> str:
        return f"Tag {self.action}: matching messages"


@handles(TagMessages)
def tag_messages(command: TagMessages, ctx: Context) -> Outcome:
    index = ctx.app.current("messages")
    found = tag_ids(index, command.tag)
    created = False
    if found:
        tag_id = uuid.UUID(found[0])
    elif command.action == "add":
        event = Tag.create(command.tag)
        ctx.record(event)
        tag_id, created = event.originator_id, True
    else:
        raise DomainError(f"there is no tag {command.tag!r}")
    changed = 0
    for message_hex in matching_ids(index, parse_query(command.query)):
        message = ctx.load(Message, uuid.UUID(message_hex))
        if message is None:
            continue
        events = message.tag(tag_id) if command.action == "add" else message.untag(tag_id)
        ctx.record(*events)
        changed += bool(events)
    verb = "Tagged" if command.action == "add" else "Untagged"
    return Outcome(f"{verb} {changed:,} messages", {"changed": changed, "created_tag": created})


class RenameTag(Command):
    tag: Annotated[TagName, Private]
    new_name: Annotated[TagName, Private]

    def describe(self) -> str:
        return "Rename a tag"


def _tag(ctx: Context, name: str) -> Tag:
    index = ctx.app.current("messages")
    for tag_hex in tag_ids(index, name):
        if tag_hex == TRASH_TAG_ID.hex:
            raise DomainError(f"the tag {name!r} is reserved: it cannot be renamed or removed")
        tag = ctx.load(Tag, uuid.UUID(tag_hex))
        if tag is not None and not tag.removed:
            return tag
    raise DomainError(f"there is no tag {name!r}")


@handles(RenameTag)
def rename_tag(command: RenameTag, ctx: Context) -> Outcome:
    if tag_ids(ctx.app.current("messages"), command.new_name):
        raise DomainError(f"there is already a tag {command.new_name!r}")
    ctx.record(*_tag(ctx, command.tag).rename(command.new_name))
    return Outcome("Renamed a tag")


class RemoveTag(Command):
    tag: Annotated[TagName, Private]

    def describe(self) -> str:
        return "Remove a tag"


@handles(RemoveTag)
def remove_tag(command: RemoveTag, ctx: Context) -> Outcome:
    """The tag leaves every message that has it, then the tag goes: no membership stays
    behind on a removed tag (undo gives both back)."""
    tag = _tag(ctx, command.tag)
    messages = {uuid.UUID(m) for m, _dot in tag_dots(ctx.app.current("messages"), tag.id.hex)}
    ctx.preload(Message, messages)
    untagged = 0
    for message_id in sorted(messages):
        state = ctx.require(Message, message_id, "message")
        events = state.untag(tag.id)
        ctx.record(*events)
        untagged += bool(events)
    ctx.record(*tag.remove())
    return Outcome(f"Removed a tag (from {untagged:,} messages)", {"untagged": untagged})


class RepairTags(Command):
    """Take off the memberships left on removed tags (by an earlier version, or commands
    that raced: undo gives them to a tag of the same name, bringing it back if need be),
    and give the messages of a name more than one tag holds to one of them (the first
    by id, as every command uses), removing the others."""

    def describe(self) -> str:
        return "Repair tags"


@handles(RepairTags)
def repair_tags(command: RepairTags, ctx: Context) -> Outcome:
    index = ctx.app.current("messages")
    held = orphan_memberships(index)
    ctx.preload(Message, {uuid.UUID(message) for message, _tag in held})
    for message, tag in held:
        ctx.record(*ctx.require(Message, uuid.UUID(message), "message").untag(uuid.UUID(tag)))
    merged = 0
    for _name, (kept, *others) in shared_names(index):
        for other in map(uuid.UUID, others):
            members = {uuid.UUID(m) for m, _dot in tag_dots(index, other.hex)}
            ctx.preload(Message, members)
            for message_id in sorted(members):
                state = ctx.require(Message, message_id, "message")
                ctx.record(*state.untag(other))
                ctx.record(*ctx.require(Message, message_id, "message").tag(uuid.UUID(kept)))
            ctx.record(*ctx.require(Tag, other).remove())
            merged += 1
    return Outcome(
        f"Took {len(held):,} memberships off removed tags; merged {merged:,} tags into "
        "another of their name",
        {"untagged": len(held), "merged": merged},
    )
