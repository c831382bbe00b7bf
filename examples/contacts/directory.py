"""The contact directory: find contacts by email address or by name prefix.

A projection: tables folded from the contact events, in SQL that SQLite and
PostgreSQL share (``?`` placeholders, ``INSERT … ON CONFLICT``, ``TEXT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from eventpile import DomainEvent, Projection, ViewDB

from .domain import (
    ContactCreated,
    ContactMerged,
    ContactRemoved,
    ContactUnmerged,
    EmailAdded,
    EmailRemoved,
    NameChanged,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    merged_into TEXT
);
CREATE INDEX IF NOT EXISTS contacts_name_key ON contacts(name_key);
CREATE TABLE IF NOT EXISTS contact_emails (
    address TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    PRIMARY KEY (address, contact_id)
);
CREATE INDEX IF NOT EXISTS contact_emails_contact ON contact_emails(contact_id);
"""


def name_key(text: str) -> str:
    """What name lookups compare: case-folded, single spaces."""
    return " ".join(text.casefold().split())


class ContactDirectory(Projection):
    name: ClassVar[str] = "contacts"
    topics: ClassVar[tuple[type[DomainEvent], ...]] = (
        ContactCreated,
        ContactRemoved,
        EmailAdded,
        EmailRemoved,
        NameChanged,
        ContactMerged,
        ContactUnmerged,
    )

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA)

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        contact = event.originator_id.hex
        match event:
            case ContactCreated(name=name):
                db.execute(
                    "INSERT INTO contacts (id, name, name_key) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET name=excluded.name, name_key=excluded.name_key",
                    (contact, name, name_key(name)),
                )
            case ContactRemoved():
                db.execute("DELETE FROM contacts WHERE id=?", (contact,))
            case NameChanged(new_name=name):
                db.execute(
                    "UPDATE contacts SET name=?, name_key=? WHERE id=?",
                    (name, name_key(name), contact),
                )
            case EmailAdded(address=address):
                db.execute(
                    "INSERT INTO contact_emails VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (address, contact),
                )
            case EmailRemoved(address=address):
                db.execute(
                    "DELETE FROM contact_emails WHERE address=? AND contact_id=?",
                    (address, contact),
                )
            case ContactMerged(into=into):
                db.execute("UPDATE contacts SET merged_into=? WHERE id=?", (into.hex, contact))
            case ContactUnmerged():
                db.execute("UPDATE contacts SET merged_into=NULL WHERE id=?", (contact,))

    def content_queries(self) -> Sequence[str]:
        return (
            "SELECT id, name, name_key, merged_into FROM contacts ORDER BY id",
            "SELECT address, contact_id FROM contact_emails ORDER BY address, contact_id",
        )


class Views(Protocol):
    """What has the application's views: the application, or ``ctx.app`` in a handler."""

    def current(self, name: str) -> ViewDB: ...


def directory(app: Views) -> ViewDB:
    """The contact directory of ``app``, up to date."""
    return app.current(ContactDirectory.name)


def _contacts(db: ViewDB, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    rows = db.execute(
        f"SELECT c.id, c.name, e.address FROM contacts c "
        f"LEFT JOIN contact_emails e ON e.contact_id = c.id "
        f"WHERE c.merged_into IS NULL AND {where} ORDER BY c.name_key, c.id, e.address",
        params,
    ).fetchall()
    found: dict[str, dict[str, Any]] = {}
    for contact_id, name, address in rows:
        entry = found.setdefault(contact_id, {"id": contact_id, "name": name, "emails": []})
        if address is not None:
            entry["emails"].append(address)
    return list(found.values())


def by_email(db: ViewDB, address: str) -> list[dict[str, Any]]:
    """The contacts that have ``address``: ``[{"id", "name", "emails"}]``."""
    return _contacts(
        db,
        "c.id IN (SELECT contact_id FROM contact_emails WHERE address=?)",
        (address.strip().lower(),),
    )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def by_name_prefix(db: ViewDB, prefix: str) -> list[dict[str, Any]]:
    """The contacts whose name, or a word of it, starts with ``prefix`` (any case)."""
    key = _like(name_key(prefix))
    return _contacts(
        db,
        "(c.name_key LIKE ? ESCAPE '\\' OR c.name_key LIKE ? ESCAPE '\\')",
        (f"{key}%", f"% {key}%"),
    )
