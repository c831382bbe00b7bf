"""The feed's web page, measured in a real browser: the time from an operation's commit
(in another process) to the page showing it, and the server's memory with many
operations in the log.

Run on demand, never in the test suite::

    .venv/bin/python -m tests.bench_web [--operations 10000] [--samples 200] [--postgres]

It needs Chromium (Debian's ``chromium``) and Playwright.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.bench_postgres import bench_home
from tests.conftest import PASSPHRASE
from tests.test_web import App, Chore
from tests.test_web_browser import CHROMIUM, FLAGS, SERVE, environment


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=10_000, help="in the log first")
    parser.add_argument("--samples", type=int, default=200, help="operations timed")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL")
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("no Chromium here (Debian's chromium package)")
    with ExitStack() as stack:
        where = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        home, keyring = bench_home(stack, where, args.postgres, PASSPHRASE)
        app = App(home, keyring)
        stack.callback(app.close)
        started = time.perf_counter()
        with app.deferring_catch_up():
            for n in range(args.operations):
                app.execute(Chore(title=f"old {n}"))
        app.catch_up()
        print(f"log      {args.operations:,} operations in {time.perf_counter() - started:.1f} s")

        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, "--json", "serve", "--port", "0"],
            env=environment(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stack.callback(server.wait)
        stack.callback(server.terminate)
        assert server.stdout is not None and server.stderr is not None
        line = server.stdout.readline()
        if not line:
            raise SystemExit(f"serve did not start: {server.stderr.read()}")
        served = json.loads(line)
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        stack.callback(browser.close)
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(served["open"])
        page.wait_for_selector("#live.on")
        print(f"page     opened in {(time.perf_counter() - started) * 1000:.0f} ms")

        delays = []
        for n in range(args.samples):
            operation = app.execute(Chore(title=f"new {n}"))
            committed = time.perf_counter()
            page.wait_for_selector(f"#op-{operation.id.hex}.complete", timeout=30_000)
            delays.append((time.perf_counter() - committed) * 1000)
        delays.sort()
        p50 = statistics.median(delays)
        p95 = delays[int(len(delays) * 0.95) - 1]
        print(
            f"latency  commit to page: p50 {p50:.0f} ms, p95 {p95:.0f} ms "
            f"({args.samples} operations written by another process)"
        )
        print(
            f"memory   the server: {rss_mb(server.pid):.0f} MB resident, "
            f"{args.operations + args.samples:,} operations in the log, one page open"
        )


if __name__ == "__main__":
    main()
