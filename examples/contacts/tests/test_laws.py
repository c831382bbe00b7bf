"""The testing kit's state machine on the address book: random contact commands,
undos, redos, restarts and rebuilds, with the laws of undo and replay checked after
every step (see :class:`eventpile.testing.ApplicationLaws`).

Commands name contacts from a small pool of ids (``CreateContact`` takes the new
contact's id), most of which every new address book starts with: so commands meet
often, and replaying the log elsewhere gives the same contacts. ``ImportContacts``
reads one of a few files made for each example, whose addresses overlap the pool's;
the contacts it makes get new ids, which :meth:`ContactLaws.observe` leaves out
(no command names them, so they never change but by undo and redo).
``HYPOTHESIS_PROFILE=long`` runs many longer programs.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from eventpile import Application, Command, Home
from eventpile.testing import ApplicationLaws, all_aggregates, command_strategy
from eventpile.testing.postgres import on_postgres
from examples.contacts import (
    AddEmail,
    AddressBook,
    Contact,
    ContactDirectory,
    CreateContact,
    ImportContacts,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)

IDS = [uuid.UUID(int=n) for n in range(1, 5)]
NAMES = ("Ralf Baechle", "Ralf", "Maciej W. Rozycki", "Jürgen")
ADDRESSES = (
    "ralf@linux-mips.org",
    "macro@linux-mips.org",
    "j@example.org",
    "ralf@gnu.org",
    "macro@example.org",
)

FILES = {
    "regulars.txt": "Ralf Baechle <ralf@linux-mips.org>\nmacro@linux-mips.org\nnew@example.org\n",
    "others.txt": "# two new, one unreadable\nJürgen <j@example.org>\nx@y.org\nno address\n",
    "again.txt": "Again <new@example.org>\nralf@gnu.org\n\n",
}
"""The files ``ImportContacts`` reads (an address of each is also one of ``ADDRESSES``)."""

LONG = settings.default.max_examples > 100  # the ``long`` profile


def contact_commands() -> list[st.SearchStrategy[Command]]:
    """Commands on the contacts of the pool (all but an import)."""
    ids, names, addresses = (st.sampled_from(v) for v in (IDS, NAMES, ADDRESSES))
    return [
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
    ]


class ContactLaws(ApplicationLaws):
    application = AddressBook

    def prepare(self, files: Path) -> None:
        for name, text in FILES.items():
            (files / name).write_text(text, encoding="utf-8")

    def commands(self) -> st.SearchStrategy[Command]:
        paths = st.sampled_from([self.files / name for name in FILES])
        return st.one_of(*contact_commands(), command_strategy(ImportContacts, path=paths))

    def people(self) -> st.SearchStrategy[str]:
        return st.sampled_from(ADDRESSES)

    def open_application(self, home: Home) -> Application:
        """The address book; a new one starts with three of the contacts (one operation)."""
        book = super().open_application(home)
        if book.max_position() == 0:
            for contact_id, name, address in zip(IDS[:3], NAMES, ADDRESSES, strict=False):
                book.execute(CreateContact(contact_id=contact_id, name=name, emails=(address,)))
        return book

    def observe(self, app: Application) -> Any:
        """Every contact not removed (addresses as a set) and the directory's rows, with
        the ids of imported contacts (new ones each time) written ``imported``."""
        everyone = all_aggregates(app, Contact)
        imported = {key.hex for key in everyone if key not in IDS}

        def canonical(value: Any) -> Any:
            key = value.hex if isinstance(value, uuid.UUID) else value
            return "imported" if key in imported else "" if key is None else key

        contacts = sorted(
            (canonical(c.id), c.name, sorted(c.emails), canonical(c.merged_into))
            for c in everyone.values()
            if not c.removed
        )
        db = app.view(ContactDirectory.name).db
        return contacts, [
            sorted(tuple(map(canonical, row)) for row in db.execute(q).fetchall())
            for q in ContactDirectory().content_queries()
            if "registers" not in q  # which writes are in effect: history, not state
        ]


TestContactLaws = ContactLaws.TestCase
TestContactLaws.settings = settings(
    max_examples=settings.default.max_examples if LONG else 10,
    stateful_step_count=40 if LONG else 15,
    deadline=None,
)


TestContactLawsOnPostgres = on_postgres(
    ContactLaws,
    settings(
        TestContactLaws.settings,
        max_examples=TestContactLaws.settings.max_examples // (2 if LONG else 4) or 1,
    ),
)
