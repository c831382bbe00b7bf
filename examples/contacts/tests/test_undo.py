"""Undo and redo of every contact command, through the framework's ``Undo``/``Redo``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from eventpile import Command, DomainError, Redo, Undo
from examples.contacts import (
    AddEmail,
    AddressBook,
    Contact,
    CreateContact,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)


def state(book: AddressBook, contact_id: uuid.UUID) -> Contact | None:
    """The contact's state, whatever its stream's length and which writes are in effect."""
    found = book.load(Contact, contact_id)
    return None if found is None else found.model_copy(update={"version": 0, "stamps": {}})


def snapshot(book: AddressBook) -> tuple[Any, ...]:
    """The content of every view but the history ones (operations and the feed, and which
    writes are in effect)."""
    return tuple(
        [tuple(row) for row in view.db.execute(query)]
        for name, view in sorted(book.views.items())
        if name not in HISTORY
        for query in view.projection.content_queries()
        if "registers" not in query
    )


HISTORY = {"operations", "feed"}


def create(book: AddressBook, name: str, *emails: str) -> uuid.UUID:
    return uuid.UUID(book.execute(CreateContact(name=name, emails=emails)).result["contact_id"])


@pytest.fixture
def ralf(book: AddressBook) -> uuid.UUID:
    return create(book, "Ralf", "ralf@linux-mips.org")


@pytest.fixture
def other(book: AddressBook) -> uuid.UUID:
    return create(book, "R. Baechle", "ralf@gnu.org")


COMMANDS = {
    "create": lambda ralf, other: CreateContact(name="New", emails=("new@x.org", "n2@x.org")),
    "add": lambda ralf, other: AddEmail(contact_id=ralf, address="r@x.org"),
    "remove": lambda ralf, other: RemoveEmail(contact_id=ralf, address="ralf@linux-mips.org"),
    "rename": lambda ralf, other: RenameContact(contact_id=ralf, name="Ralf Baechle"),
    "merge": lambda ralf, other: MergeContacts(contact_id=other, into_id=ralf),
}


@pytest.mark.parametrize("kind", COMMANDS)
def test_undo_reverts_and_redo_restores(
    book: AddressBook, ralf: uuid.UUID, other: uuid.UUID, kind: str
) -> None:
    before = snapshot(book), state(book, ralf), state(book, other)
    command: Command = COMMANDS[kind](ralf, other)
    done = book.execute(command)
    after = snapshot(book)
    undone = book.execute(Undo())
    assert undone.result["undid"] == str(done.id)
    assert snapshot(book) == before[0]
    assert (state(book, ralf), state(book, other)) == before[1:]
    book.execute(Redo())
    assert snapshot(book) == after
    assert book.view("contacts").verify(book)


def test_merge_undone_gives_back_both_contacts(
    book: AddressBook, ralf: uuid.UUID, other: uuid.UUID
) -> None:
    book.execute(MergeContacts(contact_id=other, into_id=ralf))
    assert [c["id"] for c in book.find("r")] == [ralf.hex]
    book.execute(Undo())
    assert book.find("ralf@gnu.org") == [
        {"id": other.hex, "name": "R. Baechle", "emails": ["ralf@gnu.org"]}
    ]
    assert book.find("ralf@linux-mips.org")[0]["emails"] == ["ralf@linux-mips.org"]


def test_undo_reverts_only_what_is_still_in_effect(book: AddressBook, ralf: uuid.UUID) -> None:
    renamed = book.execute(RenameContact(contact_id=ralf, name="Ralf B."))
    book.execute(RenameContact(contact_id=ralf, name="Ralf Baechle"))
    undone = book.execute(Undo(operation_id=renamed.id))
    assert undone.result["reverted"] == 0
    assert undone.result["reasons"] == {"the contact was renamed again since": 1}
    assert book.find("ralf")[0]["name"] == "Ralf Baechle"


def test_a_contact_given_addresses_later_keeps_its_creation(book: AddressBook) -> None:
    created = book.execute(CreateContact(name="Ralf"))
    contact_id = uuid.UUID(created.result["contact_id"])
    book.execute(AddEmail(contact_id=contact_id, address="ralf@linux-mips.org"))
    undone = book.execute(Undo(operation_id=created.id))
    assert undone.result["reasons"] == {"the contact has addresses added since": 1}
    assert [c["name"] for c in book.find("ralf@linux-mips.org")] == ["Ralf"]


def test_undoing_twice_is_refused(book: AddressBook, ralf: uuid.UUID) -> None:
    done = book.execute(RenameContact(contact_id=ralf, name="Ralf Baechle"))
    book.execute(Undo(operation_id=done.id))
    with pytest.raises(DomainError):
        book.execute(Undo(operation_id=done.id))
