"""Sync on the address book, through the framework's kit alone: installations that
change contacts apart end identical (see :mod:`eventpile.testing.sync`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from eventpile import Application, Command, Home
from eventpile.testing import command_strategy
from eventpile.testing.sync import SyncLaws
from examples.contacts import (
    AddEmail,
    AddressBook,
    CreateContact,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)
from examples.contacts.tests.test_laws import ADDRESSES, IDS, LONG, NAMES


def contacts(book: AddressBook) -> list[tuple[str, str, list[str]]]:
    """What the directory shows: each contact's id, name and addresses."""
    return sorted((c["id"], c["name"], sorted(c["emails"])) for c in book.find(""))


class ContactSyncLaws(SyncLaws):
    application = AddressBook

    def commands(self) -> st.SearchStrategy[Command]:
        ids, names, addresses = (st.sampled_from(v) for v in (IDS, NAMES, ADDRESSES))
        return st.one_of(
            command_strategy(
                CreateContact,
                contact_id=ids,
                name=names,
                emails=st.lists(addresses, max_size=2).map(tuple),
            ),
            command_strategy(AddEmail, contact_id=ids, address=addresses),
            command_strategy(RemoveEmail, contact_id=ids, address=addresses),
            command_strategy(RenameContact, contact_id=ids, name=names),
            command_strategy(MergeContacts, contact_id=ids, into_id=ids),
        )

    def observe(self, app: Application) -> Any:
        assert isinstance(app, AddressBook)
        return contacts(app)


TestContactSyncLaws = ContactSyncLaws.TestCase
TestContactSyncLaws.settings = settings(
    max_examples=200 if LONG else 20, stateful_step_count=40 if LONG else 25, deadline=None
)


def test_a_rename_made_on_each_at_once_ends_the_same_on_both(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    first = Home(tmp_path / "a")
    keys = first.init("pass")
    second = Home(tmp_path / "b")
    books = [AddressBook(first, keys), AddressBook(second, second.init("pass", keys))]
    try:
        books[0].execute(CreateContact(contact_id=IDS[0], name="Ralf", emails=(ADDRESSES[0],)))
        for book in (*books, *books):
            book.sync(folder)
        books[0].execute(RenameContact(contact_id=IDS[0], name="Ralf Baechle"))
        books[1].execute(RenameContact(contact_id=IDS[0], name="R. Baechle"))
        books[1].execute(AddEmail(contact_id=IDS[0], address=ADDRESSES[3]))
        for book in (*books, *books):
            book.sync(folder)
        assert contacts(books[0]) == contacts(books[1])
        [(_, name, emails)] = contacts(books[0])
        assert name in ("Ralf Baechle", "R. Baechle")
        assert emails == sorted([ADDRESSES[0], ADDRESSES[3]])
    finally:
        for book in books:
            book.close()
