"""Contact commands: validated pydantic models, each with its handler.

A handler loads aggregate states from ``ctx``, asks them to decide, and records
the events they return; the dispatcher writes them as one operation, which
``Undo`` reverts. Rules that span contacts (an address belongs to one contact)
are checked against the directory.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from eventpile import (
    Command,
    Context,
    DomainError,
    Outcome,
    Private,
    ViewDB,
    handles,
    uuid7,
)

from .directory import by_email, directory
from .domain import Contact, DisplayName, EmailAddress, check_address


def _check_free(db: ViewDB, address: str) -> None:
    owners = by_email(db, address)
    if owners:
        owner = owners[0]
        raise DomainError(f"{address} already belongs to {owner['name']!r} ({owner['id']})")


class CreateContact(Command):
    """A new contact with a display name and any email addresses.

    The caller may choose the new contact's id: then a retry cannot create it twice.
    """

    contact_id: uuid.UUID = Field(default_factory=uuid7)
    name: Annotated[DisplayName, Private]
    emails: Annotated[tuple[EmailAddress, ...], Private] = ()

    def describe(self) -> str:
        return "Create a contact"


@handles(CreateContact)
def create_contact(command: CreateContact, ctx: Context) -> Outcome:
    if ctx.load(Contact, command.contact_id) is not None:
        raise DomainError(f"there is already a contact {command.contact_id}")
    db = directory(ctx.app)
    for address in command.emails:
        _check_free(db, address)
    ctx.record(*Contact.create(command.contact_id, command.name, command.emails))
    return Outcome("Created a contact", {"contact_id": command.contact_id.hex})


class AddEmail(Command):
    contact_id: uuid.UUID
    address: Annotated[EmailAddress, Private]

    def describe(self) -> str:
        return "Add an email address to a contact"


@handles(AddEmail)
def add_email(command: AddEmail, ctx: Context) -> Outcome:
    _check_free(directory(ctx.app), command.address)
    ctx.record(*ctx.require(Contact, command.contact_id).add_email(command.address))
    return Outcome("Added an email address")


class RemoveEmail(Command):
    contact_id: uuid.UUID
    address: Annotated[EmailAddress, Private]

    def describe(self) -> str:
        return "Remove an email address from a contact"


@handles(RemoveEmail)
def remove_email(command: RemoveEmail, ctx: Context) -> Outcome:
    ctx.record(*ctx.require(Contact, command.contact_id).remove_email(command.address))
    return Outcome("Removed an email address")


class RenameContact(Command):
    contact_id: uuid.UUID
    name: Annotated[DisplayName, Private]

    def describe(self) -> str:
        return "Change a contact's display name"


@handles(RenameContact)
def rename_contact(command: RenameContact, ctx: Context) -> Outcome:
    ctx.record(*ctx.require(Contact, command.contact_id).rename(command.name))
    return Outcome("Changed a display name")


class MergeContacts(Command):
    """Move a contact's addresses to another contact and retire the first."""

    contact_id: uuid.UUID
    into_id: uuid.UUID

    def describe(self) -> str:
        return "Merge two contacts"


@handles(MergeContacts)
def merge_contacts(command: MergeContacts, ctx: Context) -> Outcome:
    source = ctx.require(Contact, command.contact_id)
    ctx.record(*source.merge_into(ctx.require(Contact, command.into_id)))
    return Outcome("Merged two contacts")


class ImportContacts(Command):
    """A contact for each address of a text file that no contact has yet.

    The file is UTF-8 text with one contact a line, ``Name <address>`` or a bare
    ``address``; blank lines and lines starting with ``#`` are skipped. The path is
    checked when the command is built (a missing file, or one that is not UTF-8, is
    refused before anything is written) and kept absolute, so the operation record
    names the same file wherever it is read.
    """

    path: Annotated[Path, Private]

    @field_validator("path")
    @classmethod
    def _readable_text(cls, path: Path) -> Path:
        path = path.expanduser().absolute()
        read_lines(path)
        return path

    def describe(self) -> str:
        return "Import contacts from a file"


ENCODING = "utf-8-sig"
"""UTF-8, with or without the byte-order mark some editors write."""


def read_lines(path: Path) -> list[str]:
    """The lines of the contacts file at ``path`` (ValueError: it cannot be read)."""
    try:
        return path.read_bytes().decode(ENCODING).splitlines()
    except FileNotFoundError:
        raise ValueError(f"there is no file {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a file of contacts") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start:,} cannot be decoded)") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None


_CONTACT = re.compile(r"(.*?)\s*<([^<>]*)>")


def split_contact(line: str) -> tuple[str, str]:
    """``("Name", "address")`` from ``"Name <address>"`` (or a bare address)."""
    match = _CONTACT.fullmatch(line.strip())
    if match is None:
        return "", line.strip()
    return match.group(1).strip("\"' "), match.group(2)


def contact_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines that name a contact: not blank, not a ``#`` comment."""
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


@handles(ImportContacts)
def import_contacts(command: ImportContacts, ctx: Context) -> Outcome:
    try:
        lines = read_lines(command.path)  # again: the file may have changed since
    except ValueError as e:
        raise DomainError(str(e)) from None
    db = directory(ctx.app)
    seen: set[str] = set()
    created = known = unreadable = 0
    for line in contact_lines(lines):  # of an address given twice, the first line counts
        name, address = split_contact(line)
        try:
            address = check_address(address)
        except ValueError:
            unreadable += 1
            continue
        if address in seen:
            continue
        seen.add(address)
        if by_email(db, address):
            known += 1
            continue
        name = (" ".join(name.split()) or address.partition("@")[0])[:200]
        ctx.record(*Contact.create(uuid7(), name, (address,)))
        created += 1
    result = {"created": created, "known": known, "unreadable": unreadable}
    return Outcome(
        f"Imported {created:,} contacts ({known:,} already known, {unreadable:,} unreadable)",
        result,
    )
