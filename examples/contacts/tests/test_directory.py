"""The contact directory: lookups by address and by name prefix, through commands."""

from __future__ import annotations

import uuid

import pytest

from eventpile import Application, DomainError, Home, Keyring
from examples.contacts import (
    AddEmail,
    AddressBook,
    CreateContact,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)


def create(book: Application, name: str, *emails: str) -> uuid.UUID:
    operation = book.execute(CreateContact(name=name, emails=emails))
    return uuid.UUID(operation.result["contact_id"])


def names(found: list[dict[str, object]]) -> list[object]:
    return [c["name"] for c in found]


def test_lookup_by_address_ignores_case_and_follows_changes(book: AddressBook) -> None:
    ralf = create(book, "Ralf Baechle", "Ralf@Linux-MIPS.org")
    assert book.find("RALF@linux-mips.org") == [
        {"id": ralf.hex, "name": "Ralf Baechle", "emails": ["ralf@linux-mips.org"]}
    ]
    book.execute(AddEmail(contact_id=ralf, address="ralf@gnu.org"))
    book.execute(RemoveEmail(contact_id=ralf, address="ralf@linux-mips.org"))
    assert book.find("ralf@linux-mips.org") == []
    assert book.find("ralf@gnu.org")[0]["emails"] == ["ralf@gnu.org"]


def test_lookup_by_name_prefix_matches_any_word_in_any_case(book: AddressBook) -> None:
    create(book, "Ralf Baechle")
    create(book, "Maciej W. Rozycki")
    create(book, "Rafael 100%_sure")
    assert names(book.find("ra")) == ["Rafael 100%_sure", "Ralf Baechle"]
    assert names(book.find("BAE")) == ["Ralf Baechle"]
    assert names(book.find("w. roz")) == ["Maciej W. Rozycki"]
    assert names(book.find("100%_")) == ["Rafael 100%_sure"]
    assert names(book.find("100__")) == []  # LIKE wildcards in the prefix are literal
    assert names(book.find("aechle")) == []


def test_rename_and_merge_update_the_lookups(book: AddressBook) -> None:
    ralf = create(book, "Ralf", "ralf@linux-mips.org")
    other = create(book, "R. Baechle", "ralf@gnu.org", "ralf@linux-mips.com")
    book.execute(RenameContact(contact_id=ralf, name="Ralf Baechle"))
    book.execute(MergeContacts(contact_id=other, into_id=ralf))
    assert names(book.find("r")) == ["Ralf Baechle"]
    assert book.find("ralf@gnu.org")[0]["emails"] == [
        "ralf@gnu.org",
        "ralf@linux-mips.com",
        "ralf@linux-mips.org",
    ]
    assert book.view("contacts").verify(book)


def test_an_address_belongs_to_one_contact(book: AddressBook) -> None:
    create(book, "Ralf", "ralf@linux-mips.org")
    other = create(book, "Someone")
    with pytest.raises(DomainError, match="already belongs to 'Ralf'"):
        book.execute(AddEmail(contact_id=other, address="RALF@linux-mips.org"))
    with pytest.raises(DomainError, match="already belongs"):
        book.execute(CreateContact(name="Again", emails=("ralf@linux-mips.org",)))
    assert names(book.find("ralf@linux-mips.org")) == ["Ralf"]


def test_the_address_book_is_a_plain_application(home: Home, keyring: Keyring) -> None:
    """Its views are the framework's and the directory, no mail index; a bare application
    knows no contact command (handlers are listed by an application, not registered)."""
    book = AddressBook(home, keyring)
    try:
        assert set(book.views) == {"operations", "queue", "feed", "contacts"}
        create(book, "Ralf", "ralf@linux-mips.org")
        assert book.view("contacts").verify(book)
    finally:
        book.close()
    bare = Application(home, keyring)
    try:
        assert "contacts" not in bare.views
        end = bare.max_position()
        with pytest.raises(TypeError, match="no handler is registered for CreateContact"):
            bare.execute(CreateContact(name="Maciej"))
        assert bare.max_position() == end
    finally:
        bare.close()
