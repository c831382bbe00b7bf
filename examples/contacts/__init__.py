"""An address book built on eventpile's public API only.

``domain`` (the ``Contact`` aggregate and its events), ``commands`` (validated
commands and their handlers), ``directory`` (the lookup projection), ``app``
(the application) and ``__main__`` (``python -m examples.contacts``).
"""

from .app import AddressBook
from .commands import (
    AddEmail,
    CreateContact,
    ImportSenders,
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
    "ImportSenders",
    "MergeContacts",
    "RemoveEmail",
    "RenameContact",
]
