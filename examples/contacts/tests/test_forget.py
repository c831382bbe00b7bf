"""Forgetting a person in the address book, through the framework's ``forget``: a
contact's name and addresses are that person's (``Of(STREAM)``), so forgetting an
address forgets every contact that has it, and those merged into them; the others stay
as they were, the directory rebuilds to what it shows, and undo refuses to bring them
back."""

from __future__ import annotations

import uuid

import pytest

from eventpile import FORGOTTEN, DomainError, Undo
from examples.contacts import (
    AddEmail,
    AddressBook,
    Contact,
    CreateContact,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)


def contact(book: AddressBook, name: str, *emails: str) -> uuid.UUID:
    operation = book.execute(CreateContact(name=name, emails=emails))
    return uuid.UUID(hex=operation.result["contact_id"])


def directory(book: AddressBook) -> list[tuple[str, ...]]:
    rows = book.current("contacts").execute(
        "SELECT c.name, e.address FROM contacts c "
        "LEFT JOIN contact_emails e ON e.contact_id = c.id ORDER BY c.name, e.address"
    )
    return [tuple(row) for row in rows]


def test_forgetting_an_address_forgets_its_contacts_and_no_other(book: AddressBook) -> None:
    ann = contact(book, "Ann Example", "ann@example.org", "ann@work.example")
    bob = contact(book, "Bob Example", "bob@example.org")
    old = contact(book, "Ann (old)", "ann.old@example.org")
    book.execute(MergeContacts(contact_id=old, into_id=ann))
    book.execute(RenameContact(contact_id=bob, name="Robert Example"))
    assert book.forget("ANN@example.org").result == {"people": 2}
    assert book.find("ann") == [] and book.find("ann@work.example") == []
    assert book.find("Robert") == [
        {"id": bob.hex, "name": "Robert Example", "emails": ["bob@example.org"]}
    ]
    assert directory(book) == [
        ("Robert Example", "bob@example.org"),
        (FORGOTTEN, None),  # Ann, and the contact merged into her
        (FORGOTTEN, None),
    ]
    for gone in (ann, old):
        state = book.load(Contact, gone)
        assert state is not None and state.name == FORGOTTEN
    shown = directory(book)
    book.view("contacts").rebuild(book)
    assert directory(book) == shown


def test_an_address_removed_from_a_contact_still_finds_it(book: AddressBook) -> None:
    """The log still holds the contact that had the address: forgetting it reaches it."""
    ann = contact(book, "Ann Example", "ann@example.org", "ann@work.example")
    book.execute(RemoveEmail(contact_id=ann, address="ann@example.org"))
    assert book.forget("ann@example.org").result == {"people": 1}
    assert book.find("ann@work.example") == [] and book.find("Ann") == []


def test_undo_refuses_to_bring_them_back(book: AddressBook) -> None:
    ann = contact(book, "Ann Example", "ann@example.org")
    added = book.execute(AddEmail(contact_id=ann, address="ann@home.example"))
    book.forget("ann@example.org")
    with pytest.raises(DomainError, match="can no longer be restored"):
        book.execute(Undo(operation_id=added.id))


def test_an_address_nobody_has_is_refused(book: AddressBook) -> None:
    contact(book, "Bob Example", "bob@example.org")
    end = book.max_position()
    with pytest.raises(DomainError, match="nothing to forget"):
        book.forget("ann@example.org")
    with pytest.raises(DomainError, match="not an email address"):
        book.forget("Ann Example")
    assert book.max_position() == end
