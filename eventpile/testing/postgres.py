"""The testing kit's throwaway PostgreSQL server, for tests and benchmarks.

Use it as a pytest plugin (``pytest_plugins = ["eventpile.testing.postgres"]`` in
the top ``conftest.py``): ``pg_server`` is the session's server, ``pg_url`` a fresh
database for one test; or start a :class:`Server` yourself.

One server per test session (``initdb`` + ``pg_ctl`` in a temp dir, on a free
loopback port, its unix socket in the same temp dir), one fresh database per test
(``CREATE DATABASE … TEMPLATE template0``). ``initdb`` refuses to run as root, so
as root the server runs as the ``postgres`` user (or ``nobody``). Where the
binaries are missing the PostgreSQL tests skip with one reason line.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TEST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
"""A test server trades durability for speed; benchmarks run a durable one."""


def binaries() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


MISSING = (
    "PostgreSQL binaries (initdb, pg_ctl) not found: the PostgreSQL tests skip "
    "(install postgresql, as .ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run as")


class Server:
    """A PostgreSQL cluster in a temp dir; ``url(dbname)`` connects over loopback TCP."""

    def __init__(self, *, durable: bool = False):
        bindir = binaries()
        if bindir is None:
            raise FileNotFoundError(MISSING)
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="eventpile-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._user = _server_user()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
        ]
        if not durable:
            options += [f"-c {setting}" for setting in TEST_SETTINGS]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "start",
        )
        atexit.register(self.stop)

    def _run(self, program: str, *args: str) -> None:
        user = self._user
        result = subprocess.run(
            [str(self.bindir / program), *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if result.returncode:
            raise RuntimeError(f"{program} failed: {result.stderr.strip() or result.stdout}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def empty_database(url: str) -> None:
    """Drop every schema of the database at ``url`` and make an empty ``public`` again: as
    good as a new database for the next example of a state machine, and cheaper."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        schemas = connection.execute(
            "SELECT nspname FROM pg_namespace "
            "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
        ).fetchall()
        drops = "".join(f'DROP SCHEMA "{name}" CASCADE; ' for (name,) in schemas)
        connection.execute(f"{drops}CREATE SCHEMA public")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's PostgreSQL server, or a skip (one reason line) without the binaries."""
    if binaries() is None:
        pytest.skip(MISSING)
    server = Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: Server) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


def on_postgres(machine: type[Any], machine_settings: Any) -> type[Any]:
    """The ``TestCase`` of a state ``machine`` of the kit (one with a ``database_server``
    class attribute) run on the session's server under ``machine_settings``: each home
    in a fresh database there. Marked ``postgres``; it skips without the binaries."""
    variant = type(f"{machine.__name__}OnPostgres", (machine,), {})

    @pytest.mark.postgres
    class OnPostgres(variant.TestCase):  # type: ignore[name-defined]
        settings = machine_settings

        @pytest.fixture(autouse=True)
        def _on_the_server(self, pg_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
            monkeypatch.setattr(variant, "database_server", pg_server.url())

    OnPostgres.__name__ = OnPostgres.__qualname__ = f"Test{variant.__name__}"
    return OnPostgres
