"""The address book: the mail application plus the contact directory."""

from __future__ import annotations

from typing import Any

from eventpile import MailApplication

from .directory import ContactDirectory, by_email, by_name_prefix, directory


class AddressBook(MailApplication):
    """Contacts beside the mail index, in the same encrypted home."""

    projections = (*MailApplication.projections, ContactDirectory)

    def find(self, text: str) -> list[dict[str, Any]]:
        """Contacts by email address (when ``text`` has an ``@``), else by name prefix."""
        db = directory(self)
        return by_email(db, text) if "@" in text else by_name_prefix(db, text)
