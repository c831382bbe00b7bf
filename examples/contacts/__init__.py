"""An address book built on eventpile's public API only: a plain application, no mail.

``domain`` (the ``Contact`` aggregate and its events), ``commands`` (validated
commands and their handlers, among them the import of a file of contacts),
``directory`` (the lookup projection), ``app`` (the application, wiring the three)
and ``__main__`` (``python -m examples.contacts``).
"""

from .app import AddressBook
from .commands import (
    AddEmail,
    CreateContact,
    ImportContacts,
    MergeContacts,
    RemoveEmail,
    RenameContact,
)
from .directory import ContactDirectory
from .domain import Contact

__all__ = [
    "AddEmail",
    "AddressBook",
    "Contact",
    "ContactDirectory",
    "CreateContact",
    "ImportContacts",
    "MergeContacts",
    "RemoveEmail",
    "RenameContact",
]
