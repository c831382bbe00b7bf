"""The ``Contact`` aggregate: a person's display name and email addresses.

Events record what happened (the delta), so each one can be undone: an address
added or removed, the name changed from old to new, the contact merged into
another (its addresses move there) or the merge reverted. A contact's name and
addresses are that person's (``Of(STREAM)``): forgetting the contact makes them
unreadable.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator

from eventpile import (
    STREAM,
    Aggregate,
    DomainError,
    DomainEvent,
    Invertible,
    Of,
    Private,
    first_event,
)

_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def check_address(address: str) -> str:
    """An email address, lower-cased (addresses compare without case here)."""
    address = address.strip().lower()
    if not _ADDRESS.match(address):
        raise ValueError(f"{address!r} is not an email address (like name@example.org)")
    return address


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not 1 <= len(name) <= 200:
        raise ValueError("a display name has 1 to 200 characters")
    return name


EmailAddress = Annotated[str, AfterValidator(check_address)]
DisplayName = Annotated[str, AfterValidator(check_name)]


class ContactEvent(Invertible):
    """An event of a contact's stream."""


class ContactCreated(ContactEvent):
    name: Annotated[DisplayName, Private, Of(STREAM)]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(ContactRemoved, version, name=self.name)


class ContactRemoved(ContactEvent):
    """The creation was undone."""

    name: Annotated[DisplayName, Private, Of(STREAM)]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(ContactCreated, version, name=self.name)


class EmailAdded(ContactEvent):
    address: Annotated[EmailAddress, Private, Of(STREAM)]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(EmailRemoved, version, address=self.address)


class EmailRemoved(ContactEvent):
    address: Annotated[EmailAddress, Private, Of(STREAM)]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(EmailAdded, version, address=self.address)


class NameChanged(ContactEvent):
    old_name: Annotated[DisplayName, Private, Of(STREAM)]
    new_name: Annotated[DisplayName, Private, Of(STREAM)]

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(NameChanged, version, old_name=self.new_name, new_name=self.old_name)


class ContactMerged(ContactEvent):
    """This contact now lives on as contact ``into`` (its addresses moved there)."""

    into: uuid.UUID

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(ContactUnmerged, version, into=self.into)


class ContactUnmerged(ContactEvent):
    """The merge into contact ``into`` was undone."""

    into: uuid.UUID

    def inverse(self, version: int) -> DomainEvent:
        return self.follow(ContactMerged, version, into=self.into)


class Contact(Aggregate):
    event_types: ClassVar[tuple[type[DomainEvent], ...]] = (ContactEvent,)

    name: str
    emails: tuple[str, ...] = ()
    merged_into: uuid.UUID | None = None
    removed: bool = False
    forgotten: bool = False
    """Was the person forgotten (``eventpile forget``)? Then it can no longer be changed."""

    @classmethod
    def start(cls, event: DomainEvent) -> Self:
        if not isinstance(event, ContactCreated):
            return super().start(event)
        return cls(id=event.originator_id, name=event.name).evolve(event)

    def evolve(self, event: DomainEvent) -> Self:
        """Each value (the name, whether removed, merged, each address) is its latest
        write, so that changes made at once on two installations settle alike. A value
        of a contact forgotten since reads forgotten: its addresses are none."""
        state = self.model_copy(update={"forgotten": True}) if type(event).forgotten else self
        if type(event).forgotten and isinstance(event, EmailAdded | EmailRemoved):
            return state
        match event:
            case ContactCreated(name=name):
                return state.write(event, "name", name=name).write(event, "removed", removed=False)
            case ContactRemoved():
                return state.write(event, "removed", removed=True)
            case EmailAdded(address=address) | EmailRemoved(address=address):
                # in address order, not the order adds arrived in (which a sync changes)
                kept = {a for a in state.emails if a != address}
                if isinstance(event, EmailAdded):
                    kept.add(address)
                return state.write(event, f"email {address}", emails=tuple(sorted(kept)))
            case NameChanged(new_name=name):
                return state.write(event, "name", name=name)
            case ContactMerged(into=into):
                return state.write(event, "merged", merged_into=into)
            case ContactUnmerged():
                return state.write(event, "merged", merged_into=None)
        return state

    # undo -------------------------------------------------------------------

    def not_in_effect(self, event: Invertible) -> str | None:
        """Why undoing ``event`` now would not revert it (None: it would)."""
        match event:
            case ContactRemoved() if not self.removed:
                return "the contact was created again since"
            case ContactUnmerged() if self.merged_into is not None:
                return "the contact was merged again since"
            case ContactMerged(into=into) if self.merged_into != into:
                return "the merge was undone since"
            case _ if self.removed:
                return "the contact was removed since"
            case _ if self.merged_into is not None and not isinstance(event, ContactMerged):
                return "the contact was merged into another since"
            case ContactCreated() if self.emails:
                return "the contact has addresses added since"
            case EmailAdded(address=address) if address not in self.emails:
                return "the address was removed since"
            case EmailRemoved(address=address) if address in self.emails:
                return "the address was added again since"
            case NameChanged(new_name=name) if self.name != name:
                return "the contact was renamed again since"
        return None

    def compensate(self, event: DomainEvent) -> list[DomainEvent] | str:
        """As the default, but a contact renamed since its creation is removed by its name now."""
        if isinstance(event, ContactCreated) and self.not_in_effect(event) is None:
            return [self.event(ContactRemoved, name=self.name)]
        return super().compensate(event)

    # decisions --------------------------------------------------------------

    @classmethod
    def create(
        cls, contact_id: uuid.UUID, name: str, emails: tuple[str, ...] = ()
    ) -> list[DomainEvent]:
        """A new contact with these addresses (the first of each repeated one)."""
        events: list[DomainEvent] = [first_event(ContactCreated, contact_id, name=name)]
        state = cls(id=contact_id, name=name, version=1)
        for address in dict.fromkeys(emails):
            (added,) = state.add_email(address)
            events.append(added)
            state = state.apply(added)
        return events

    def _check_active(self) -> None:
        if self.forgotten:
            raise DomainError(f"contact {self.id} was forgotten: it can no longer be changed")
        if self.removed:
            raise DomainError(f"contact {self.name!r} was removed")
        if self.merged_into is not None:
            raise DomainError(f"contact {self.name!r} was merged into {self.merged_into}")

    def add_email(self, address: str) -> list[DomainEvent]:
        self._check_active()
        if address in self.emails:
            raise DomainError(f"{self.name!r} already has the address {address}")
        return [self.event(EmailAdded, address=address)]

    def remove_email(self, address: str) -> list[DomainEvent]:
        self._check_active()
        if address not in self.emails:
            raise DomainError(f"{self.name!r} has no address {address}")
        return [self.event(EmailRemoved, address=address)]

    def rename(self, name: str) -> list[DomainEvent]:
        self._check_active()
        if name == self.name:
            raise DomainError(f"the contact is already named {name!r}")
        return [self.event(NameChanged, old_name=self.name, new_name=name)]

    def merge_into(self, other: Contact) -> list[DomainEvent]:
        """Move this contact's addresses to ``other`` and retire this one."""
        self._check_active()
        other._check_active()
        if other.id == self.id:
            raise DomainError("a contact cannot be merged into itself")
        moved = [a for a in self.emails if a not in other.emails]
        return [
            *(self.event(EmailRemoved, n, address=a) for n, a in enumerate(self.emails, 1)),
            self.event(ContactMerged, len(self.emails) + 1, into=other.id),
            *(other.event(EmailAdded, n, address=a) for n, a in enumerate(moved, 1)),
        ]
