"""Benchmarks of long-running operations (issue 3), each figure beside its target.

Run on demand, never in the test suite::

    .venv/bin/python -m tests.bench_operations            # all: queue, then 100k and 1M events
    .venv/bin/python -m tests.bench_operations queue      # the queue drained by workers only
    .venv/bin/python -m tests.bench_operations log --sizes 100000 --runs 5

``queue``: 400 due operations (one-message ``tag add`` on the real corpus) drained
by 1, then 2 worker processes together on SQLite, in operations per second (median
of ``--runs`` homes; ``tests.bench_postgres queue`` is the same on PostgreSQL).

``log``: for each log size it builds a home: filler events (small events no operation
view reads) up to the size, ``--done`` finished operations and ``--pending``
pending ones (scheduled sends), with every view caught up. Then:

- ``start-up``: a new process unlocks the home, opens the application, brings the
  queue up to date and loads every pending operation (target <= 300 ms at 1M
  events). Measured inside the process from before unlocking (the interpreter and
  imports are reported apart); median of ``--runs`` processes.
- ``feed``: the feed query (the 50 most recent entries plus every incomplete one)
  on the open feed view: p50 and p95 over 500 queries (target p50 <= 5 ms).

Both should not grow with the log: compare the sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.domain.events import DomainEvent
from eventpile.mail.app import MailApplication
from eventpile.mail.send import SendMail
from eventpile.projections.feed import feed
from eventpile.store.home import Home
from tests.bench import chosen, fresh_home
from tests.bench_postgres import queue_rates

PASSPHRASE = "benchmark"
BATCH = 5000

STARTUP = """
import json, sys, time
t0 = time.perf_counter()
from eventpile.mail.app import MailApplication
from eventpile.projections.queue import pending
from eventpile.store.home import Home
t1 = time.perf_counter()
home = Home(__import__("pathlib").Path(sys.argv[1]))
keyring = home.unlock(sys.argv[2])
t2 = time.perf_counter()
app = App(home, keyring)
queue = app.view("queue")
report = queue.catch_up(app)
ops = pending(queue.db)
t3 = time.perf_counter()
app.close()
print(json.dumps({"imports": t1 - t0, "unlock": t2 - t1, "open_and_load": t3 - t2,
                  "total": t3 - t1, "pending": len(ops), "events_read": report.events}))
"""


class LogFiller(DomainEvent):
    """What fills the log in this benchmark (no operation view reads it)."""

    n: int


class Noop(Command):
    """A command that does nothing: finished operations for the feed."""


@handles(Noop)
def run_noop(command: Noop, ctx: Context) -> Outcome:
    return Outcome("Nothing done")


def build(path: Path, events: int, done: int, pending: int) -> Home:
    home = Home(path)
    keyring = home.init(PASSPHRASE)
    app = App(home, keyring)
    try:
        started = time.perf_counter()
        for _ in range(done):
            app.execute(Noop())
        when = app.clock() + timedelta(days=1)
        for n in range(pending):
            mail = SendMail.compose("a@example.org", [f"b{n}@example.org"], "Later", "Body")
            app.submit(mail, run_after=when)
        stream = uuid.uuid4()
        written = app.max_position()
        while written < events:
            size = min(BATCH, events - written)
            app.append(
                [
                    LogFiller(originator_id=stream, originator_version=written + i + 1, n=i)
                    for i in range(size)
                ]
            )
            written += size
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        app.catch_up()
        caught = time.perf_counter() - started
        print(
            f"  built {app.max_position():,} events ({done:,} finished and {pending} pending"
            f" operations) in {wrote:.0f}s; views caught up in {caught:.0f}s",
            flush=True,
        )
    finally:
        app.close()
    return home


def startup(home: Home, runs: int) -> None:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", STARTUP, str(home.path), PASSPHRASE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        samples.append(json.loads(out))
    assert all(s["events_read"] == 0 for s in samples)

    def median(key: str) -> float:
        return statistics.median(s[key] for s in samples) * 1000

    spread = sorted(s["total"] * 1000 for s in samples)
    print(
        f"  start-up to a loaded queue ({samples[0]['pending']} pending): "
        f"{median('total'):.0f} ms [{spread[0]:.0f}-{spread[-1]:.0f}] "
        f"(unlock {median('unlock'):.0f} ms, open and load {median('open_and_load'):.0f} ms; "
        f"interpreter imports {median('imports'):.0f} ms apart)  target <= 300 ms"
    )


def feed_query(home: Home, queries: int) -> None:
    app = App(home, home.unlock(PASSPHRASE))
    try:
        db = app.view("feed").db
        shown = feed(db, 50)
        samples = []
        for _ in range(queries):
            started = time.perf_counter()
            feed(db, 50)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        app.close()
    samples.sort()
    p50, p95 = samples[len(samples) // 2], samples[int(len(samples) * 0.95)]
    print(
        f"  feed query (recent 50 + incomplete: {len(shown)} entries): "
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms  target p50 <= 5 ms"
    )


def bench_log(args: argparse.Namespace) -> None:
    for size in args.sizes:
        print(f"log of {size:,} events:", flush=True)
        with tempfile.TemporaryDirectory(prefix="eventpile-bench-") as tmp:
            home = build(Path(tmp) / "home", size, args.done, args.pending)
            startup(home, args.runs)
            feed_query(home, 500)


def bench_queue(args: argparse.Namespace) -> None:
    queue_rates(fresh_home, args.runs)


BENCHMARKS = {"queue": bench_queue, "log": bench_log}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--done", type=int, default=2000, help="finished operations")
    parser.add_argument("--pending", type=int, default=100, help="pending operations")
    parser.add_argument("--runs", type=int, default=5, help="start-up processes, queue homes")
    args = parser.parse_args()
    for name in chosen(parser, args.names, BENCHMARKS):
        BENCHMARKS[name](args)


if __name__ == "__main__":
    main()


class App(MailApplication):
    """The mail application with this module's own test commands."""

    handlers = (run_noop,)
