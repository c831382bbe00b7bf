"""Shared fixtures: a fresh encrypted home and application, the real corpus, profiles.

Hypothesis profiles: ``ci`` (default, fast) and ``long`` (run by name:
``HYPOTHESIS_PROFILE=long make test`` or ``pytest --hypothesis-profile=long``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from eventpile.commands.eventlog import registry_of
from eventpile.domain.events import DomainEvent
from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from eventpile.store.topics import TOPIC_PURPOSE, StoredTopics

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


def pytest_report_header() -> str:
    from eventpile.testing.postgres import MISSING, binaries

    found = binaries()
    return f"postgresql: {found} (a throwaway server per session)" if found else MISSING


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, home: Home) -> str:
    """Runs the test on each backend: SQLite files, then a fresh PostgreSQL database.

    For PostgreSQL the home keeps the database's URL, as ``init --database-url``
    does, so everything that opens the home (the app, the CLI) uses it.
    """
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        home.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        home.database_file.write_text(url + "\n")
    return str(request.param)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite), then a fresh PostgreSQL database: for a test that makes its own homes
    (a state machine empties it for each example, with
    ``eventpile.testing.postgres.empty_database``)."""
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


@pytest.fixture
def app(
    request: pytest.FixtureRequest, home: Home, keyring: Keyring, backend: str
) -> Iterator[MailApplication]:
    """The mail application, with the test module's own commands if it has an ``App``."""
    application = getattr(request.module, "App", MailApplication)(home, keyring)
    yield application
    application.close()


@pytest.fixture
def cli_env(home: Home, backend: str, monkeypatch: pytest.MonkeyPatch) -> Home:
    """Environment for running the CLI in-process against ``home`` (on each backend)."""
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    return home


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    """Exit code, the JSON printed (or None) and stderr of ``eventpile --json ARGV``."""
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


FAST = "from eventpile.mail.fast import run; run()"
"""What the ``eventpile`` console script runs."""
FULL = "from eventpile.mail.cli import run; run()"
"""The full command line, without the fast path."""
GOES_ON = "import os\ndef _exit(code):\n    raise SystemExit(code)\nos._exit = _exit\n"
"""The start of a probe that runs the fast path and goes on after it: the fast path
ends its process at once once it printed (``os._exit``); here that is a ``SystemExit``."""


def eventpile_process(
    home: Home,
    *argv: str,
    entry: str = FAST,
    passphrase: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``eventpile ARGV`` on ``home`` as a process of its own (``entry``: the Python it
    runs, ARGV its arguments), with no terminal, no ``EVENTPILE_`` setting but the home,
    and the passphrase only if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")}
    env["EVENTPILE_HOME"] = str(home.path)
    if passphrase is not None:
        env["EVENTPILE_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-c", entry, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stored_topics(home: Home, *classes: type[DomainEvent]) -> str:
    """The topics the mail application's log in ``home`` stores events of ``classes``
    under, as an SQL list: ``('…', '…')``."""
    keyring = home.unlock(PASSPHRASE)
    topics = StoredTopics(registry_of(MailApplication), keyring.purpose_key(TOPIC_PURPOSE))
    return "(" + ", ".join(f"'{t}'" for t in topics.matching(classes)) + ")"


def log_end(home: Home) -> int:
    """How many events the log of ``home`` holds (to check that nothing was written)."""
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        return app.max_position()
    finally:
        app.close()
