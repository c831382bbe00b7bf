"""Fixtures for the contacts tests, from eventpile's public API only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventpile import Home, Keyring
from examples.contacts import AddressBook

PASSPHRASE = "contacts test passphrase"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Home:
    """A new home: SQLite files, or a fresh database of the kit's throwaway PostgreSQL
    server (``pg_url``; the test skips without the server's binaries)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Home(tmp_path / "home", url)


@pytest.fixture
def keyring(home: Home) -> Keyring:
    return home.init(PASSPHRASE)


@pytest.fixture
def book(home: Home, keyring: Keyring) -> Iterator[AddressBook]:
    application = AddressBook(home, keyring)
    yield application
    application.close()
