"""Sync on the address book, through the framework's kit alone: installations that
change contacts apart end identical (see :mod:`eventpile.testing.sync`), and a
contact's events decided apart fold alike in any order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import Application, Command, DomainEvent, Home, fold
from eventpile.testing.sync import SyncLaws, decided, interleaved
from examples.contacts import (
    AddEmail,
    AddressBook,
    Contact,
    CreateContact,
    RenameContact,
)
from examples.contacts.tests.test_laws import ADDRESSES, IDS, LONG, NAMES, contact_commands


def contacts(book: AddressBook) -> list[tuple[str, str, list[str]]]:
    """What the directory shows: each contact's id, name and addresses."""
    return sorted((c["id"], c["name"], sorted(c["emails"])) for c in book.find(""))


class ContactSyncLaws(SyncLaws):
    application = AddressBook

    def commands(self) -> st.SearchStrategy[Command]:
        return st.one_of(*contact_commands())

    def people(self) -> st.SearchStrategy[str]:
        return st.sampled_from(ADDRESSES)

    def observe(self, app: Application) -> Any:
        assert isinstance(app, AddressBook)
        return contacts(app)


TestContactSyncLaws = ContactSyncLaws.TestCase
TestContactSyncLaws.settings = settings(
    max_examples=200 if LONG else 12, stateful_step_count=40 if LONG else 25, deadline=None
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


def _decisions(data: st.DataObject) -> list[Callable[[Contact], list[DomainEvent]]]:
    """What one installation decides about a contact, apart."""
    made: dict[str, Callable[[str], Callable[[Contact], list[DomainEvent]]]] = {
        "rename": lambda name: lambda contact: contact.rename(name),
        "add": lambda address: lambda contact: contact.add_email(address),
        "remove": lambda address: lambda contact: contact.remove_email(address),
    }
    steps = st.one_of(
        st.tuples(st.just("rename"), st.sampled_from(NAMES)),
        st.tuples(st.sampled_from(["add", "remove"]), st.sampled_from(ADDRESSES)),
    )
    return [made[action](value) for action, value in data.draw(st.lists(steps, max_size=4))]


@settings(max_examples=max(400, settings.default.max_examples))
@given(data=st.data())
def test_a_contact_changed_apart_folds_alike_in_any_order(data: st.DataObject) -> None:
    prefix = Contact.create(IDS[0], NAMES[0], (ADDRESSES[0],))
    state = fold(Contact, prefix)
    assert state is not None
    branches = [decided(state, _decisions(data)) for _ in "ab"]
    marks = [b for b, branch in enumerate(branches) for _ in branch]
    one = fold(Contact, interleaved(prefix, branches, marks))
    other = fold(Contact, interleaved(prefix, branches, data.draw(st.permutations(marks))))
    assert one is not None and other is not None
    assert one.model_copy(update={"version": 0}) == other.model_copy(update={"version": 0})
