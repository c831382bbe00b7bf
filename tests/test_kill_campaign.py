"""A campaign of ``kill -9``: a process runs imports, tag changes, undos, submitted
operations a worker drains, rebuilds, purges and syncs in a loop, and is killed at
random points, by time or once the log has reached a random number of events. After
each kill: the log is whole (its seals hold every row a commit wrote: none is lost but
by a purge, which seals what it deletes), every view equals a fresh fold of the log and
has caught up with it, each operation the views hold is in one state, and running the
import again ends with each message indexed exactly once. Before each run another
installation of the user (a peer) makes a tag and syncs it to the folder, so the
workload's syncs receive as well as send; at the end every peer's tag has arrived.

``make test`` kills it :data:`KILLS` times; ``HYPOTHESIS_PROFILE=long`` 60 times. The
kill points come from a seeded generator: a failure names its seed and point."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventpile.domain.operation import Status
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.query import all_tags
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.operations import recent
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE

KILLS = 60 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 10
MESSAGES = 120
WORKLOAD = """
import sys
from datetime import timedelta
from pathlib import Path
from eventpile.commands.undo import Undo
from eventpile.commands.worker import Worker
from eventpile.domain.events import utcnow
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.store.home import Home

home, mailbox, folder = Home(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
run = int(sys.argv[4])
now = [utcnow() + timedelta(days=30 * run)]  # each run later than the last
app = MailApplication(home, home.unlock(sys.argv[5]), clock=lambda: now[0])
for tag in ("t0", "t1", "t2"):
    app.execute(TagMessages(action="add", tag=tag, query="nosuchwordanywhere"))
for turn in range(1000):
    app.execute(ImportMailbox(path=mailbox))
    tagged = app.execute(TagMessages(action="add", tag=f"t{turn % 3}", query="*"))
    app.execute(TagMessages(action="remove", tag=f"t{(turn + 1) % 3}", query="subject:a*"))
    if tagged.result["changed"]:
        app.execute(Undo(operation_id=tagged.id))
    app.submit(TagMessages(action="add", tag="later", query="*"))
    Worker(app).drain()
    app.view("messages").rebuild(app)
    now[0] += timedelta(days=2)
    app.purge("1d")
    app.sync(folder)
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def setting(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Home, Path, Path, Home]:
    """A home (on SQLite, or in a fresh PostgreSQL database), a mailbox, a sync folder,
    and a peer: another installation with the same keys."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    home = Home(tmp_path / "home", url)
    peer = Home(tmp_path / "peer")
    peer.init(PASSPHRASE, home.init(PASSPHRASE))
    (tmp_path / "folder").mkdir()
    return home, write_mbox(tmp_path / "m.mbox", MESSAGES, seed=7), tmp_path / "folder", peer


def _peer_tags(peer: Home, folder: Path, run: int) -> None:
    """The peer makes a tag and sends it to the folder."""
    app = MailApplication(peer, peer.unlock(PASSPHRASE))
    try:
        app.execute(TagMessages(action="add", tag=f"peer{run}", query="nosuchwordanywhere"))
        app.sync(str(folder))
    finally:
        app.close()


def _kill_at(process: subprocess.Popen[bytes], home: Home, how: str, point: float) -> None:
    """SIGKILL after ``point`` seconds, or once the log holds ``point`` events (or after
    30 s, or when the process ended on its own: then it is a failure)."""
    deadline = time.monotonic() + 30
    started = time.monotonic()
    while time.monotonic() < deadline and process.poll() is None:
        if how == "time" and time.monotonic() - started >= point:
            break
        if how == "events" and home.backend().log_end() >= point:
            break
        time.sleep(0.002)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_kill_9_anywhere_leaves_a_whole_log_and_current_views(
    setting: tuple[Home, Path, Path, Home],
) -> None:
    home, mbox, folder, peer = setting
    seed = random.randrange(2**32)
    draw = random.Random(seed)
    for run in range(KILLS):
        _peer_tags(peer, folder, run)
        how = draw.choice(("time", "events"))
        point = (
            draw.uniform(0.2, 3.0)
            if how == "time"
            else home.backend().log_end() + draw.randint(1, 400)
        )
        where = f"seed {seed}, kill {run}: by {how} at {point:.3f}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKLOAD,
                str(home.path),
                str(mbox),
                str(folder),
                str(run),
                PASSPHRASE,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _kill_at(process, home, how, point)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stderr is not None
            process.stderr.close()
        app = MailApplication(home, home.unlock(PASSPHRASE))
        try:
            assert app.check_log() in ([], None), where
            app.catch_up()
            end = app.max_position()
            for name, view in app.views.items():
                assert view.position == end, f"{where}: {name} is not at the log's end"
                assert view.verify(app), f"{where}: {name} differs from a fresh fold"
            ops = recent(app.view("operations").db, 100_000)
            assert len({op["id"] for op in ops}) == len(ops), f"{where}: an operation twice"
            assert {op["status"] for op in ops} <= {s.value for s in Status}, where
            again = app.execute(ImportMailbox(path=mbox))
            assert again.status is Status.COMPLETE, where
            indexed = app.view("messages").db.execute("SELECT count(*) FROM messages").fetchone()[0]
            assert indexed == MESSAGES, f"{where}: {indexed} messages indexed"
        finally:
            app.close()
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        app.sync(str(folder))
        names = {tag["name"] for tag in all_tags(app.view("messages").db)}
        assert {f"peer{run}" for run in range(KILLS)} <= names, f"seed {seed}: a peer's tag lost"
        assert app.check_log() == [], f"seed {seed}"
    finally:
        app.close()
