"""Every view of the plain address book is a fold of its log: after contacts are made,
merged, imported, undone and redone, each view rebuilt from scratch equals the one
kept up to date command by command."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from eventpile import Home, Keyring, Redo, Undo
from examples.contacts import AddressBook, CreateContact, ImportContacts, MergeContacts

VIEWS = {"operations", "queue", "feed", "contacts"}
"""The framework's views and the directory: no ``messages`` (the mail index)."""

BEFORE = [
    {"name": "bare", "emails": ["bare@example.net"]},
    {"name": "Jürgen Stuber", "emails": ["juergen@example.org"]},
    {"name": "Ralf", "emails": ["ralf@gnu.org", "ralf@linux-mips.com", "ralf@linux-mips.org"]},
]
"""What ``find("")`` shows at the end of :func:`history` (ids aside)."""


def create(book: AddressBook, name: str, *emails: str) -> uuid.UUID:
    return uuid.UUID(book.execute(CreateContact(name=name, emails=emails)).result["contact_id"])


def history(book: AddressBook, files: Path) -> None:
    """Create, merge and import contacts; undo and redo some of it."""
    ralf = create(book, "Ralf", "ralf@linux-mips.org")
    other = create(book, "R. Baechle", "ralf@gnu.org", "ralf@linux-mips.com")
    book.execute(MergeContacts(contact_id=other, into_id=ralf))
    first = files / "first.txt"
    first.write_text("Jürgen Stuber <juergen@example.org>\nralf@gnu.org\nbad line\n")
    assert book.execute(ImportContacts(path=first)).result == {
        "created": 1,
        "known": 1,
        "unreadable": 1,
    }
    second = files / "second.txt"
    second.write_text("bare@example.net\nMaciej <macro@linux-mips.org>\n")
    imported = book.execute(ImportContacts(path=second))
    assert imported.result["created"] == 2
    assert book.execute(Undo()).result["undid"] == str(imported.id)  # the second import
    assert book.execute(Undo()).result["reverted"] == 2  # the first import
    assert book.execute(Undo()).result["reverted"] == 5  # the merge
    assert len(book.find("")) == 2
    book.execute(Redo())  # the merge
    book.execute(Redo())  # the first import
    book.execute(Redo())  # the second import
    book.execute(Undo(operation_id=imported.id))
    create(book, "bare", "bare@example.net")


def contents(book: AddressBook) -> list[dict[str, object]]:
    return [{k: v for k, v in c.items() if k != "id"} for c in book.find("")]


@pytest.fixture
def lived(book: AddressBook, tmp_path: Path) -> AddressBook:
    history(book, tmp_path)
    assert contents(book) == BEFORE
    return book


def test_the_address_book_has_no_mail_view(book: AddressBook) -> None:
    assert set(book.views) == VIEWS
    assert "messages" not in book.views


def test_every_view_verifies(lived: AddressBook) -> None:
    for name, view in lived.views.items():
        assert view.position == lived.max_position(), name
        assert view.verify(lived), f"a fresh fold of {name} differs"


def test_every_view_rebuilt_equals_the_incremental_one(lived: AddressBook) -> None:
    digests = {name: view.digest() for name, view in lived.views.items()}
    for name, view in lived.views.items():
        report = view.rebuild(lived)
        assert report.events > 0, name
        assert view.digest() == digests[name], f"rebuilt {name} differs"
    assert contents(lived) == BEFORE


def test_views_made_anew_from_the_log_equal_the_old_ones(
    home: Home, keyring: Keyring, lived: AddressBook
) -> None:
    """Emptied (their files, or their schemas, dropped) the views are folded again from
    position 0 when next opened."""
    digests = {name: view.digest() for name, view in lived.views.items()}
    end = lived.max_position()
    lived.close()
    store = home.backend().view_store(keyring)
    for name in VIEWS:
        store.drop(name)
    again = AddressBook(home, keyring)
    try:
        assert {name: view.position for name, view in again.views.items()} == dict.fromkeys(
            VIEWS, 0
        )
        again.catch_up()
        assert {name: view.position for name, view in again.views.items()} == dict.fromkeys(
            VIEWS, end
        )
        assert {name: view.digest() for name, view in again.views.items()} == digests
        assert contents(again) == BEFORE
    finally:
        again.close()
