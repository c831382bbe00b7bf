"""Sync on the address book, through the framework's kit alone: installations that
change contacts apart end identical (see :mod:`eventpile.testing.sync`), and a
contact's events decided apart fold alike in any order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile import Application, Command, DomainError, DomainEvent, Home, fold
from eventpile.testing import command_strategy
from eventpile.testing.sync import SyncLaws, interleaved
from examples.contacts import (
    AddEmail,
    AddressBook,
    Contact,
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


def _branch(state: Contact, data: st.DataObject) -> list[DomainEvent]:
    """What one installation decides about a contact, apart."""
    events: list[DomainEvent] = []
    for _ in range(data.draw(st.integers(0, 4))):
        action = data.draw(st.sampled_from(["rename", "add", "remove"]))
        name, address = data.draw(st.sampled_from(NAMES)), data.draw(st.sampled_from(ADDRESSES))
        try:
            if action == "rename":
                new = state.rename(name)
            elif action == "add":
                new = state.add_email(address)
            else:
                new = state.remove_email(address)
        except DomainError:
            continue
        for event in new:
            state = state.apply(event)
        events += new
    return events


@settings(max_examples=max(400, settings.default.max_examples))
@given(data=st.data())
def test_a_contact_changed_apart_folds_alike_in_any_order(data: st.DataObject) -> None:
    prefix = Contact.create(IDS[0], NAMES[0], (ADDRESSES[0],))
    state = fold(Contact, prefix)
    assert state is not None
    branches = [_branch(state, data), _branch(state, data)]
    marks = [b for b, branch in enumerate(branches) for _ in branch]
    one = fold(Contact, interleaved(prefix, branches, marks))
    other = fold(Contact, interleaved(prefix, branches, data.draw(st.permutations(marks))))
    assert one is not None and other is not None
    assert one.model_copy(update={"version": 0}) == other.model_copy(update={"version": 0})
