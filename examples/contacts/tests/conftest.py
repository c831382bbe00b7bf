"""Fixtures for the contacts tests, from eventpile's public API only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpile import Home, Keyring
from examples.contacts import AddressBook

PASSPHRASE = "contacts test passphrase"


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def keyring(home: Home) -> Keyring:
    return home.init(PASSPHRASE)


@pytest.fixture
def book(home: Home, keyring: Keyring) -> Iterator[AddressBook]:
    application = AddressBook(home, keyring)
    yield application
    application.close()
