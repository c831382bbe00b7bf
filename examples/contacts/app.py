"""The address book: a plain eventpile application of contacts and their directory."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from eventpile import Aggregate, Application, Handler, Projection

from .commands import (
    add_email,
    create_contact,
    import_contacts,
    merge_contacts,
    remove_email,
    rename_contact,
)
from .directory import ContactDirectory, by_email, by_name_prefix, directory, holders
from .domain import Contact


class AddressBook(Application):
    """Contacts in an encrypted home: create, change, merge, import; undo any of it.

    What it lists adds to the framework's own (operations, undo and redo, the
    operation log, the queue and the feed); it knows nothing of mail.
    """

    aggregates: ClassVar[tuple[type[Aggregate], ...]] = (Contact,)
    handlers: ClassVar[tuple[Handler[Any], ...]] = (
        create_contact,
        add_email,
        remove_email,
        rename_contact,
        merge_contacts,
        import_contacts,
    )
    projections: ClassVar[tuple[type[Projection], ...]] = (ContactDirectory,)

    def people_of(self, who: str) -> set[str]:
        """Forgetting an address forgets the contacts that have it (each contact is a
        person: its name and addresses are ``Of(STREAM)``)."""
        address = super().people_of(who).pop()
        return {str(uuid.UUID(hex=c)) for c in holders(directory(self), address)}

    def find(self, text: str) -> list[dict[str, Any]]:
        """Contacts by email address (when ``text`` has an ``@``), else by name prefix."""
        db = directory(self)
        return by_email(db, text) if "@" in text else by_name_prefix(db, text)
