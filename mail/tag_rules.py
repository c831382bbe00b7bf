"""What undo and redo may give back of tags: names, and memberships of messages.

The rules, checked against the state this undo leaves (the index, the aggregates,
and what the undo has recorded so far):

- A tag gets back a name (undoing its removal or a rename) only if no other tag
  holds that name now.
- A tag is removed (undoing its creation, redoing its removal) only if no message
  keeps it: so a membership never stays behind on a removed tag.
- A membership given back (undoing an untagging, redoing a tagging) on a tag that
  was removed since brings the tag back first when its name is free; otherwise it
  goes to the live tag of that name, and a message that already has that tag is
  skipped ("the tag was added again since"). Never a membership on a removed tag.
"""

from __future__ import annotations

import uuid

from eventpile import DomainEvent, Undoing
from eventpile.mail.message import Message, MessageTagged, MessageUntagged
from eventpile.mail.query import tag_dots, tag_ids
from eventpile.mail.tag import Tag, TagCreated, TagRemoved, TagRenamed

ADDED_AGAIN = "the tag was added again since"


class TagNames:
    """The names tags hold as one undo leaves them (the index plus what it recorded)."""

    def __init__(self, undoing: Undoing) -> None:
        self._undoing = undoing
        self._index = undoing.view("messages")
        self._holders: dict[str, set[str]] = {}
        """Tag name: the ids of the live tags that hold it."""

    @classmethod
    def of(cls, undoing: Undoing) -> TagNames:
        """The one of this undo."""
        return undoing.memo(cls, lambda: cls(undoing))

    # changes of tags ----------------------------------------------------------

    def check_tag(self, events: list[DomainEvent]) -> list[DomainEvent] | str:
        """``events`` (what reverts a change of a tag) counted as recorded, or why not."""
        for event in events:
            tag = event.originator_id
            match event:
                case TagCreated(name=name) | TagRenamed(new_name=name) if self._taken(name, tag):
                    return "another tag has this name now"
                case TagRemoved() if self._kept(tag):
                    return "the tag is still on messages tagged since"
        for event in events:
            self._note(event)
        return events

    def _note(self, event: DomainEvent) -> None:
        held = event.originator_id.hex
        match event:
            case TagCreated(name=name):
                self._held(name).add(held)
            case TagRenamed(old_name=old, new_name=new):
                self._held(old).discard(held)
                self._held(new).add(held)
            case TagRemoved(name=name):
                self._held(name).discard(held)

    def _taken(self, name: str, tag_id: uuid.UUID) -> bool:
        """Does another tag than ``tag_id`` hold ``name``?"""
        return bool(self._held(name) - {tag_id.hex})

    def _held(self, name: str) -> set[str]:
        if name not in self._holders:
            self._holders[name] = set(tag_ids(self._index, name))
        return self._holders[name]

    def _kept(self, tag_id: uuid.UUID) -> bool:
        """Does a message have the tag once what this undo recorded is counted? (The
        adds in the index, plus this undo's, less the ones it removed.)"""
        dots = set(tag_dots(self._index, tag_id.hex))
        for event in self._undoing.pending:
            if isinstance(event, MessageTagged) and event.tag_id == tag_id:
                dots.add((event.originator_id.hex, event.event_id.hex))
            elif isinstance(event, MessageUntagged) and event.tag_id == tag_id:
                dots -= {(event.originator_id.hex, dot.hex) for dot in event.dots}
        return bool(dots)

    def _has(self, message_id: uuid.UUID, tag_id: uuid.UUID) -> bool:
        message = self._undoing.load(Message, message_id)
        return message is not None and message.has_tag(tag_id)

    # memberships --------------------------------------------------------------

    def check_membership(self, events: list[DomainEvent]) -> list[DomainEvent] | str:
        """What reverts a change of a message's tags, with every tag it gives back live:
        a removed tag brought back first (when its name is free) or the membership moved
        to the live tag of that name; or why nothing may be recorded."""
        checked: list[DomainEvent] = []
        for event in events:
            if not isinstance(event, MessageTagged):
                checked.append(event)
                continue
            tag = self._undoing.load(Tag, event.tag_id)
            if tag is None or not tag.removed:
                checked.append(event)
                continue
            live = self._held(tag.name) - {tag.id.hex}
            if not live:
                revived = tag.event(TagCreated, name=tag.name)
                self._note(revived)
                checked += [revived, event]
                continue
            moved_to = uuid.UUID(min(live))
            if self._has(event.originator_id, moved_to):
                return ADDED_AGAIN
            checked.append(event.model_copy(update={"tag_id": moved_to}))
        return checked
