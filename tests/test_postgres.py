"""Several processes on one store: the reason to use PostgreSQL.

These tests start real processes on the same home (its PostgreSQL database, or
its SQLite files: they run on both backends): workers racing for due
operations, a worker killed mid-operation, two processes tagging the same
messages, a reader following another process's writes. PostgreSQL-only
behaviour (configuration, NOTIFY) is at the end.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any, cast

import pytest

from eventpile.commands.dispatcher import CommandFailed
from eventpile.commands.eventlog import Conflict
from eventpile.domain.events import operation_scope, uuid7
from eventpile.domain.operation import Operation, OperationRequested, OperationStarted, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.message import Message, MessageIndexed, MessageTagged
from eventpile.mail.query import parse_query, search
from eventpile.mail.synthetic import write_mbox
from eventpile.mail.tag import TagCreated
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE

SPAWN: SpawnContext = multiprocessing.get_context("spawn")
WAIT_S = 60.0
"""A bound on every wait for another process (it is never reached when all is well)."""


def _open(home_path: str) -> MailApplication:
    home = Home(Path(home_path))
    return MailApplication(home, home.unlock(PASSPHRASE))


@contextmanager
def _processes(
    *targets: tuple[Callable[..., None], tuple[Any, ...]],
) -> Iterator[list[SpawnProcess]]:
    """Start a process per target; on the way out, wait for them (killing stragglers)."""
    procs = [SPAWN.Process(target=f, args=args) for f, args in targets]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        for p in procs:
            p.join(WAIT_S)
            if p.is_alive():
                p.kill()
                p.join()


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _indexed(app: MailApplication, tmp_path: Path, count: int) -> list[uuid.UUID]:
    mbox = write_mbox(tmp_path / "mail.mbox", count, seed=5)
    app.execute(ImportMailbox(path=mbox))
    return [e.originator_id for _, e in app.all_events() if isinstance(e, MessageIndexed)]


def _tagged(count: int) -> list[MessageTagged]:
    """``count`` tag events, each the first event of a stream of its own."""
    return [
        MessageTagged(originator_id=uuid.uuid4(), originator_version=1, tag_id=uuid.uuid4())
        for _ in range(count)
    ]


# two processes tagging the same messages ----------------------------------------


def _tagger(home_path: str, prefix: str, count: int, barrier: Any, conflicts: Any) -> None:
    app = _open(home_path)
    append = app.append

    def counting(events: Any) -> list[int]:
        try:
            return append(events)
        except Conflict:
            with conflicts.get_lock():
                conflicts.value += 1
            raise

    app.append = counting  # type: ignore[method-assign]
    barrier.wait(WAIT_S)
    for i in range(count):
        with contextlib.suppress(CommandFailed):  # retries ran out: recorded as failed
            app.execute(TagMessages(action="add", tag=f"{prefix}{i}", query="*"))
    app.close()


def test_two_processes_tagging_the_same_messages_lose_no_update(
    app: MailApplication, home: Home, tmp_path: Path
) -> None:
    """Every command that completed holds on every message, whatever ran beside it.

    A command that lost the race to the other process five times in a row fails
    (recorded as such, having changed nothing); the rest complete.
    """
    messages = _indexed(app, tmp_path, 30)
    barrier, conflicts = SPAWN.Barrier(2), SPAWN.Value("i", 0)
    per_process = 6
    with _processes(
        (_tagger, (str(home.path), "a", per_process, barrier, conflicts)),
        (_tagger, (str(home.path), "b", per_process, barrier, conflicts)),
    ) as procs:
        pass
    assert [p.exitcode for p in procs] == [0, 0]
    ended: dict[str, set[str]] = {"complete": set(), "failed": set()}
    for _, event in app.all_events():
        if isinstance(event, OperationRequested) and event.command == "TagMessages":
            state = app.load(Operation, event.originator_id)
            assert state is not None
            ended[state.status.value].add(state.private_args["tag"])
    assert {t[0] for t in ended["complete"]} == {"a", "b"}  # each process got through
    assert len(ended["complete"]) + len(ended["failed"]) == 2 * per_process
    created = [e for _, e in app.all_events() if isinstance(e, TagCreated)]
    assert sorted(e.name for e in created) == sorted(ended["complete"])
    for message_id in messages:
        state = app.load(Message, message_id)
        assert state is not None and set(state.tags) == {e.originator_id for e in created}
    app.catch_up()
    for tag in ended["complete"]:
        assert search(app.view("messages").db, parse_query(f"tag:{tag}"))["total"] == 30
    print(f"conflicts retried: {conflicts.value}, failed: {len(ended['failed'])}")


def test_a_stale_append_is_a_conflict_for_another_connection(
    app: MailApplication, home: Home, keyring: Any
) -> None:
    """The recorder's uniqueness violation on (stream, version) is our ``Conflict``; its
    transaction is rolled back, and the next append (on the same connection) writes."""
    other = MailApplication(home, keyring)
    try:
        tag = TagCreated(originator_id=uuid.uuid4(), originator_version=1, name="x")
        other.append([tag])
        before = app.max_position()
        with pytest.raises(Conflict):
            app.append([tag.model_copy(update={"name": "y"})])
        assert app.max_position() == before
        fresh = TagCreated(originator_id=uuid.uuid4(), originator_version=1, name="z")
        [written] = app.append([fresh])
        assert written == app.max_position() > before and app.check_log() == []
    finally:
        other.close()


# a reader following another process's writes -----------------------------------


def _reader(home_path: str, after: int, ready: Any, results: Any) -> None:
    app = _open(home_path)
    index = app.view("messages")
    index.catch_up(app)
    ready.set()
    position = app.wait_for_events(after, WAIT_S)
    seen = time.time()
    index.catch_up(app)
    results.put((position, seen, search(index.db, parse_query("tag:live"))["total"]))
    app.close()


def test_a_reader_process_sees_another_process_write(
    app: MailApplication, home: Home, tmp_path: Path
) -> None:
    _indexed(app, tmp_path, 10)
    ready, results = SPAWN.Event(), SPAWN.Queue()
    after = app.max_position()
    with _processes((_reader, (str(home.path), after, ready, results))):
        assert ready.wait(WAIT_S)
        written = time.time()
        app.execute(TagMessages(action="add", tag="live", query="*"))
        position, seen, tagged = results.get(timeout=WAIT_S)
    assert position == app.max_position() > after
    assert tagged == 10
    print(f"seen {1000 * (seen - written):.0f} ms after the write began")


@pytest.mark.postgres
def test_a_reader_on_another_machine_keeps_views_of_its_own(pg_url: str, tmp_path: Path) -> None:
    """Another machine: its own home (a copy of keys.json and database.url) and its own
    encrypted views, caught up from the shared log as it is written."""
    home = Home(tmp_path / "laptop", database_url=pg_url)
    app = MailApplication(home, home.init(PASSPHRASE))
    try:
        _indexed(app, tmp_path, 10)
        other = tmp_path / "desktop"
        other.mkdir(mode=0o700)
        (other / "keys.json").write_bytes(home.key_file.read_bytes())
        (other / "database.url").write_text(pg_url + "\n")
        ready, results = SPAWN.Event(), SPAWN.Queue()
        after = app.max_position()
        with _processes((_reader, (str(other), after, ready, results))):
            assert ready.wait(WAIT_S)
            app.execute(TagMessages(action="add", tag="live", query="*"))
            position, _seen, tagged = results.get(timeout=WAIT_S)
        assert position == app.max_position() > after and tagged == 10
        assert b"live" not in (other / "views" / "messages.db").read_bytes()  # SQLCipher
    finally:
        app.close()


# workers draining the queue together -------------------------------------------


def _worker(home_path: str, lease_s: float, barrier: Any, stop: Any, ran: Any) -> None:
    from eventpile.commands.worker import Worker

    app = _open(home_path)
    app.lease_s = lease_s
    worker = Worker(app, lambda result: ran.put((str(result.operation_id), os.getpid())))
    if barrier is not None:
        barrier.wait(WAIT_S)
    worker.serve(stop, poll_s=0.1)
    app.close()


def _runs(app: MailApplication) -> Counter[uuid.UUID]:
    """How many attempts each operation's stream records."""
    return Counter(e.originator_id for _, e in app.all_events() if isinstance(e, OperationStarted))


def test_two_worker_processes_run_each_due_operation_exactly_once(
    app: MailApplication, home: Home
) -> None:
    submitted = [
        app.submit(TagMessages(action="add", tag=f"t{i}", query="*")).id for i in range(200)
    ]
    barrier, stop, ran = SPAWN.Barrier(2), SPAWN.Event(), SPAWN.Queue()
    args = (str(home.path), 60.0, barrier, stop, ran)
    with _processes((_worker, args), (_worker, args)):
        reported: set[str] = set()
        while len(reported) < len(submitted):  # each report: an operation run or turned down
            reported.add(ran.get(timeout=WAIT_S)[0])
        stop.set()
    assert reported == {str(op) for op in submitted}
    assert _runs(app) == Counter(submitted)
    workers: Counter[str] = Counter()
    for op in submitted:
        state = app.load(Operation, op)
        assert state is not None and state.status is Status.COMPLETE
        workers[state.worker] += 1
    created = Counter(e.name for _, e in app.all_events() if isinstance(e, TagCreated))
    assert created == Counter(f"t{i}" for i in range(200))
    print("operations per worker:", sorted(workers.values()))


def test_an_operation_of_a_killed_worker_is_run_by_the_other(
    app: MailApplication, home: Home, tmp_path: Path
) -> None:
    mbox = write_mbox(tmp_path / "big.mbox", 3000, seed=9)
    op = app.submit(ImportMailbox(path=mbox)).id
    stop, ran = SPAWN.Event(), SPAWN.Queue()
    lease_s = 1.0
    with _processes((_worker, (str(home.path), lease_s, None, stop, ran))) as (doomed,):

        def claimed() -> bool:
            state = app.load(Operation, op)
            return state is not None and state.status is Status.RUNNING

        _wait_until(claimed, "the first worker to claim the import")
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)
    killed = app.load(Operation, op)
    assert killed is not None and killed.status is Status.RUNNING and killed.attempts == 1
    with _processes((_worker, (str(home.path), lease_s, None, stop, ran))) as (survivor,):
        assert ran.get(timeout=WAIT_S)[0] == str(op)
        stop.set()
    state = app.load(Operation, op)
    assert state is not None and state.status is Status.COMPLETE and state.attempts == 2
    assert state.worker.endswith(f":{survivor.pid}")
    indexed = Counter(e.originator_id for _, e in app.all_events() if isinstance(e, MessageIndexed))
    assert len(indexed) == 3000 and set(indexed.values()) == {1}


# configuring PostgreSQL ------------------------------------------------------------


@pytest.mark.postgres
def test_the_cli_keeps_a_home_in_the_database_given_at_init(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eventpile.mail.cli import main

    home = Home(tmp_path / "home")
    monkeypatch.setenv("EVENTPILE_HOME", str(home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    mbox = write_mbox(tmp_path / "mail.mbox", 20, seed=3)
    assert main(["--database-url", pg_url, "init"]) == 0
    assert home.database == pg_url and not home.events_db.exists()
    assert main(["import", str(mbox)]) == 0  # the URL saved by init
    assert main(["tag", "add", "seen", "*"]) == 0
    capsys.readouterr()
    assert main(["--json", "search", "tag:seen"]) == 0
    assert '"total": 20' in capsys.readouterr().out
    assert not home.events_db.exists() and (home.views / "messages.db").exists()
    reopened = _open(str(home.path))
    try:
        assert home.backend().log_end() == reopened.max_position() > 0
    finally:
        reopened.close()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("mysql://host/db", "must start with postgresql://"),
        ("postgresql://host/db?colour=blue", "invalid URI query parameter"),
        ("postgresql://host/db?sslmode=require", "parameter sslmode is not supported here"),
        ("postgresql://host", "names no database"),
        ("postgresql://127.0.0.1:1/db?connect_timeout=5", "cannot connect to the database"),
    ],
)
def test_an_unusable_database_url_is_one_line_and_writes_nothing(
    url: str,
    error: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from eventpile.mail.cli import main

    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("EVENTPILE_DATABASE_URL", url)
    assert main(["--home", str(tmp_path / "home"), "init"]) == 1
    message = capsys.readouterr().err
    assert error in message and message.count("\n") == 1
    assert not (tmp_path / "home").exists()


@pytest.mark.postgres
def test_init_refuses_a_database_that_holds_an_event_log(pg_url: str, tmp_path: Path) -> None:
    first = Home(tmp_path / "first", pg_url)
    app = MailApplication(first, first.init(PASSPHRASE))
    app.execute(TagMessages(action="add", tag="x", query="*"))
    app.close()
    second = Home(tmp_path / "second", pg_url)
    with pytest.raises(StoreError, match="already holds an event log"):
        second.init(PASSPHRASE)
    assert not second.path.exists()


@pytest.mark.postgres
def test_the_plaintext_views_of_an_earlier_version_are_dropped(pg_url: str, tmp_path: Path) -> None:
    """Only eventpile's (a schema view_NAME with its tracking table); another's stays."""
    from eventpile.store.postgres import connect

    with connect(pg_url) as db:
        db.execute("CREATE SCHEMA view_messages")
        db.execute("CREATE TABLE view_messages.tracking (name TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE view_messages.messages (subject TEXT)")
        db.execute("INSERT INTO view_messages.messages VALUES ('a private subject')")
        db.execute("CREATE SCHEMA view_of_someone_else")
        db.execute("CREATE TABLE view_of_someone_else.tracking (name TEXT)")
        db.execute("DROP TABLE view_of_someone_else.tracking")
        db.execute("CREATE TABLE view_of_someone_else.kept (x INT)")
        db.commit()
    home = Home(tmp_path / "home", database_url=pg_url)
    MailApplication(home, home.init(PASSPHRASE)).close()
    with connect(pg_url) as db:
        schemas = {
            name
            for (name,) in db.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'view%'"
            ).fetchall()
        }
    assert schemas == {"view_of_someone_else"}


@pytest.mark.postgres
def test_a_large_append_is_one_transaction_and_conflicts_as_any(
    pg_url: str, tmp_path: Path
) -> None:
    """More events than go through psycopg's pipeline (where 30,000 once stalled): all
    written, sealed, in one transaction; one that conflicts writes none of them."""
    from eventpile.store.postgres_factory import PIPELINED_UPTO

    home = Home(tmp_path / "home", database_url=pg_url)
    app = MailApplication(home, home.init(PASSPHRASE))
    try:
        count = 3 * PIPELINED_UPTO
        with operation_scope(uuid7(), uuid.uuid4()):
            events = _tagged(count)
            positions = app.append(events)
            assert len(positions) == count and app.max_position() == positions[-1]
            with pytest.raises(Conflict):
                app.append(events[-PIPELINED_UPTO - 5 :])  # written already
        assert app.max_position() == positions[-1] and app.check_log() == []
    finally:
        app.close()


@pytest.mark.postgres
def test_writers_taking_turns_write_in_order_and_sealed(pg_url: str, tmp_path: Path) -> None:
    """Two writers taking turns, one of them with an append too large for psycopg's
    pipeline among them: every position once, in order, each append one seal, the log
    whole, every event read back."""
    from eventpile.store.postgres_factory import PIPELINED_UPTO
    from eventpile.store.seals import Sealing

    home = Home(tmp_path / "home", database_url=pg_url)
    keyring = home.init(PASSPHRASE)
    first, second = MailApplication(home, keyring), MailApplication(home, keyring)
    try:
        written: list[int] = []
        with operation_scope(uuid7(), uuid.uuid4()):
            for app, count in [
                (first, 1), (second, 2), (first, 1), (first, 3), (second, PIPELINED_UPTO + 1),
                (first, 2), (second, 1), (second, 1), (first, 1),
            ]:  # fmt: skip
                positions = app.append(_tagged(count))
                assert positions == list(range(len(written) + 1, len(written) + count + 1))
                written += positions
        _, _, seals = cast(Sealing, first.recorder).check()
        assert len(seals) == 9 and first.check_log() == [] and second.check_log() == []
        assert [p for p, _ in second.all_events()] == written
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
@pytest.mark.parametrize("count", [1, "more than the pipeline takes"])
def test_an_append_refused_between_its_statements_writes_nothing(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int | str
) -> None:
    """Refused after its rows went in and before its seal (the home's head says the log
    was cut): the events and the seal are one transaction, so none of it stands (the
    positions it took stay unused); the connection is left as it was, and the next
    append writes."""
    from eventpile.store.postgres_factory import PIPELINED_UPTO

    home = Home(tmp_path / "home", database_url=pg_url)
    app = MailApplication(home, home.init(PASSPHRASE))
    size = count if isinstance(count, int) else PIPELINED_UPTO + 1
    try:
        with operation_scope(uuid7(), uuid.uuid4()):
            app.append(_tagged(size))
            before = app.max_position()
            with monkeypatch.context() as patch:
                patch.setattr(app.recorder, "_cut", lambda saved, last: ["the log was cut"])
                with pytest.raises(StoreError, match="the log was cut"):
                    app.append(_tagged(size))
            assert app.max_position() == before and app.check_log() == []
            assert app.append(_tagged(size))[0] > before and app.check_log() == []
        assert len(list(app.all_events())) == 2 * size
    finally:
        app.close()


@pytest.mark.postgres
def test_an_append_of_a_few_events_makes_two_round_trips(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append with the table lock, then the seal with the commit: each a sync of
    psycopg's pipeline (its transaction block added three, the lock held through one),
    and no commit left for a round trip of its own."""
    import psycopg
    import psycopg._pipeline_base
    from psycopg.pq import TransactionStatus

    home = Home(tmp_path / "home", database_url=pg_url)
    app = MailApplication(home, home.init(PASSPHRASE))
    syncs = Counter[str]()
    enqueue = psycopg._pipeline_base.BasePipeline._enqueue_sync
    commit = psycopg.Connection.commit

    def counted(pipeline: Any) -> None:
        syncs["sync"] += 1
        enqueue(pipeline)

    def commit_counted(connection: Any) -> None:
        syncs["commit"] += connection.info.transaction_status is not TransactionStatus.IDLE
        commit(connection)

    try:
        with operation_scope(uuid7(), uuid.uuid4()):
            tagged = _tagged(3)
            app.append(tagged[:1])  # the statements prepared, the seals numbered
            monkeypatch.setattr(psycopg._pipeline_base.BasePipeline, "_enqueue_sync", counted)
            monkeypatch.setattr(psycopg.Connection, "commit", commit_counted)
            app.append(tagged[1:])
        assert (syncs["sync"], syncs["commit"]) == (2, 0)
    finally:
        app.close()


@pytest.mark.postgres
def test_without_table_creation_a_database_lacking_the_append_function_is_refused(
    pg_url: str, tmp_path: Path
) -> None:
    """A database an earlier version made has no append function; a start with
    ``CREATE_TABLE=no`` (which makes nothing) says so in one line instead of failing at
    its first write; a start that makes tables makes it, and then one without works."""
    from eventpile.store.postgres import connect
    from eventpile.store.postgres_factory import APPEND_FUNCTION

    home = Home(tmp_path / "home", database_url=pg_url)
    MailApplication(home, home.init(PASSPHRASE)).close()
    with connect(pg_url) as db:
        db.execute(f"DROP FUNCTION {APPEND_FUNCTION}")
    without = {"CREATE_TABLE": "no"}
    with pytest.raises(StoreError, match=f"no function {APPEND_FUNCTION}"):
        MailApplication(home, home.unlock(PASSPHRASE), env=without)
    MailApplication(home, home.unlock(PASSPHRASE)).close()
    app = MailApplication(home, home.unlock(PASSPHRASE), env=without)
    try:
        with operation_scope(uuid7(), uuid.uuid4()):
            [position] = app.append(_tagged(1))
        assert app.max_position() == position and app.check_log() == []
    finally:
        app.close()


@pytest.mark.postgres
def test_a_server_whose_default_is_repeatable_read_numbers_seals_after_the_lock(
    pg_url: str, tmp_path: Path
) -> None:
    """Under REPEATABLE READ the append function's snapshot would be taken before its
    table lock: a writer that waited for another's lock would number its seal as that
    one did, and fail. Appends are READ COMMITTED whatever the server's default: the
    writer that waited numbers its seal after the one written meanwhile."""
    import threading

    import psycopg

    from eventpile.store.postgres import connect

    home = Home(tmp_path / "home", database_url=pg_url)
    keyring = home.init(PASSPHRASE)
    MailApplication(home, keyring).close()
    with connect(pg_url) as db:
        (name,) = db.execute("SELECT current_database()").fetchone()
        db.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
        )
    app = MailApplication(home, keyring)  # its connection made since: repeatable read
    failed: list[BaseException] = []

    def tag() -> None:
        with operation_scope(uuid7(), uuid.uuid4()):
            try:
                app.append(_tagged(1))
            except BaseException as error:
                failed.append(error)

    try:
        with connect(pg_url) as watcher, psycopg.connect(pg_url) as holder:
            holder.execute("LOCK TABLE eventpile_events IN EXCLUSIVE MODE")
            waiting = threading.Thread(target=tag)
            waiting.start()
            _wait_until(
                lambda: (
                    watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
                    > 0
                ),
                "the append to wait for the lock",
            )
            (written,) = holder.execute(  # another writer's seal, while the append waits
                "INSERT INTO log_seals (number, entries, mac, low, high) "
                "SELECT coalesce(max(number), -1) + 1, '', '', 0, 0 FROM log_seals RETURNING number"
            ).fetchone()
            holder.commit()
            waiting.join(WAIT_S)
            assert not failed, failed
            (last,) = watcher.execute("SELECT max(number) FROM log_seals").fetchone()
            assert last == written + 1
    finally:
        app.close()
