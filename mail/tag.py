"""The ``Tag`` aggregate: a named label for messages.

Its name and whether it is removed are each the latest write by
:attr:`~eventpile.DomainEvent.stamp`, not by the order events arrived in: a rename
or a removal made on two installations at once ends the same on both after a sync.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Annotated, ClassVar, Self

from pydantic import AfterValidator

from eventpile import Aggregate, DomainError, DomainEvent, Invertible, Private, first_event, uuid7

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
        return cls(id=event.originator_id, name=event.name).evolve(event)

    def evolve(self, event: DomainEvent) -> Self:
        match event:
            case TagCreated(name=name):
                return self.write(event, "name", name=name).write(event, "removed", removed=False)
            case TagRenamed(new_name=name):
                return self.write(event, "name", name=name)
            case TagRemoved():
                return self.write(event, "removed", removed=True)
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
        """A tag gets back a name only if no other tag holds it now, and is removed only if
        no message keeps it (see :mod:`eventpile.mail.tag_rules`)."""
        from eventpile.mail.tag_rules import TagNames

        return TagNames.of(undoing).check_tag(compensation)

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
