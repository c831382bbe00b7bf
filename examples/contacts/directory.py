"""The contact directory: find contacts by email address or by name prefix.

A projection: tables folded from the contact events, in SQL that SQLite and
PostgreSQL share (``?`` placeholders, ``INSERT … ON CONFLICT``, ``TEXT``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from eventpile import DomainEvent, Projection, ViewDB, registers

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
    personal: ClassVar[bool] = True
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
        db.script(SCHEMA + registers.SCHEMA)

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        """As :meth:`Contact.evolve <examples.contacts.domain.Contact.evolve>`: each value
        its latest write (kept in the framework's registers), the tables written from them."""
        contact = event.originator_id.hex
        if "address" in type(event).forgotten:
            return  # an address of a contact forgotten: none to find them by
        match event:
            case ContactCreated(name=name) | NameChanged(new_name=name):
                registers.write(db, contact, "name", event, name)
        match event:
            case ContactCreated() | ContactRemoved():
                registers.write(
                    db, contact, "removed", event, "1" if isinstance(event, ContactRemoved) else ""
                )
            case ContactMerged(into=into):
                registers.write(db, contact, "merged", event, into.hex)
            case ContactUnmerged():
                registers.write(db, contact, "merged", event, None)
            case EmailAdded(address=address) if registers.write(
                db, contact, f"email {address}", event, "1"
            ):
                db.execute(
                    "INSERT INTO contact_emails VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (address, contact),
                )
            case EmailRemoved(address=address) if registers.write(
                db, contact, f"email {address}", event, ""
            ):
                db.execute(
                    "DELETE FROM contact_emails WHERE address=? AND contact_id=?",
                    (address, contact),
                )
        shown = registers.value(db, contact, "name")
        if registers.value(db, contact, "removed") or shown is None:
            db.execute("DELETE FROM contacts WHERE id=?", (contact,))
        else:
            db.execute(
                "INSERT INTO contacts VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "name=excluded.name, name_key=excluded.name_key, merged_into=excluded.merged_into",
                (contact, shown, name_key(shown), registers.value(db, contact, "merged")),
            )

    def content_queries(self) -> Sequence[str]:
        return (
            "SELECT id, name, name_key, merged_into FROM contacts ORDER BY id",
            "SELECT address, contact_id FROM contact_emails ORDER BY address, contact_id",
            "SELECT key, register, stamp, value FROM registers ORDER BY key, register",
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


def holders(db: ViewDB, address: str) -> set[str]:
    """The ids of the contacts that have or had ``address``, and of those merged into them."""
    found: set[str] = set()
    register = f"email {address.strip().lower()}"
    new = {row[0] for row in db.execute("SELECT key FROM registers WHERE register=?", (register,))}
    while new:
        found |= new
        marks = ",".join("?" * len(new))
        merged = db.execute(f"SELECT id FROM contacts WHERE merged_into IN ({marks})", sorted(new))
        new = {row[0] for row in merged} - found
    return found


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
