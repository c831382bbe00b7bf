"""Benchmarks of the PostgreSQL backend (issue 5): each figure printed beside its target.

Run them on demand, never in the test suite::

    .venv/bin/python -m tests.bench_postgres                  # all of them (~3 minutes)
    .venv/bin/python -m tests.bench_postgres append queue     # some of them
    .venv/bin/python -m tests.bench_postgres rebuild --size 20000 --runs 3

They start a throwaway PostgreSQL server on this machine, durable like a real one
(fsync and synchronous commit on), sharing its cores with the benchmark, unless
``--database-url`` names a server whose user may ``CREATE DATABASE``. Every
benchmark works in a fresh database. Benchmarks: ``append`` (batched encrypted
appends), ``rebuild`` (each view from scratch, with decryption), ``tag`` (a
one-message ``tag add``), ``queue`` (operations drained by worker processes, and the
CPU an operation took in them and in the server),
``live`` (how soon a reader on another machine has its views caught up with another
process's write) and ``search`` (the query mix over ``--size`` messages).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.domain.operation import Operation, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.message import Message, MessageTagged
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.base import rebuild_together
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from eventpile.store.postgres import connect
from eventpile.testing.postgres import Server
from tests.bench import (
    CORPUS,
    PASSPHRASE,
    _contents,
    _spread,
    chosen,
    latency,
    one_message_words,
    opened,
    rate,
    report,
    search_mix,
    timed,
)

SPAWN = multiprocessing.get_context("spawn")
Homes = AbstractContextManager[tuple[Home, Keyring]]


class Databases:
    """Fresh databases on the throwaway server, or on the server of ``admin_url``."""

    def __init__(self, admin_url: str | None):
        self.server = None if admin_url else Server(durable=True)
        self.admin_url = admin_url or self.server.url()  # type: ignore[union-attr]

    @contextmanager
    def home(self, passphrase: str = PASSPHRASE) -> Iterator[tuple[Home, Keyring]]:
        """A new home whose events live in a new database (its views in the home)."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with connect(self.admin_url) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            with tempfile.TemporaryDirectory(prefix="eventpile-bench-pg-") as tmp:
                home = Home(Path(tmp) / "home", self.admin_url.rsplit("/", 1)[0] + "/" + name)
                yield home, home.init(passphrase)
        finally:
            with connect(self.admin_url) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def bench_home(
    stack: ExitStack, where: Path, postgres: bool, passphrase: str
) -> tuple[Home, Keyring]:
    """A new home for a benchmark: in ``where`` on SQLite, or in a new database of a
    throwaway PostgreSQL server (both gone when ``stack`` closes)."""
    if not postgres:
        home = Home(where / "home")
        return home, home.init(passphrase)
    databases = Databases(None)
    stack.callback(databases.close)
    return stack.enter_context(databases.home(passphrase))


# the benchmarks -------------------------------------------------------------------


def bench_append(runs: int, dbs: Databases, size: int, count: int = 20_000) -> None:
    """MessageIndexed + MessageTagged (1:1, real corpus content), through the mapper and AES;
    one event a transaction (the round trips of an append), then many."""
    contents = _contents()
    tag_id = uuid.uuid4()
    with operation_scope(uuid7(), uuid.uuid4()):
        events: list[DomainEvent] = []
        for i in range(count // 2):
            message_id = uuid.uuid4()
            events.append(Message.index(message_id, contents[i % len(contents)]))
            events.append(
                MessageTagged(originator_id=message_id, originator_version=2, tag_id=tag_id)
            )
    for batch, total in ((1, count // 10), (100, count), (500, count)):
        samples = []
        for _ in range(runs):
            with dbs.home() as (home, keyring), opened(home, keyring) as app:

                def append_all(
                    app: MailApplication = app, batch: int = batch, total: int = total
                ) -> None:
                    for i in range(0, total, batch):
                        app.append(events[i : i + batch])

                samples.append(timed(append_all))
        rate(f"append {batch} per transaction", total, samples, 20_000 if batch > 1 else None)


def _synthetic(app: MailApplication, size: int) -> None:
    """``size`` synthetic messages imported, and three tags on some of them."""
    with tempfile.TemporaryDirectory() as tmp:
        mbox = write_mbox(Path(tmp) / "synthetic.mbox", size, seed=2)
        took = timed(lambda: app.execute(ImportMailbox(path=mbox)))
    rate(f"(setup) import {size:,} synthetic messages", size, [took])
    for tag, query in (("patches", "subject:PATCH"), ("crypto", "crypto"), ("todo", "fix")):
        app.execute(TagMessages(action="add", tag=tag, query=query))


def bench_rebuild(runs: int, dbs: Databases, size: int) -> None:
    """Every view from scratch beside the live one, decrypting every event it reads."""
    with dbs.home() as (home, keyring), opened(home, keyring) as app:
        _synthetic(app, size)
        log = app.max_position()
        print(f"{'(setup) events in the log':<46} {log:>8,}", flush=True)
        replay = [timed(lambda: sum(1 for _ in app.all_events())) for _ in range(runs)]
        rate("replay + decrypt + decode the whole log", log, replay)
        per_view: dict[str, list[tuple[int, float]]] = {name: [] for name in app.views}
        together: list[float] = []
        for _ in range(runs):
            for name, view in app.views.items():
                done = view.rebuild(app)
                per_view[name].append((done.events, done.elapsed_s))
            together.append(timed(partial(rebuild_together, list(app.views.values()), app))[0])
    for name, results in per_view.items():
        rates = [events / s for events, s in results]
        report(
            f"rebuild {name} ({results[0][0]:,} events read)",
            statistics.median(rates),
            "events/s",
            10_000,
            spread=_spread(rates),
        )
    whole = [log / s for s in together]
    report("rebuild all views together: whole log", statistics.median(whole), "events/s", 10_000)


def bench_search(runs: int, dbs: Databases, size: int) -> None:
    """The query mix of :mod:`tests.bench` on a store of ``size`` synthetic messages."""
    with dbs.home() as (home, keyring), opened(home, keyring) as app:
        _synthetic(app, size)
        search_mix(app, runs, size, 15.0)


def bench_tag(runs: int, dbs: Databases, size: int, samples: int = 200) -> None:
    """``tag add`` on a query matching one message, views caught up before it returns."""
    with dbs.home() as (home, keyring), opened(home, keyring) as app:
        app.execute(ImportMailbox(path=CORPUS))
        operations: list[Operation] = []

        def tag(word: str) -> None:
            operations.append(app.execute(TagMessages(action="add", tag="bench", query=word)))

        taken = []
        for n, word in enumerate(one_message_words(app, samples + 20)):
            took = timed(partial(tag, word))
            assert operations[-1].result["changed"] == 1, word
            if n >= 20:  # the first ones create the tag and warm the caches
                taken.append(took)
    latency("tag add, one message (execute, views caught up)", taken, 10.0)


def _drain(home_path: str, url: str | None, start: Any, finished: Any) -> None:
    from eventpile.commands.worker import Worker

    home = Home(Path(home_path), url)
    app = MailApplication(home, home.unlock(PASSPHRASE))
    start.wait()
    cpu = time.process_time()
    Worker(app).drain()
    finished.put((time.time(), time.process_time() - cpu))
    app.close()


def server_cpu_s(server: Server) -> float:
    """The CPU time the throwaway server's processes have spent so far (those that ended
    included: their parent, the postmaster, has reaped them), from Linux's ``/proc``."""
    postmaster = (server.data / "postmaster.pid").read_text().split()[0]

    def times(pid: str, reaped: bool) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11 : 15 if reaped else 13])  # utime stime cu cs

    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    ticks = times(postmaster, True)
    for pid in children:
        with suppress(FileNotFoundError, ProcessLookupError):  # ended meanwhile
            ticks += times(pid, False)
    return ticks / os.sysconf("SC_CLK_TCK")


def queue_rates(
    homes: Callable[[], Homes],
    runs: int,
    operations: int = 400,
    server_cpu: Callable[[], float] | None = None,
) -> None:
    """Due operations (one-message ``tag add``) drained by 1, then 2 worker processes together,
    each run in a new home from ``homes``: SQLite or PostgreSQL, as the home says. Beside
    each rate, the CPU time an operation took in the workers, and in the server if
    ``server_cpu`` says what its processes have spent (a figure the machine's load moves
    less than the rate)."""
    for workers in (1, 2):
        seconds, worker_cpu, server = [], [], []
        for _ in range(runs):
            with homes() as (home, keyring), opened(home, keyring) as app:
                app.execute(ImportMailbox(path=CORPUS))
                queries = one_message_words(app, operations)
                submitted = [
                    app.submit(TagMessages(action="add", tag="queued", query=q)).id for q in queries
                ]
                start, finished = SPAWN.Barrier(workers + 1), SPAWN.Queue()
                args = (str(home.path), home.database, start, finished)
                procs = [SPAWN.Process(target=_drain, args=args) for _ in range(workers)]
                for p in procs:
                    p.start()
                start.wait()
                began, server_began = time.time(), server_cpu() if server_cpu else 0.0
                ends, cpus = zip(*(finished.get(timeout=600) for _ in procs), strict=True)
                if server_cpu:
                    server.append((server_cpu() - server_began) / operations * 1000)
                for p in procs:
                    p.join()
                seconds.append(max(ends) - began)
                worker_cpu.append(sum(cpus) / operations * 1000)
                assert all(
                    (s := app.load(Operation, op)) is not None and s.status is Status.COMPLETE
                    for op in submitted
                )
        rates = [operations / s for s in seconds]
        report(
            f"queue: {operations} operations, {workers} worker(s)",
            statistics.median(rates),
            "ops/s",
            spread=_spread(rates),
        )
        for name, spent in (("workers", worker_cpu), ("server", server)):
            if spent:
                median = statistics.median(spent)
                report(f"  CPU an operation took: {name}", median, "ms", spread=_spread(spent))


def bench_queue(runs: int, dbs: Databases, size: int) -> None:
    server = dbs.server
    queue_rates(
        dbs.home, runs, server_cpu=None if server is None else partial(server_cpu_s, server)
    )


def _follow(home_path: str, ready: Any, seen: Any, count: int) -> None:
    """A reader on another machine: its own home (the keys and URL copied), its own views."""
    home = Home(Path(home_path))
    app = MailApplication(home, home.unlock(PASSPHRASE))
    app.catch_up()
    position = app.max_position()
    app.wait_for_events(position, 0)  # LISTEN before saying ready
    ready.set()
    for _ in range(count):
        position = app.wait_for_events(position, 60)
        app.catch_up()
        seen.put(time.time())
    app.close()


def bench_live(runs: int, dbs: Databases, size: int, samples: int = 50) -> None:
    """From one process's commit to a reader on another machine (another home on the
    same database) having its own views caught up with it."""
    with dbs.home() as (home, keyring), opened(home, keyring) as app:
        other = home.path.with_name("other-machine")
        other.mkdir(mode=0o700)
        for name in (home.key_file.name, home.database_file.name):
            (other / name).write_bytes((home.path / name).read_bytes())
        ready, seen = SPAWN.Event(), SPAWN.Queue()
        reader = SPAWN.Process(target=_follow, args=(str(other), ready, seen, samples))
        reader.start()
        assert ready.wait(60)
        delays = []
        with operation_scope(uuid7(), uuid.uuid4()):
            for _ in range(samples):
                event = MessageTagged(
                    originator_id=uuid.uuid4(), originator_version=1, tag_id=uuid.uuid4()
                )
                app.append([event])
                committed = time.time()
                delays.append(seen.get(timeout=60) - committed)
        reader.join()
    latency("live: another machine's views have a write", delays, 5.0)


BENCHMARKS = {
    "append": bench_append,
    "rebuild": bench_rebuild,
    "tag": bench_tag,
    "queue": bench_queue,
    "live": bench_live,
    "search": bench_search,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench_postgres", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--size", type=int, default=20_000, help="messages for rebuild and search")
    parser.add_argument("--database-url", help="a server to use instead of a throwaway one")
    args = parser.parse_args(argv)
    names = chosen(parser, args.names, BENCHMARKS)
    if not CORPUS.exists():
        print(f"the real corpus {CORPUS} is missing", file=sys.stderr)
        return 1
    dbs = Databases(args.database_url)
    try:
        for name in names:
            BENCHMARKS[name](args.runs, dbs, args.size)
    finally:
        dbs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
