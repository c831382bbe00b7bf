"""Importing contacts from a text file: one contact a line, ``Name <address>`` or an address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from eventpile import DomainError, Home, Redo, Undo, explain
from examples.contacts import AddEmail, AddressBook, CreateContact, ImportContacts
from examples.contacts.__main__ import main
from examples.contacts.commands import split_contact

from .conftest import PASSPHRASE

ROOT = Path(__file__).resolve().parents[3]
"""The repository (where ``python -m examples.contacts`` runs)."""

LIST = """\
# the linux-mips regulars <list@linux-mips.org>
Ralf Baechle <ralf@linux-mips.org>
Ralf B. <RALF@Linux-MIPS.org>
ralf@linux-mips.org

Jürgen Stuber <Juergen@Example.ORG>
   "Rozycki, Maciej W." <macro@linux-mips.org>
undisclosed-recipients:;
Someone without an address
Broken <not an address>
bare@example.net
"""
"""Four contacts, each address once: two lines repeat Ralf's address, three are unreadable."""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def names(book: AddressBook) -> list[str]:
    return [c["name"] for c in book.find("")]


def test_split_contact() -> None:
    assert split_contact("Ralf Baechle <ralf@linux-mips.org>") == (
        "Ralf Baechle",
        "ralf@linux-mips.org",
    )
    assert split_contact(' "Rozycki, Maciej" <macro@x.org> ') == ("Rozycki, Maciej", "macro@x.org")
    assert split_contact("<ralf@x.org>") == ("", "ralf@x.org")
    assert split_contact("ralf@linux-mips.org") == ("", "ralf@linux-mips.org")
    assert split_contact("Broken <half") == ("", "Broken <half")


def test_one_contact_per_new_address(book: AddressBook, tmp_path: Path) -> None:
    imported = book.execute(ImportContacts(path=write(tmp_path / "list.txt", LIST)))
    assert imported.result == {"created": 4, "known": 0, "unreadable": 3}
    assert imported.message == "Imported 4 contacts (0 already known, 3 unreadable)"
    assert names(book) == ["bare", "Jürgen Stuber", "Ralf Baechle", "Rozycki, Maciej W."]
    (ralf,) = book.find("ralf@linux-mips.org")  # the first line of an address names it
    assert (ralf["name"], ralf["emails"]) == ("Ralf Baechle", ["ralf@linux-mips.org"])
    assert book.find("juergen@example.org")[0]["emails"] == ["juergen@example.org"]
    assert book.find("list@linux-mips.org") == []  # on a comment line
    assert book.view("contacts").verify(book)


def test_known_addresses_are_counted_and_left_alone(book: AddressBook, tmp_path: Path) -> None:
    created = book.execute(CreateContact(name="Ralf", emails=("ralf@linux-mips.org",)))
    ralf = created.result["contact_id"]
    path = write(tmp_path / "list.txt", LIST)
    first = book.execute(ImportContacts(path=path))
    assert first.result == {"created": 3, "known": 1, "unreadable": 3}  # Ralf's counted once
    assert book.find("ralf@linux-mips.org") == [
        {"id": ralf, "name": "Ralf", "emails": ["ralf@linux-mips.org"]}
    ]
    end = book.max_position()
    again = book.execute(ImportContacts(path=path))
    assert again.result == {"created": 0, "known": 4, "unreadable": 3}
    assert len(book.find("")) == 4
    assert book.view("operations").db.execute(
        "SELECT count(*) FROM operation_events WHERE operation=?", (again.id.hex,)
    ).fetchone() == (0,)  # it wrote no contact event
    assert book.max_position() > end  # only the operation's record


def test_a_name_defaults_to_the_local_part_and_is_cut_to_fit(
    book: AddressBook, tmp_path: Path
) -> None:
    long = "x" * 250 + "@example.org"
    path = write(tmp_path / "list.txt", f'<anon@example.org>\n"  " <q@example.org>\n{long}\n')
    assert book.execute(ImportContacts(path=path)).result["created"] == 3
    assert book.find("anon@example.org")[0]["name"] == "anon"
    assert book.find("q@example.org")[0]["name"] == "q"
    assert book.find(long)[0]["name"] == "x" * 200


def test_a_byte_order_mark_is_not_part_of_the_first_name(book: AddressBook, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes("\ufeffRalf <ralf@x.org>\r\nMaciej <macro@x.org>\r\n".encode())
    assert book.execute(ImportContacts(path=path)).result["created"] == 2
    assert names(book) == ["Maciej", "Ralf"]


def test_an_empty_file_imports_nothing(book: AddressBook, tmp_path: Path) -> None:
    path = write(tmp_path / "empty.txt", "\n# nothing yet\n\n")
    imported = book.execute(ImportContacts(path=path))
    assert imported.result == {"created": 0, "known": 0, "unreadable": 0}
    assert book.find("") == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "there is no file {path}"),
        (b"J\xfcrgen <j@x.org>\n", "{path} is not UTF-8 text (byte 1 cannot be decoded)"),
        ("directory", "{path} is a directory, not a file of contacts"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_by_the_model(
    book: AddressBook, tmp_path: Path, content: bytes | str | None, error: str
) -> None:
    path = tmp_path / "list.txt"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    end = book.max_position()
    with pytest.raises(ValidationError) as refused:
        ImportContacts(path=path)
    assert explain(refused.value) == "path: " + error.format(path=path)
    assert book.max_position() == end and book.find("") == []


def test_the_path_is_private_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "list.txt", LIST)
    monkeypatch.chdir(tmp_path)
    command = ImportContacts(path=Path("list.txt"))
    assert command.path == tmp_path / "list.txt"
    assert command.split_args() == ({}, {"path": str(tmp_path / "list.txt")})
    assert command.describe() == "Import contacts from a file"


def test_a_file_gone_before_the_import_runs_is_refused(book: AddressBook, tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", LIST)
    command = ImportContacts(path=path)
    path.unlink()
    end = book.max_position()
    with pytest.raises(DomainError, match="there is no file"):
        book.execute(command)
    assert book.max_position() == end


def test_undo_and_redo_an_import(book: AddressBook, tmp_path: Path) -> None:
    kept = book.execute(CreateContact(name="Kept", emails=("ralf@linux-mips.org",)))
    imported = book.execute(ImportContacts(path=write(tmp_path / "list.txt", LIST)))
    assert imported.result["created"] == 3
    undone = book.execute(Undo())
    assert undone.result["undid"] == str(imported.id)
    assert undone.result["reverted"] == 6  # three contacts, two events each
    assert names(book) == ["Kept"]
    assert book.find("ralf@linux-mips.org")[0]["id"] == kept.result["contact_id"]
    with pytest.raises(DomainError):
        book.execute(Undo(operation_id=imported.id))
    redone = book.execute(Redo())
    assert redone.result["redid"] == str(imported.id)
    assert names(book) == ["bare", "Jürgen Stuber", "Kept", "Rozycki, Maciej W."]
    assert book.view("contacts").verify(book)


def test_undo_keeps_an_imported_contact_changed_since(book: AddressBook, tmp_path: Path) -> None:
    imported = book.execute(ImportContacts(path=write(tmp_path / "list.txt", LIST)))
    (bare,) = book.find("bare@example.net")
    book.execute(AddEmail(contact_id=uuid.UUID(bare["id"]), address="bare@example.org"))
    undone = book.execute(Undo(operation_id=imported.id))
    assert undone.result["reasons"] == {"the contact has addresses added since": 1}
    assert undone.result["reverted"] == 7  # all but that contact's creation
    assert names(book) == ["bare"]  # with the address added since, without the imported one
    assert book.find("bare@example.org")[0]["emails"] == ["bare@example.org"]
    assert book.find("bare@example.net") == []


# the command line ---------------------------------------------------------------------


@pytest.fixture
def env(home: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    """The command line's environment: ``home`` (not made yet) and the passphrase."""
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    return home


def test_the_script_imports_finds_undoes_and_redoes(
    env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    assert capsys.readouterr().out == f"Made a new home in {env.path}\n"
    path = write(tmp_path / "list.txt", LIST)
    assert main(["--json", "import", str(path)]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert {k: imported[k] for k in ("created", "known", "unreadable")} == {
        "created": 4,
        "known": 0,
        "unreadable": 3,
    }
    assert main(["--json", "find", "ra"]) == 0
    found = json.loads(capsys.readouterr().out)["contacts"]
    assert [(c["name"], c["emails"]) for c in found] == [("Ralf Baechle", ["ralf@linux-mips.org"])]
    assert main(["find", "nobody"]) == 0
    assert capsys.readouterr().out == "no contact found\n"
    assert main(["--json", "undo", imported["operation_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["reverted"] == 8  # four contacts, two events each
    assert main(["find", "ra"]) == 0
    assert capsys.readouterr().out == "no contact found\n"
    assert main(["undo", imported["operation_id"]]) == 1
    assert "contacts: " in capsys.readouterr().err
    assert main(["--json", "redo"]) == 0
    assert json.loads(capsys.readouterr().out)["redid"] == imported["operation_id"]
    assert main(["import", str(path)]) == 0
    assert capsys.readouterr().out == "Imported 0 contacts (4 already known, 3 unreadable)\n"


def test_the_script_says_what_is_wrong_in_one_line(
    env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.txt"
    assert main(["import", str(missing)]) == 1  # refused before the home is opened
    assert capsys.readouterr().err == f"contacts: path: there is no file {missing}\n"
    assert main(["find", "ralf"]) == 1
    assert capsys.readouterr().err.startswith("contacts: no eventpile home at ")
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["init"]) == 1
    assert capsys.readouterr().err == f"contacts: {env.path} is already an eventpile home\n"
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Jürgen <j@x.org>\n".encode("latin-1"))
    assert main(["import", str(latin1)]) == 1
    assert "is not UTF-8 text" in capsys.readouterr().err
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", "wrong")
    assert main(["find", "ralf"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("contacts: ") and error.count("\n") == 1


def test_python_m_examples_contacts(env: Home, tmp_path: Path) -> None:
    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "examples.contacts", *args],
            cwd=ROOT,
            env=os.environ,
            capture_output=True,
            text=True,
            check=False,
        )

    assert script("init").returncode == 0
    imported = script("import", str(write(tmp_path / "list.txt", "Ralf <ralf@x.org>\n")))
    assert (imported.returncode, imported.stdout) == (
        0,
        "Imported 1 contacts (0 already known, 0 unreadable)\n",
    )
    found = script("--json", "find", "ralf@x.org")
    assert [c["name"] for c in json.loads(found.stdout)["contacts"]] == ["Ralf"]
