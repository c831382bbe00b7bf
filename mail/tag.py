"""The ``Tag`` aggregate: a named label for messages."""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import TYPE_CHECKING, Annotated, ClassVar, Self

from pydantic import AfterValidator

from eventpile import Aggregate, DomainError, DomainEvent, Invertible, Private, first_event, uuid7
from eventpile.mail.message import MessageUntagged
from eventpile.mail.query import Query, matching_ids, tag_ids

if TYPE_CHECKING:
    from eventpile import Undoing

_TAG_NAME = re.compile(r"^[\w.+/-]{1,64}$")


def check_tag_name(name: str) -> str:
    """The name in composed Unicode (NFC: "e" and a combining accent become "é"), if it
    is a tag name."""
    name = unicodedata.normalize("NFC", name)
    if not _TAG_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a tag name: use 1-64 letters, digits or . _ + / - (no spaces)"
        )
    return name


TagName = Annotated[str, AfterValidator(check_tag_name)]


class TagCreated(Invertible):
    name: Annotated[TagName, Private]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(TagRemoved, version, name=self.name)


class TagRenamed(Invertible):
    old_name: Annotated[TagName, Private]
    new_name: Annotated[TagName, Private]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(TagRenamed, version, old_name=self.new_name, new_name=self.old_name)


class TagRemoved(Invertible):
    name: Annotated[TagName, Private]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(TagCreated, version, name=self.name)


class Tag(Aggregate):
    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (TagCreated, TagRenamed, TagRemoved)

    name: str
    removed: bool = False

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        if not isinstance(event, TagCreated):
            return super().start(event)
        return cls(id=event.originator_id, name=event.name)

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            case TagCreated(name=name):
                return self.model_copy(update={"name": name, "removed": False})
            case TagRenamed(new_name=name):
                return self.model_copy(update={"name": name})
            case TagRemoved():
                return self.model_copy(update={"removed": True})
        return self

    def not_in_effect(self, event: Invertible) -> str | None:
        match event:
            case TagCreated() if self.removed:
                return "the tag was removed since"
            case TagRemoved() if not self.removed:
                return "the tag was created again since"
            case TagRenamed() if self.removed:
                return "the tag was removed since"
            case TagRenamed(new_name=name) if self.name != name:
                return "the tag was renamed again since"
        return None

    def compensate(self, event: DomainEvent) -> list[DomainEvent] | str:
        """As the default, but a tag renamed since its creation is removed by its name now."""
        if isinstance(event, TagCreated) and not self.removed:
            return [self.event(TagRemoved, name=self.name)]
        return super().compensate(event)

    @classmethod
    def still_possible(
        cls, compensation: list[DomainEvent], undoing: Undoing
    ) -> list[DomainEvent] | str:
        """Checked in the message index as this undo leaves it: a tag gets back a name only
        if no other tag holds it now, and a tag that the undone or redone command created
        is removed only if no message keeps it once this undo's own untaggings are
        counted (not so a tag that command removed: redoing its removal removes it from
        its messages)."""
        return undoing.memo(_TagNames, lambda: _TagNames(undoing)).check(compensation)

    @staticmethod
    def create(name: str) -> TagCreated:
        return first_event(TagCreated, uuid7(), name=name)

    def rename(self, new_name: str) -> list[DomainEvent]:
        if self.removed:
            raise DomainError(f"tag {self.name!r} was removed")
        if new_name == self.name:
            return []
        return [self.event(TagRenamed, old_name=self.name, new_name=new_name)]

    def remove(self) -> list[DomainEvent]:
        if self.removed:
            raise DomainError(f"tag {self.name!r} was already removed")
        return [self.event(TagRemoved, name=self.name)]


class _TagNames:
    """The names tags hold, as one undo leaves them (the index plus what it recorded)."""

    def __init__(self, undoing: Undoing) -> None:
        self._undoing = undoing
        self._index = undoing.view("messages")
        self._holders: dict[str, set[str]] = {}
        """Tag name: the ids of the tags that hold it."""

    def check(self, events: list[DomainEvent]) -> list[DomainEvent] | str:
        for event in events:
            tag = event.originator_id
            match event:
                case TagCreated(name=name) | TagRenamed(new_name=name) if self._taken(name, tag):
                    return "another tag has this name now"
                case TagRemoved(name=name) if self._kept(tag, name):
                    return "the tag is still on messages tagged since"
        for event in events:
            held = event.originator_id.hex
            match event:
                case TagCreated(name=name):
                    self._held(name).add(held)
                case TagRenamed(old_name=old, new_name=new):
                    self._held(old).discard(held)
                    self._held(new).add(held)
                case TagRemoved(name=name):
                    self._held(name).discard(held)
        return events

    def _taken(self, name: str, tag_id: uuid.UUID) -> bool:
        """Does another tag than ``tag_id`` hold ``name``?"""
        return bool(self._held(name) - {tag_id.hex})

    def _held(self, name: str) -> set[str]:
        if name not in self._holders:
            self._holders[name] = set(tag_ids(self._index, name))
        return self._holders[name]

    def _kept(self, tag_id: uuid.UUID, name: str) -> bool:
        """Was the tag created by the command undone or redone, and do messages keep it
        once this undo's untaggings are counted?"""
        if not self._undoing.started_by_command(tag_id):
            return False
        untagged = {
            e.originator_id.hex
            for e in self._undoing.pending
            if isinstance(e, MessageUntagged) and e.tag_id == tag_id
        }
        return bool(set(matching_ids(self._index, Query(tags=(name,)))) - untagged)
