"""The ``Message`` aggregate: one indexed mail message and its tags.

Tag membership is an add-wins, observed-remove set: every add is identified by
the event that made it (its *dot*), and a removal names the dots it observed.
So an undo removes exactly the dots its operation added, and events from two
installations apply in any order with the same result. Undoing a removal adds
the tag back with a new dot that stands in for the removed ones, so undoing the
original add later removes its stand-in. Trash is a reserved tag.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self

from pydantic import BaseModel

from eventpile import (
    Aggregate,
    DomainError,
    DomainEvent,
    Invertible,
    Of,
    Private,
    first_event,
    hashed_uuid,
)

if TYPE_CHECKING:
    from eventpile import Undoing

TRASH_TAG_ID = uuid.UUID("00000000-0000-8000-8000-000000000001")


def message_uuid(key: bytes, header_id: str) -> uuid.UUID:
    """The message's id: a keyed hash of its Message-ID, which it does not reveal.

    The same message gets the same id on every installation sharing ``key``.
    """
    digest = hmac.new(key, b"message-id\0" + header_id.encode(), hashlib.sha256).digest()
    return hashed_uuid(digest)


class MessageContent(BaseModel):
    """What indexing records about a message. Only its size is public. What its sender
    wrote, and to whom, is theirs (``Of("sender")``): forgetting the sender makes it
    unreadable; forgetting a recipient leaves it to the others."""

    header_id: Annotated[str, Private, Of("sender")]
    subject: Annotated[str, Private, Of("sender")] = ""
    sender: Annotated[str, Private, Of("sender")] = ""
    to: Annotated[str, Private, Of("sender")] = ""
    cc: Annotated[str, Private, Of("sender")] = ""
    sent: Annotated[datetime | None, Private, Of("sender")] = None
    """When it was sent (its Date header); ``date`` is the event's own time."""
    references: Annotated[tuple[str, ...], Private, Of("sender")] = ()
    """The Message-IDs of its References and In-Reply-To fields: what threads it."""
    text: Annotated[str, Private, Of("sender")] = ""
    """All its text: every text part, forwarded messages' too, whitespace folded."""
    attachments: Annotated[tuple[str, ...], Private, Of("sender")] = ()
    """The file names of its parts."""
    mimetypes: Annotated[tuple[str, ...], Private, Of("sender")] = ()
    """The content types of its parts."""
    location: Annotated[str, Private, Of("sender")] = ""
    """Where it was read (a mailbox's path and the message's place in it)."""
    fingerprint: Annotated[str, Private, Of("sender")] = ""
    """A hash of the raw message (one who holds a copy could confirm it was here)."""
    size: int = 0

    def content_fields(self) -> dict[str, Any]:
        """Just the content fields, by name (of a subclass: an event or the aggregate state)."""
        return {name: getattr(self, name) for name in MessageContent.model_fields}

    def content(self) -> MessageContent:
        """Just the content, as a model."""
        return MessageContent.model_construct(**self.content_fields())


class _ContentEvent(MessageContent, Invertible):
    """An event that carries a message's content. Version 2: its whole ``text`` (and
    its attachments' names and parts' types) where version 1 had an ``excerpt``, the
    first 2,000 characters of its first text part."""

    class_version: ClassVar[int] = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["text"] = state.pop("excerpt", "")


class MessageIndexed(_ContentEvent):
    def describe(self) -> str:
        return f"Message indexed ({self.size:,} bytes)"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(MessageRemoved, version, **self.content_fields())


class MessageRemoved(_ContentEvent):
    """The message left the index; it carries what it removed, so it can be undone."""

    def describe(self) -> str:
        return f"Message removed from the index ({self.size:,} bytes)"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(MessageIndexed, version, **self.content_fields())


class MessageTagged(Invertible):
    """Adds the tag; this event's ``event_id`` is the dot of the add."""

    tag_id: uuid.UUID

    def describe(self) -> str:
        return f"Tag {self.tag_id} added"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(MessageUntagged, version, tag_id=self.tag_id, dots=(self.event_id,))


class MessageUntagged(Invertible):
    """Removes the adds (dots) of the tag that were observed."""

    tag_id: uuid.UUID
    dots: tuple[uuid.UUID, ...]

    def describe(self) -> str:
        return f"Tag {self.tag_id} removed"

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(MessageRetagged, version, tag_id=self.tag_id, restores=self.dots)


class MessageRetagged(MessageTagged):
    """The tag back after an untag (its undo): a new add, this event's id its dot,
    standing in for the removed adds ``restores``."""

    restores: tuple[uuid.UUID, ...]

    def describe(self) -> str:
        return f"Tag {self.tag_id} added back"


class Message(MessageContent, Aggregate):
    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (
        MessageIndexed,
        MessageRemoved,
        MessageTagged,
        MessageUntagged,
    )

    tags: dict[uuid.UUID, frozenset[uuid.UUID]] = {}
    indexed: bool = True
    restored: dict[uuid.UUID, frozenset[uuid.UUID]] = {}
    """For a dot added back by an undo: the earlier dots it stands in for (transitively)."""

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        if not isinstance(event, MessageIndexed):
            return super().start(event)
        return cls(id=event.originator_id, **event.content_fields()).evolve(event)

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            # in the index or not, and with what: the latest write (see Aggregate.write)
            case MessageIndexed():
                return self.write(event, "indexed", **event.content_fields(), indexed=True)
            case MessageRemoved():
                return self.write(event, "indexed", indexed=False)
            case MessageRetagged(tag_id=tag, event_id=dot, restores=restores):
                dots = self.tags.get(tag, frozenset()) | {dot}
                stands_for = frozenset(restores).union(
                    *(self.restored.get(d, ()) for d in restores)
                )
                return self.model_copy(
                    update={
                        "tags": {**self.tags, tag: dots},
                        "restored": {**self.restored, dot: stands_for},
                    }
                )
            case MessageTagged(tag_id=tag, event_id=dot):
                dots = self.tags.get(tag, frozenset()) | {dot}
                return self.model_copy(update={"tags": {**self.tags, tag: dots}})
            case MessageUntagged(tag_id=tag, dots=removed):
                left = self.tags.get(tag, frozenset()) - set(removed)
                tags = {k: v for k, v in self.tags.items() if k != tag}
                if left:
                    tags[tag] = left
                return self.model_copy(update={"tags": tags})
        return self

    def not_in_effect(self, event: Invertible) -> str | None:
        match event:
            case MessageIndexed() if not self.indexed:
                return "the message was removed from the index since"
            case MessageIndexed() if self.content_fields() != event.content_fields():
                return "the message was indexed again since, with other content"
            case MessageRemoved() if self.indexed:
                return "the message was indexed again since"
            case MessageTagged() if not self._standing_for(event):
                return "the tag was removed since"
            case MessageUntagged(tag_id=tag) if tag in self.tags:
                return "the tag was added again since"
        return None

    def compensate(self, event: DomainEvent) -> list[DomainEvent] | str:
        """As the default, but an add is reverted by removing what stands for it now:
        its dot, or the dots that brought it back after it was removed (on its tag, or
        on the tag of that name it was given back to)."""
        if isinstance(event, MessageTagged) and (found := self._standing_for(event)):
            return [
                self.event(MessageUntagged, n, tag_id=tag, dots=tuple(sorted(dots)))
                for n, (tag, dots) in enumerate(sorted(found.items()), 1)
            ]
        return super().compensate(event)

    @classmethod
    def still_possible(
        cls, compensation: list[DomainEvent], undoing: Undoing
    ) -> list[DomainEvent] | str:
        """A membership is given back only to a live tag (see
        :mod:`eventpile.mail.tag_rules`)."""
        from eventpile.mail.tag_rules import TagNames

        return TagNames.of(undoing).check_membership(compensation)

    def _standing_for(self, added: MessageTagged) -> dict[uuid.UUID, frozenset[uuid.UUID]]:
        """By tag, the dots that stand for ``added`` now."""
        dot = added.event_id
        found = {
            tag: frozenset(d for d in dots if d == dot or dot in self.restored.get(d, ()))
            for tag, dots in self.tags.items()
        }
        return {tag: dots for tag, dots in found.items() if dots}

    # decisions ----------------------------------------------------------

    @staticmethod
    def index(message_id: uuid.UUID, content: MessageContent) -> MessageIndexed:
        return first_event(MessageIndexed, message_id, **content.model_dump())

    def reindex(self, content: MessageContent) -> list[DomainEvent]:
        """Bring a removed message back, or replace an indexed one's content: the old
        content is removed first, so each event can be undone from what it records."""
        if not self.indexed:
            return [self.event(MessageIndexed, **content.model_dump())]
        if self.content_fields() == content.content_fields():
            return []
        return [*self.remove(), self.event(MessageIndexed, 2, **content.model_dump())]

    def remove(self) -> list[DomainEvent]:
        if not self.indexed:
            raise DomainError("the message is not in the index")
        return [self.event(MessageRemoved, **self.content_fields())]

    def has_tag(self, tag_id: uuid.UUID) -> bool:
        return tag_id in self.tags

    def tag(self, tag_id: uuid.UUID) -> list[DomainEvent]:
        """Add the tag (nothing if it is already there)."""
        return [] if tag_id in self.tags else [self.event(MessageTagged, tag_id=tag_id)]

    def untag(self, tag_id: uuid.UUID) -> list[DomainEvent]:
        """Remove every observed add of the tag (nothing if it is not there)."""
        dots = self.tags.get(tag_id)
        if not dots:
            return []
        return [self.event(MessageUntagged, tag_id=tag_id, dots=tuple(sorted(dots)))]
