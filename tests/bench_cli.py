"""Whole-process latency of the command line: what a person or a script waits for.

Run on demand, never in the test suite::

    .venv/bin/python -m tests.bench_cli            # 20 runs per figure
    .venv/bin/python -m tests.bench_cli --runs 50

eventpile runs as a user has it: the repository's wheel, installed into a throwaway
virtualenv (:mod:`tests.installed`); ``--editable`` runs this environment's instead,
whose editable install adds a hook (setuptools' finder) to every process's start-up.
A throwaway home gets ``eventpile init`` and ``eventpile import`` of the real corpus
(``../shared/data/linux-mips-2000.mbox.gz``; the seeded synthetic corpus when it is
absent). Then each figure times whole processes (wall clock, p50 and p90 of
``--runs`` runs after one warm-up): a bare Python, ``import eventpile``, ``eventpile
--json search`` of three queries without the agent (the passphrase, hence scrypt, on
every call) and with it (``eventpile unlock``), and ``eventpile tag add`` of one
message. notmuch and mu, when they are on PATH, index the same mail and run the
same searches beside ours.

The processes may write Python's bytecode caches (``PYTHONDONTWRITEBYTECODE`` is
dropped), as an installed program has them. The machine may be shared: the CPU time
of each process (p50) is printed too, less disturbed by other work than wall time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import mailbox
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from eventpile.mail.synthetic import write_mbox
from tests.installed import build_wheel, install

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "linux-mips-2000.mbox.gz"
PASSPHRASE = "bench"
SYNTHETIC = 2000
"""Messages of the synthetic corpus, when the real one is absent (as many)."""
TARGETS = {"search, agent": 40.0, "search, passphrase": 100.0, "tag add, agent": 60.0}
"""p50 targets (ms) of the rows whose label starts so."""

Env = Mapping[str, str]
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
Samples = tuple[list[float], list[float]]
"""Wall times and CPU times, in milliseconds."""


def run(argv: Sequence[str], env: Env) -> str:
    """Run ``argv``; its stdout (a failure stops the benchmark with its stderr)."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def timed(
    argv: Sequence[str], env: Env, runs: int, after: Callable[[], object] | None = None
) -> Samples:
    """Wall and CPU times (ms) of ``runs`` runs of ``argv`` after a warm-up; ``after``
    runs after each, untimed."""
    walls, cpus = [], []
    for n in range(runs + 1):
        start, cpu = time.perf_counter(), _children_cpu()
        run(argv, env)
        if n:
            walls.append((time.perf_counter() - start) * 1000)
            cpus.append((_children_cpu() - cpu) * 1000)
        if after is not None:
            after()
    return walls, cpus


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def row(label: str, samples: Samples) -> None:
    walls, cpus = sorted(samples[0]), samples[1]
    p50, p90 = statistics.median(walls), walls[min(len(walls) - 1, int(len(walls) * 0.9))]
    line = f"{label:<44} {p50:8.1f} {p90:8.1f} {statistics.median(cpus):8.1f}"
    target = next((t for prefix, t in TARGETS.items() if label.startswith(prefix)), None)
    if target is not None:
        line += f"   target p50 <= {target:g} ms  {'PASS' if p50 <= target else 'MISS'}"
    print(line, flush=True)


def one_message(eventpile: list[str], env: Env) -> str:
    """A query that matches exactly one message: the subject of a patch, as a phrase."""
    found = json.loads(run([*eventpile, "--json", "search", "-n", "100", "subject:patch"], env))
    for result in found["results"]:
        query = 'subject:"' + result["subject"].replace('"', " ") + '"'
        if json.loads(run([*eventpile, "--json", "search", "-n", "1", query], env))["total"] == 1:
            return query
    raise RuntimeError("no patch of the corpus has a subject of its own")


def bench_eventpile(
    bin_dir: Path, home: Path, mbox: Path, queries: Sequence[str], runs: int
) -> None:
    """The figures of the ``eventpile`` and ``python`` of ``bin_dir``, in a new ``home``."""
    env = {**ENV, "EVENTPILE_HOME": str(home), "EVENTPILE_PASSPHRASE": PASSPHRASE}
    eventpile = [str(bin_dir / "eventpile")]
    python = str(bin_dir / "python")
    run([*eventpile, "init"], env)
    start = time.perf_counter()
    run([*eventpile, "import", str(mbox)], env)
    print(f"(setup) eventpile import: {time.perf_counter() - start:.1f} s", flush=True)
    single = one_message(eventpile, env)
    run([*eventpile, "tag", "add", "bench", "subject:patch"], env)  # the tag exists
    run([*eventpile, "tag", "remove", "bench", single], env)
    print(
        f"{'(whole processes, wall and CPU time)':<44} {'p50 ms':>8} {'p90 ms':>8} {'CPU p50':>8}"
    )
    row("python -c pass", timed([python, "-c", "pass"], env, runs))
    row("python -c 'import eventpile'", timed([python, "-c", "import eventpile"], env, runs))
    for query in queries:
        row(
            f"search, passphrase: {query}",
            timed([*eventpile, "--json", "search", query], env, runs),
        )

    tag_add = [*eventpile, "--json", "tag", "add", "bench", single]
    untag = partial(run, [*eventpile, "tag", "remove", "bench", single], env)
    row("tag add (one message), passphrase", timed(tag_add, env, runs, untag))
    unlocked = subprocess.run(
        [*eventpile, "unlock", "--for", "30m"], env=env, capture_output=True, text=True
    )
    if unlocked.returncode:
        print(f"(no agent: `eventpile unlock` says {unlocked.stderr.strip()!r})")
        return
    agent = {k: v for k, v in env.items() if k != "EVENTPILE_PASSPHRASE"}
    try:
        for query in queries:
            row(
                f"search, agent: {query}",
                timed([*eventpile, "--json", "search", query], agent, runs),
            )
        row("tag add, agent (one message)", timed(tag_add, agent, runs, untag))
    finally:
        run([*eventpile, "lock"], env)


def maildir_of(mbox: Path, where: Path) -> Path:
    """The messages of ``mbox`` (gzipped or not) as a Maildir, for notmuch and mu."""
    plain = where / "corpus.mbox"
    with gzip.open(mbox) if mbox.suffix == ".gz" else mbox.open("rb") as src, plain.open("wb") as f:
        shutil.copyfileobj(src, f)
    target = mailbox.Maildir(where / "Maildir", create=True)
    for message in mailbox.mbox(plain):
        target.add(message)
    plain.unlink()
    return where / "Maildir"


def bench_notmuch(tmp: Path, maildir: Path, queries: Sequence[str], runs: int) -> None:
    config = tmp / "notmuch-config"
    config.write_text(f"[database]\npath={maildir}\n[new]\ntags=inbox;\n")
    env = {**ENV, "NOTMUCH_CONFIG": str(config)}
    run(["notmuch", "new", "--quiet"], env)
    for query in queries:
        argv = ["notmuch", "search", "--format=json", "--limit=20", query]
        row(f"notmuch search: {query}", timed(argv, env, runs))
    single = run(["notmuch", "search", "--output=messages", "--limit=1", "*"], env).strip()
    untag = partial(run, ["notmuch", "tag", "-bench", "--", single], env)
    row(
        "notmuch tag (one message)",
        timed(["notmuch", "tag", "+bench", "--", single], env, runs, untag),
    )


def bench_mu(tmp: Path, maildir: Path, queries: Sequence[str], runs: int) -> None:
    muhome = f"--muhome={tmp / 'mu'}"
    run(["mu", "init", muhome, f"--maildir={maildir}"], ENV)
    run(["mu", "index", muhome, "--quiet"], ENV)
    for query in queries:
        argv = ["mu", "find", muhome, "--maxnum=20", query]
        row(f"mu find: {query}", timed(argv, ENV, runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench_cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=20, help="runs per figure (default 20)")
    parser.add_argument(
        "--editable",
        action="store_true",
        help="run this environment's eventpile (an editable install), not the wheel's",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"-- whole processes (load average {load:.1f} on {os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="eventpile-bench-cli-") as name:
        tmp = Path(name)
        if CORPUS.exists():
            mbox, queries = CORPUS, ("kernel", "subject:patch", "from:ralf")
            print(f"corpus: {CORPUS.name}")
        else:
            mbox = write_mbox(tmp / "synthetic.mbox", SYNTHETIC, seed=1)
            queries = ("kernel", "subject:patch", "from:alice")
            print(f"corpus: {CORPUS} is absent: {SYNTHETIC:,} synthetic messages instead")
        if args.editable:
            bin_dir = Path(sys.executable).parent
            print("eventpile: this environment's (editable install)")
        else:
            bin_dir = install(build_wheel(tmp), tmp / "installed")
            print("eventpile: the repository's wheel, installed in a new virtualenv")
        bench_eventpile(bin_dir, tmp / "home", mbox, queries, args.runs)
        others = {"notmuch": bench_notmuch, "mu": bench_mu}
        maildir = None
        for tool, bench in others.items():
            if shutil.which(tool) is None:
                print(f"({tool} is not on PATH: no figures of it)")
                continue
            maildir = maildir or maildir_of(mbox, tmp)
            bench(tmp, maildir, queries, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
