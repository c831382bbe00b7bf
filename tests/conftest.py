"""Shared fixtures: a fresh encrypted home and application, the real corpus, profiles.

Hypothesis profiles: ``ci`` (default, fast) and ``long`` (run by name:
``HYPOTHESIS_PROFILE=long make test`` or ``pytest --hypothesis-profile=long``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from commands.app import Eventpile
from store.home import Home
from store.keys import Keyring

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PASSPHRASE = "correct horse battery staple"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "linux-mips-2000.mbox.gz"


@pytest.fixture
def corpus() -> Path:
    """The real mailing-list corpus (2,000 messages), or a skip where it is absent."""
    if not CORPUS.exists():
        pytest.skip(f"real corpus {CORPUS} not present (it lives in ../shared/data)")
    return CORPUS


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def keyring(home: Home) -> Keyring:
    return home.init(PASSPHRASE)


@pytest.fixture
def app(home: Home, keyring: Keyring) -> Iterator[Eventpile]:
    application = Eventpile(home, keyring)
    yield application
    application.close()


@pytest.fixture
def cli_env(home: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    """Environment for running the CLI in-process against ``home``."""
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    return home
