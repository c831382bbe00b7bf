"""Importing contacts from the senders of a mailbox indexed by ``eventpile import``."""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from eventpile import Home, Redo, Undo
from examples.contacts import AddressBook, ImportSenders
from examples.contacts.__main__ import main
from examples.contacts.commands import split_sender

from .conftest import PASSPHRASE

SENDERS = [
    "Ralf Baechle <ralf@linux-mips.org>",
    "Ralf Baechle <ralf@linux-mips.org>",
    "ralf@linux-mips.org",
    "=?utf-8?q?J=C3=BCrgen_Stuber?= <Juergen@Example.ORG>",
    '"Rozycki, Maciej W." <macro@linux-mips.org>',
    "undisclosed-recipients:;",
]


def eventpile_cli() -> str:
    """The ``eventpile`` command of this environment."""
    beside = Path(sys.executable).with_name("eventpile")
    found = str(beside) if beside.exists() else shutil.which("eventpile")
    if found is None:
        pytest.skip("the eventpile command is not installed")
    return found


@pytest.fixture
def indexed(home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """``home`` with a small mailbox imported by the ``eventpile`` command."""
    box = mailbox.mbox(tmp_path / "in.mbox")
    for n, sender in enumerate(SENDERS):
        message = EmailMessage()
        message["From"] = sender
        message["To"] = "linux-mips@linux-mips.org"
        message["Subject"] = f"patch {n}" if n % 2 else f"question {n}"
        message["Message-ID"] = f"<{n}@example.org>"
        message.set_content("hello")
        box.add(message)
    box.close()
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    cli = eventpile_cli()
    for args in (["init"], ["import", str(tmp_path / "in.mbox")]):
        subprocess.run([cli, *args], check=True, capture_output=True, env=os.environ)
    return home


def test_split_sender() -> None:
    assert split_sender("Ralf Baechle <ralf@linux-mips.org>") == (
        "Ralf Baechle",
        "ralf@linux-mips.org",
    )
    assert split_sender(' "Rozycki, Maciej" <macro@x.org> ') == ("Rozycki, Maciej", "macro@x.org")
    assert split_sender("ralf@linux-mips.org") == ("", "ralf@linux-mips.org")


def test_one_contact_per_sender_address_once(indexed: Home) -> None:
    book = AddressBook(indexed, indexed.unlock(PASSPHRASE))
    try:
        first = book.execute(ImportSenders())
        assert first.result == {"created": 3, "known": 0, "unreadable": 1}
        assert book.find("ralf@linux-mips.org") == [
            {
                "id": book.find("ralf")[0]["id"],
                "name": "Ralf Baechle",
                "emails": ["ralf@linux-mips.org"],
            }
        ]
        assert [c["name"] for c in book.find("jü")] == ["Jürgen Stuber"]
        assert book.find("juergen@example.org")[0]["emails"] == ["juergen@example.org"]
        assert [c["name"] for c in book.find("roz")] == ["Rozycki, Maciej W."]
        again = book.execute(ImportSenders())
        assert again.result == {"created": 0, "known": 3, "unreadable": 1}
        book.execute(Undo(operation_id=first.id))
        assert book.find("") == []
        book.execute(Redo())
        assert [c["name"] for c in book.find("")] == [
            "Jürgen Stuber",
            "Ralf Baechle",
            "Rozycki, Maciej W.",
        ]
    finally:
        book.close()


def test_the_script_imports_the_senders_of_matching_mail(
    indexed: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "import", "subject:patch"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert {k: imported[k] for k in ("created", "known", "unreadable")} == {
        "created": 2,
        "known": 0,
        "unreadable": 1,
    }
    assert main(["--json", "find", "ra"]) == 0
    found = json.loads(capsys.readouterr().out)["contacts"]
    assert [(c["name"], c["emails"]) for c in found] == [("Ralf Baechle", ["ralf@linux-mips.org"])]
    assert main(["find", "nobody"]) == 0
    assert capsys.readouterr().out == "no contact found\n"
    assert main(["--json", "undo", imported["operation_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["reverted"] == 4  # two contacts, two events each
    assert main(["find", "ra"]) == 0
    assert capsys.readouterr().out == "no contact found\n"
    assert main(["undo", imported["operation_id"]]) == 1
    assert "contacts: " in capsys.readouterr().err
    assert main(["--json", "redo"]) == 0
    assert json.loads(capsys.readouterr().out)["redid"] == imported["operation_id"]
    assert main(["--json", "find", "ra"]) == 0
    assert len(json.loads(capsys.readouterr().out)["contacts"]) == 1


def test_the_script_says_what_is_wrong_in_one_line(
    indexed: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["import", 'from:"unclosed']) == 1
    assert capsys.readouterr().err.startswith("contacts: cannot read the query")
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", "wrong")
    assert main(["find", "ralf"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("contacts: ") and error.count("\n") == 1
