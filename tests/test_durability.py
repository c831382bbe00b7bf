"""Durability: a command that returned survives ``kill -9`` of its process; a process killed
in the middle of a long import leaves a consistent store that a re-import completes, and
leaves no process of its own behind; a damaged or deleted view is made anew from the log."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import Operation, OperationRequested, Status
from eventpile.mail import mailparse
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import FLUSH_EVERY, ImportMailbox, TagMessages
from eventpile.mail.message import MessageIndexed, MessageTagged
from eventpile.mail.query import parse_query, search
from eventpile.mail.synthetic import write_mbox
from eventpile.mail.tag import TagCreated
from eventpile.projections.base import Projection
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from eventpile.store.views import ViewDB
from tests.conftest import PASSPHRASE

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

OPEN = """
import sys
from pathlib import Path
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.store.home import Home
home = Home(Path(sys.argv[1]))
app = MailApplication(home, home.unlock(sys.argv[2]))
mailbox = Path(sys.argv[3])
"""
IMPORT_AND_TAG = (
    OPEN
    + """
imported = app.execute(ImportMailbox(path=mailbox))
tagged = app.execute(TagMessages(action="add", tag="kept", query=""))
print("committed", imported.id, tagged.id, flush=True)
sys.stdin.read()  # wait to be killed
"""
)
IMPORT_UNTIL = (
    OPEN
    + """
def progress(done, total, message):
    if done >= int(sys.argv[4]):  # the batches before this one are written
        print("flushed", done, flush=True)
        sys.stdin.read()  # wait to be killed
app.execute(ImportMailbox(path=mailbox), on_progress=progress)
print("finished", flush=True)
"""
)


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[str]]]:
    """Started Python processes (each in a session of its own); anything left is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        for pid in _group(process.pid):
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def start(started: list[subprocess.Popen[str]], script: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started.append(process)
    return process


def wait_for(process: subprocess.Popen[str], prefix: str, timeout: float = 120) -> list[str]:
    """The words of the first line of output starting with ``prefix`` (bounded wait)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                line = process.stdout.readline()
                if not line:
                    assert process.stderr is not None
                    pytest.fail(f"the child ended first:\n{process.stderr.read()}")
                if line.startswith(prefix):
                    return line.split()
    pytest.fail(f"no {prefix!r} from the child within {timeout} s")


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def kill_9(process: subprocess.Popen[str]) -> None:
    """SIGKILL the process (only it, as a crash would), then wait until it is gone."""
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def no_process_left(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while _group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def initialised(home: Home) -> tuple[Home, Keyring]:
    return home, home.init(PASSPHRASE)


def count(app: MailApplication, event_type: type) -> int:
    return len(app.read(0, app.max_position(), (event_type,), 1_000_000))


def total(app: MailApplication, query: str) -> int:
    index = app.view("messages")
    index.catch_up(app)
    return int(search(index.db, parse_query(query), 1)["total"])


def test_a_committed_command_survives_kill_9(
    initialised: tuple[Home, Keyring], tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    home, keyring = initialised
    messages = 40
    mbox = write_mbox(tmp_path / "small.mbox", messages, seed=11)
    process = start(child, IMPORT_AND_TAG, str(home.path), PASSPHRASE, str(mbox))
    _, imported_id, tagged_id = wait_for(process, "committed")
    wal = home.events_db.with_name(home.events_db.name + "-wal")
    assert wal.stat().st_size > 0  # the commits are in the write-ahead log
    kill_9(process)

    app = MailApplication(home, keyring)
    try:
        for operation_id in (imported_id, tagged_id):
            state = app.load(Operation, uuid.UUID(operation_id))
            assert state is not None and state.status is Status.COMPLETE
        assert count(app, MessageIndexed) == count(app, MessageTagged) == messages
        assert all(view.verify(app) for view in app.views.values())
        assert total(app, "tag:kept") == messages
    finally:
        app.close()


def test_a_process_killed_during_an_import_leaves_a_store_that_reimport_completes(
    initialised: tuple[Home, Keyring], tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    home, keyring = initialised
    messages = 3 * FLUSH_EVERY
    mbox = write_mbox(tmp_path / "long.mbox", messages, seed=12)
    process = start(
        child, IMPORT_UNTIL, str(home.path), PASSPHRASE, str(mbox), str(2 * FLUSH_EVERY)
    )
    wait_for(process, "flushed")
    kill_9(process)
    assert no_process_left(process.pid), "a process of the killed import is still running"

    app = MailApplication(home, keyring)
    try:
        written = count(app, MessageIndexed)
        assert 0 < written < messages
        assert all(view.verify(app) for view in app.views.values())
        assert total(app, "") == written
        ((_, requested),) = app.read(0, app.max_position(), (OperationRequested,), 10)
        interrupted = app.load(Operation, requested.originator_id)
        assert interrupted is not None and interrupted.status is Status.RUNNING  # never finished
        again = app.execute(ImportMailbox(path=mbox))
        assert (again.result["indexed"], again.result["skipped"]) == (messages - written, written)
        assert total(app, "") == count(app, MessageIndexed) == messages
        assert all(view.verify(app) for view in app.views.values())
    finally:
        app.close()


# damaged views --------------------------------------------------------------------------


def _views(home: Home, keyring: Keyring, mbox: Path) -> dict[str, str]:
    """Import and tag ``mbox``; the digest of every view."""
    app = MailApplication(home, keyring)
    try:
        app.execute(ImportMailbox(path=mbox))
        app.execute(TagMessages(action="add", tag="seen", query="patch"))
        return {name: view.digest() for name, view in app.views.items()}
    finally:
        app.close()


def _damage(home: Home, how: str) -> None:
    if how == "views deleted":
        shutil.rmtree(home.views)
        return
    for path in home.views.glob("messages.db*"):
        path.unlink()
    (home.views / "messages.db").write_bytes(b"" if how == "emptied" else os.urandom(40960))


@pytest.mark.parametrize("how", ["garbled", "emptied", "views deleted"])
def test_a_damaged_view_is_made_anew_from_the_log(
    initialised: tuple[Home, Keyring], tmp_path: Path, how: str
) -> None:
    home, keyring = initialised
    before = _views(home, keyring, write_mbox(tmp_path / "box.mbox", 30, seed=4))
    _damage(home, how)
    for found_damaged in (how == "garbled", False):  # the first application says it once
        app = MailApplication(home, keyring)
        try:
            app.catch_up()
            assert {name: view.digest() for name, view in app.views.items()} == before
            remade = {name for name, view in app.views.items() if view.remade}
            assert remade == ({"messages"} if found_damaged else set())
            assert {name for name, view in app.views.items() if not view.verify(app)} == remade
        finally:
            app.close()


def test_a_rebuild_replaces_a_damaged_view(
    initialised: tuple[Home, Keyring], tmp_path: Path
) -> None:
    home, keyring = initialised
    before = _views(home, keyring, write_mbox(tmp_path / "box.mbox", 30, seed=4))
    app = MailApplication(home, keyring)
    try:
        view = app.view("messages")
        _damage(home, "garbled")  # after the app opened, before the view did
        view.rebuild(app)
        assert view.digest() == before["messages"] and view.verify(app)
    finally:
        app.close()


def test_views_ahead_of_a_missing_or_replaced_log_say_so_and_nothing_is_written(
    initialised: tuple[Home, Keyring], tmp_path: Path
) -> None:
    home, keyring = initialised
    before = _views(home, keyring, write_mbox(tmp_path / "box.mbox", 30, seed=4))
    for path in home.path.glob("events.sqlite3*"):
        path.unlink()
    with pytest.raises(StoreError, match=r"events\.sqlite3 is missing but the views hold"):
        MailApplication(home, keyring)
    assert not home.events_db.exists()  # not made anew, empty, by opening the store
    home.events_db.touch()  # replaced: by an empty file
    app = MailApplication(home, keyring)
    try:
        for attempt in (
            app.catch_up,
            lambda: app.execute(TagMessages(action="add", tag="new", query="")),
            lambda: app.view("messages").rebuild(app),
        ):
            with pytest.raises(StoreError, match="the log was replaced or cut"):
                attempt()
        assert app.max_position() == 0
        assert {name: view.digest() for name, view in app.views.items()} == before
    finally:
        app.close()


# failures after the write, and Ctrl-C -----------------------------------------------------


class _Breaks(Projection):
    """A view whose fold fails on new tags."""

    name: ClassVar[str] = "breaks"
    topics: ClassVar[tuple[type[DomainEvent], ...]] = (TagCreated,)

    def create(self, db: ViewDB) -> None:
        db.script("CREATE TABLE IF NOT EXISTS broken (x INTEGER)")

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        raise RuntimeError("this view cannot fold a new tag")

    def content_queries(self) -> Sequence[str]:
        return ("SELECT x FROM broken",)


def _statuses(app: MailApplication) -> list[Status]:
    ids = {e.originator_id for _, e in app.read(0, app.max_position(), (OperationRequested,), 99)}
    return [state.status for i in ids if (state := app.load(Operation, i)) is not None]


def test_a_view_failing_after_the_write_says_so_and_the_command_stays_done(
    initialised: tuple[Home, Keyring], tmp_path: Path
) -> None:
    home, keyring = initialised
    app = MailApplication(home, keyring, projections=[_Breaks])
    try:
        app.execute(ImportMailbox(path=write_mbox(tmp_path / "box.mbox", 10, seed=4)))
        with pytest.raises(RuntimeError, match="cannot fold a new tag"):
            app.execute(TagMessages(action="add", tag="seen", query=""))
        assert _statuses(app) == [Status.COMPLETE, Status.COMPLETE]
        assert total(app, "tag:seen") == 10
    finally:
        app.close()


def test_ctrl_c_ends_the_attempt_as_interrupted(
    initialised: tuple[Home, Keyring], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, keyring = initialised
    app = MailApplication(home, keyring)

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    try:
        monkeypatch.setattr(mailparse, "read_mailbox_counted", interrupt)
        with pytest.raises(KeyboardInterrupt):
            app.execute(ImportMailbox(path=write_mbox(tmp_path / "box.mbox", 10, seed=4)))
        (status,) = _statuses(app)
        assert status is Status.FAILED
        assert app.max_position() > 0 and total(app, "") == 0
    finally:
        app.close()
