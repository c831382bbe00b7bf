"""Two applications in one home: each runs its own commands and reads the other's events.

The mail application and the address book (``examples.contacts``) share the home's
log and the framework's views (operations, queue, feed). Each knows only its own
event classes: the other's reach it as :class:`ForeignEvent` in the notification
log, so both fold the shared views to the same content.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eventpile import DomainError, Redo, Undo
from eventpile.domain.events import ForeignEvent
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.synthetic import write_mbox
from eventpile.store.errors import UnknownEvent
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from examples.contacts import AddressBook, ImportContacts


def test_mail_and_contacts_share_a_home(home: Home, keyring: Keyring, tmp_path: Path) -> None:
    people = tmp_path / "people.txt"
    people.write_text("Ada Lovelace <ada@example.org>\nalan@example.org\n")
    book, mail = AddressBook(home, keyring), MailApplication(home, keyring)
    try:
        contacts = book.execute(ImportContacts(path=people))
        imported = mail.execute(ImportMailbox(path=write_mbox(tmp_path / "m.mbox", 5, seed=2)))
        assert (contacts.result["created"], imported.result["indexed"]) == (2, 5)
        assert [c["name"] for c in book.find("a")] == ["Ada Lovelace", "alan"]

        foreign = [e for _, e in mail.all_events() if isinstance(e, ForeignEvent)]
        assert sorted(e.type_name() for e in foreign) == ["ContactCreated"] * 2 + ["EmailAdded"] * 2
        assert all(e.operation_id == contacts.id for e in foreign)
        with pytest.raises(UnknownEvent, match="unknown here"):
            mail.load(MailApplication.aggregates[0], foreign[0].originator_id)

        # each application verifies every shared view: the same folds of the same log
        for app in (book, mail):
            for view in app.views.values():
                assert view.verify(app), (type(app).__name__, view.name)
        assert book.view("operations").digest() == mail.view("operations").digest()

        # each undoes its own operations, and refuses the other's by name
        with pytest.raises(DomainError, match="ImportContacts, a command unknown here"):
            mail.execute(Undo(operation_id=contacts.id))
        undone = book.execute(Undo(operation_id=contacts.id))
        assert book.find("a") == []
        with pytest.raises(DomainError, match="changed what another application keeps"):
            mail.execute(Undo(operation_id=undone.id))  # a redo of the other's
        book.execute(Redo(operation_id=contacts.id))
        with pytest.raises(DomainError, match="changed what another application keeps"):
            mail.execute(Undo(operation_id=contacts.id))  # carried by the redo now
        assert [c["name"] for c in book.find("a")] == ["Ada Lovelace", "alan"]
        mail.execute(Undo(operation_id=imported.id))
        with pytest.raises(DomainError, match="ImportMailbox, a command unknown here"):
            book.execute(Undo(operation_id=imported.id))
    finally:
        book.close()
        mail.close()
