"""Benchmarks of the core (issue 2): each figure printed beside its target.

Run them on demand, never in the test suite::

    .venv/bin/python -m tests.bench                 # all of them (~4 minutes)
    .venv/bin/python -m tests.bench append rebuild  # some of them
    .venv/bin/python -m tests.bench search --size 20000 --runs 3

Benchmarks: ``import`` (the real corpus through ``Eventpile.execute``, and the
whole ``eventpile import`` process), ``append`` (batched encrypted appends),
``rebuild`` (each view from scratch, with decryption), ``tag`` (a one-message
``tag add``, in process) and ``search`` (a mix of queries on the open index, and
the whole ``eventpile search`` process). ``rebuild`` and ``search`` need a home
of ``--size`` synthetic messages: it is generated and imported through the real
command path once per run of this script, then copied for each of them.

Every benchmark works in its own temporary home. Figures are medians over
``--runs`` runs (latencies: percentiles over every sample), with the spread in
brackets: the machine is shared, so look at the spread before believing a figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages, message_content
from eventpile.mail.mailparse import ParsedMail, read_mailbox
from eventpile.mail.message import Message, MessageContent, MessageTagged
from eventpile.mail.query import matching_ids, parse_query, search
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.base import PAGE, gc_paused, rebuild_together
from eventpile.store.home import Home
from eventpile.store.keys import Keyring

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "linux-mips-2000.mbox.gz"
PASSPHRASE = "bench"
EVENTPILE = Path(sys.executable).with_name("eventpile")
SEARCHES = (
    "kernel",
    "memory leak",
    '"race in"',
    "from:alice",
    "from:smith kernel",
    "subject:PATCH",
    'subject:"status update"',
    "tag:patches",
    "tag:patches crypto",
    "after:2023-06-01 before:2023-07-01",
    "from:walter after:2024-01-01",
    "regression after:2024-06-01 before:2024-09-01",
    "mips",
    "*",
)


# output ---------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"[:5]


def _spread(values: list[float], scale: float = 1.0) -> str:
    if len(values) < 2:
        return ""
    return f"[{_num(min(values) * scale)}..{_num(max(values) * scale)}, n={len(values)}]"


def report(
    label: str,
    value: float,
    unit: str,
    target: float | None = None,
    *,
    at_most: bool = False,
    spread: str = "",
    cpu: float | None = None,
) -> None:
    """One line: the figure, its spread, its target and verdict, the CPU-time figure."""
    line = f"{label:<46} {_num(value):>8} {unit:<9} {spread:<24}"
    if target is not None:
        ok = value <= target if at_most else value >= target
        line += (
            f" target {'<=' if at_most else '>='} {target:,g} {unit}  {'PASS' if ok else 'MISS'}"
        )
    if cpu is not None:
        line += f"  (by CPU time: {_num(cpu)})"
    print(line, flush=True)


def rate(label: str, count: int, samples: list[Sample], target: float | None = None) -> None:
    rates = [count / wall for wall, _ in samples]
    report(
        label,
        statistics.median(rates),
        f"{_unit(label)}/s",
        target,
        spread=_spread(rates),
        cpu=statistics.median(count / cpu for _, cpu in samples),
    )


def _unit(label: str) -> str:
    return "msg" if "import" in label else "events"


def latency(label: str, samples: list[Sample] | list[float], p50_target: float | None) -> None:
    """Percentiles of wall times (and the median CPU time, of samples that have one)."""
    ms = sorted(1000 * (s if isinstance(s, float) else s[0]) for s in samples)
    cpu = [1000 * s[1] for s in samples if not isinstance(s, float)]
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    p50 = statistics.median(ms)
    median_cpu = statistics.median(cpu) if cpu else None
    report(f"{label} p50", p50, "ms", p50_target, at_most=True, cpu=median_cpu)
    report(f"{label} p95", p95, "ms", spread=f"[max {_num(ms[-1])}, n={len(ms)}]")


# homes ----------------------------------------------------------------------


@contextmanager
def fresh_home(copy_of: Path | None = None) -> Iterator[tuple[Home, Keyring]]:
    """A temporary home (a copy of ``copy_of`` if given), unlocked."""
    with tempfile.TemporaryDirectory(prefix="eventpile-bench-") as tmp:
        home = Home(Path(tmp) / "home")
        if copy_of is None:
            keyring = home.init(PASSPHRASE)
        else:
            shutil.copytree(copy_of, home.path)
            keyring = home.unlock(PASSPHRASE)
        yield home, keyring


@contextmanager
def opened(home: Home, keyring: Keyring) -> Iterator[MailApplication]:
    app = MailApplication(home, keyring)
    try:
        yield app
    finally:
        app.close()


def cli(home: Home, *args: str) -> Sample:
    """Wall and CPU time of one whole ``eventpile`` process."""
    env = {**os.environ, "EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE}
    done: subprocess.CompletedProcess[bytes] | None = None

    def run() -> None:
        nonlocal done
        done = subprocess.run([str(EVENTPILE), "--json", *args], env=env, capture_output=True)

    took = timed(run)
    assert done is not None
    if done.returncode:
        raise RuntimeError(f"eventpile {' '.join(args)}: {done.stderr.decode().strip()}")
    return took


Sample = tuple[float, float]
"""Wall time and CPU time (this process and the processes it waited for), in seconds."""


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(action: Callable[[], object]) -> Sample:
    wall, cpu = time.perf_counter(), _cpu()
    action()
    return time.perf_counter() - wall, _cpu() - cpu


class BigHome:
    """The home of ``size`` synthetic messages, built once (or kept in ``keep``)."""

    def __init__(self, size: int, keep: Path | None = None):
        self.size = size
        self.keep = keep
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def path(self) -> Path:
        if self.keep is not None:
            if not (self.keep / "home").exists():
                self._build(self.keep)
            return self.keep / "home"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="eventpile-bench-big-")
            self._build(Path(self._tmp.name))
        return Path(self._tmp.name) / "home"

    def _build(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        mbox = write_mbox(tmp / "synthetic.mbox", self.size, seed=2)
        home = Home(tmp / "home")
        keyring = home.init(PASSPHRASE)
        with opened(home, keyring) as app:
            took = timed(lambda: app.execute(ImportMailbox(path=mbox)))
            rate(f"(setup) import {self.size:,} synthetic messages", self.size, [took])
            for tag, query in (("patches", "subject:PATCH"), ("crypto", "crypto"), ("todo", "fix")):
                app.execute(TagMessages(action="add", tag=tag, query=query))
            print(f"{'(setup) events in the log':<46} {app.max_position():>10,}", flush=True)
        mbox.unlink()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


# the benchmarks -------------------------------------------------------------


def bench_import(runs: int, big: BigHome) -> None:
    """The real corpus, end to end: parse, decide, encrypt, append, catch the views up."""
    seconds: list[Sample] = []
    whole: list[Sample] = []
    for _ in range(runs):
        with fresh_home() as (home, keyring), opened(home, keyring) as app:
            operation = None

            def run() -> None:
                nonlocal operation
                operation = app.execute(ImportMailbox(path=CORPUS))

            seconds.append(timed(run))
            assert operation is not None and operation.result["indexed"] == 2000
    for _ in range(runs):
        with fresh_home() as (home, _keyring):
            whole.append(cli(home, "import", str(CORPUS)))
    rate("import corpus (execute, views caught up)", 2000, seconds, 2000)
    walls = [wall for wall, _ in whole]
    report(
        "import corpus: whole `eventpile import`",
        statistics.median(walls),
        "s",
        spread=_spread(walls),
        cpu=statistics.median(cpu for _, cpu in whole),
    )


def _contents() -> list[MessageContent]:
    return [message_content(m) for m in read_mailbox(CORPUS) if isinstance(m, ParsedMail)]


def bench_append(runs: int, big: BigHome, count: int = 20_000, batch: int = 500) -> None:
    """Pydantic events through the mapper, AES-GCM and SQLite, ``batch`` per transaction."""
    contents = _contents()
    tag_id = uuid.uuid4()

    def events(kind: str) -> list[DomainEvent]:
        out: list[DomainEvent] = []
        with operation_scope(uuid7(), uuid.uuid4()):
            for i in range(count if kind != "mixed" else count // 2):
                message_id = uuid.uuid4()
                if kind in ("indexed", "mixed"):
                    out.append(Message.index(message_id, contents[i % len(contents)]))
                if kind in ("tagged", "mixed"):
                    out.append(
                        MessageTagged(originator_id=message_id, originator_version=2, tag_id=tag_id)
                    )
        return out

    for kind, label in (
        ("mixed", "MessageIndexed + MessageTagged, 1:1"),
        ("tagged", "MessageTagged only"),
        ("indexed", "MessageIndexed only (real corpus content)"),
    ):
        seconds: list[Sample] = []
        for _ in range(runs):
            todo = events(kind)
            with fresh_home() as (home, keyring), opened(home, keyring) as app:
                seconds.append(timed(partial(_append, app, todo, batch)))
        rate(f"append: {label}", count, seconds, 30_000 if kind == "mixed" else None)


def _append(app: MailApplication, events: list[DomainEvent], batch: int) -> None:
    for start in range(0, len(events), batch):
        app.append(events[start : start + batch])


def bench_rebuild(runs: int, big: BigHome) -> None:
    """Every view from scratch beside the live one, decrypting every event it reads.

    Rates are events of the log per second of rebuilding (a view reads the whole log,
    or the rows of its topics): per view, and for all of them together (each page
    read and decoded once for all, as ``eventpile rebuild`` does). Then the decoding
    alone (read, decrypt, validate; no view) for comparison.
    """
    with fresh_home(big.path) as (home, keyring), opened(home, keyring) as app:
        log = app.max_position()
        seconds: dict[str, list[Sample]] = {name: [] for name in (*app.views, "all views")}
        for _ in range(runs):
            for name, view in app.views.items():
                seconds[name].append(timed(partial(view.rebuild, app)))
            views = list(app.views.values())
            seconds["all views"].append(timed(partial(rebuild_together, views, app)))
        decoding = [timed(lambda: _decode_all(app, log)) for _ in range(runs)]
    for name, took in seconds.items():
        rate(f"rebuild {name}", log, took, 90_000)
    rate(f"read + decrypt + validate {log:,} events, no view", log, decoding, 90_000)


def _decode_all(app: MailApplication, upto: int) -> None:
    position = 0
    with gc_paused():
        while position < upto:
            position = app.read(position, upto, (), PAGE)[-1][0]


def one_message_words(app: MailApplication, count: int) -> list[str]:
    """``count`` words each found in one message only, one per message."""
    db = app.view("messages").db
    words: dict[str, str] = {}
    for (word,) in db.execute(
        "SELECT term FROM messages_terms WHERE doc = 1 AND length(term) >= 5 "
        "AND NOT term GLOB '*[^a-z]*' ORDER BY term"
    ):
        words.setdefault(matching_ids(db, parse_query(word))[0], word)
        if len(words) == count:
            return list(words.values())
    raise AssertionError(f"only {len(words)} one-message words")


def bench_tag(runs: int, big: BigHome, samples: int = 300) -> None:
    """``tag add`` on a query matching one message (a word found in one message only)."""
    with fresh_home() as (home, keyring), opened(home, keyring) as app:
        app.execute(ImportMailbox(path=CORPUS))
        seconds = []
        for n, word in enumerate(one_message_words(app, samples + 20)):
            operation = None

            def run(word: str = word) -> None:
                nonlocal operation
                operation = app.execute(TagMessages(action="add", tag="bench", query=word))

            took = timed(run)
            assert operation is not None and operation.result["changed"] == 1, word
            if n >= 20:  # the first ones create the tag and warm the caches
                seconds.append(took)
    latency("tag add, one message (execute, views caught up)", seconds, 2.0)


def search_mix(app: MailApplication, runs: int, size: int, p50_target: float) -> None:
    """The query mix on the application's open index: each query ``5 * runs`` times."""
    app.catch_up()
    db = app.view("messages").db
    samples: list[Sample] = []
    per_query: dict[str, tuple[float, int]] = {}
    for text in SEARCHES:
        query = parse_query(text)
        total = search(db, query)["total"]
        took = [timed(partial(search, db, query)) for _ in range(5 * runs)]
        per_query[text] = (statistics.median(wall for wall, _ in took) * 1000, total)
        samples += took
    latency(f"search {size:,} messages, query mix", samples, p50_target)
    for text, (ms, total) in per_query.items():
        print(f"    {ms:7.2f} ms  {total:>7,} found  {text}")


def bench_search(runs: int, big: BigHome) -> None:
    """The query mix on the open index; then whole ``eventpile search`` processes."""
    with fresh_home(big.path) as (home, keyring), opened(home, keyring) as app:
        search_mix(app, runs, big.size, 10.0)
    with fresh_home(big.path) as (home, _keyring):
        cli(home, "search", "from:smith kernel")
        whole = [cli(home, "search", "from:smith kernel") for _ in range(10)]
        walls = [wall for wall, _ in whole]
        report(
            "search: whole `eventpile search` process",
            statistics.median(walls) * 1000,
            "ms",
            200,
            at_most=True,
            spread=_spread(walls, 1000),
            cpu=statistics.median(cpu for _, cpu in whole) * 1000,
        )
        env = {**os.environ, "EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE}
        probe = (
            "import sys; from eventpile.mail.cli import main; main(['--json', 'search', 'kernel']);"
            "print(' '.join(m for m in ('pydantic', 'eventsourcing') if m in sys.modules))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True
        ).stdout.splitlines()[-1]
        print(f"    modules a search loaded, of pydantic and eventsourcing: {loaded or 'none'}")


def chosen(
    parser: argparse.ArgumentParser, names: list[str], known: Mapping[str, object]
) -> list[str]:
    """The benchmarks named on the command line (all when none are), or a usage error."""
    unknown = set(names) - set(known)
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return names or list(known)


BENCHMARKS = {
    "import": bench_import,
    "append": bench_append,
    "rebuild": bench_rebuild,
    "tag": bench_tag,
    "search": bench_search,
}


def header(name: str) -> None:
    """The benchmark's name, the machine's load and its speed on a fixed workload
    (AES-GCM encrypt and decrypt of 400 bytes, best of 3; NOTES-eventsourcing.md has
    777k ops/s): on a shared machine, compare figures of different days by it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher, nonce, data = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(400)

    def work() -> None:
        for _ in range(20_000):
            cipher.decrypt(nonce, cipher.encrypt(nonce, data, b""), b"")

    speed = 20_000 / min(timed(work)[0] for _ in range(3))
    load = os.getloadavg()[0]
    print(
        f"-- {name} (load average {load:.1f} on {os.cpu_count()} cores; "
        f"AES-GCM 400 B: {speed / 1000:,.0f}k ops/s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--size", type=int, default=100_000, help="messages for rebuild/search")
    parser.add_argument(
        "--keep", type=Path, help="build the big home in this directory once and reuse it later"
    )
    args = parser.parse_args(argv)
    names = chosen(parser, args.names, BENCHMARKS)
    if not CORPUS.exists():
        print(f"the real corpus {CORPUS} is missing", file=sys.stderr)
        return 1
    big = BigHome(args.size, args.keep)
    try:
        for name in names:
            header(name)
            BENCHMARKS[name](args.runs, big)
    finally:
        big.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
