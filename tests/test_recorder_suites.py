"""The ``eventsourcing`` library's own recorder test suites, run against our store.

Each suite of ``eventsourcing.tests.persistence`` runs on both of our backends,
configured exactly as the application configures them (the settings of a
home's backend): our tuned SQLite factory on a file, and our PostgreSQL factory on a
fresh database of the test server.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment

from eventpile.commands.app import Application
from eventpile.store.home import Home


class OurStore:
    """Makes the suite's recorders with the factory our application would use."""

    home: Home
    make: ClassVar[str]
    """The factory method that makes the suite's recorder."""

    def create_recorder(self) -> Any:
        env = Environment(Application.name, self.home.backend().settings())
        factory: Any = InfrastructureFactory.construct(env)
        self.addCleanup(factory.close)  # type: ignore[attr-defined]
        recorder = getattr(factory, self.make)()
        # Cleanups run last-in first-out: join the test's threads before closing.
        self.addCleanup(_join_threads_started_after, set(threading.enumerate()))  # type: ignore[attr-defined]
        return recorder


def _join_threads_started_after(before: set[threading.Thread]) -> None:
    """Wait for the threads a suite started before its recorder is closed.

    The concurrency tests signal their reader threads to stop but do not join
    them; closing a SQLite connection while a reader is inside ``execute``
    crashes the interpreter.
    """
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=60)
        assert not thread.is_alive(), f"{thread.name} still running after its test"


class OnSQLite(OurStore):
    @pytest.fixture(autouse=True)
    def _home(self, tmp_path: Path) -> None:
        self.home = Home(tmp_path)


class OnPostgres(OurStore):
    pytestmark: ClassVar = [pytest.mark.postgres]

    @pytest.fixture(autouse=True)
    def _home(self, tmp_path: Path, pg_url: str) -> None:
        self.home = Home(tmp_path, pg_url)


SUITES = {
    AggregateRecorderTestCase: "aggregate_recorder",
    ApplicationRecorderTestCase: "application_recorder",
    NonInterleavingNotificationIDsBaseCase: "application_recorder",
    TrackingRecorderTestCase: "tracking_recorder",
    ProcessRecorderTestCase: "process_recorder",
}

for _backend in (OnSQLite, OnPostgres):
    for _suite, _make in SUITES.items():
        _name = f"Test{_suite.__name__.removesuffix('TestCase').removesuffix('BaseCase')}"
        _name += _backend.__name__
        globals()[_name] = type(_name, (_backend, _suite), {"make": _make})
