"""Forgetting people, measured: what per-person sealing costs an import, what one
forgetting takes (its views made anew), and what the key file and a key's derivation
cost as people are forgotten.

Run on demand, never in the test suite::

    .venv/bin/python -m tests.bench_forget [--forget 20] [--postgres]

It imports the real corpus (``../shared/data/linux-mips-2000.mbox.gz``) into a new
home, then forgets its most prolific sender and ``--forget`` more, one at a time.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from email.utils import parseaddr
from pathlib import Path

from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.query import count, parse_query
from eventpile.store.people import Tree
from tests.bench_postgres import bench_home
from tests.conftest import CORPUS, PASSPHRASE


def senders(app: MailApplication) -> list[str]:
    """The senders of the index, the most prolific first."""
    rows = app.current("messages").execute("SELECT sender FROM messages")
    found = Counter(parseaddr(sender)[1].lower() for (sender,) in rows)
    return [address for address, _ in found.most_common() if "@" in address]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", type=int, default=20, help="people forgotten one by one")
    parser.add_argument("--postgres", action="store_true", help="on a throwaway PostgreSQL")
    args = parser.parse_args()
    if not CORPUS.exists():
        raise SystemExit(f"the corpus is not at {CORPUS}")
    with ExitStack() as stack:
        where = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        mbox = where / "corpus.mbox"
        mbox.write_bytes(gzip.decompress(CORPUS.read_bytes()))
        home, keyring = bench_home(stack, where, args.postgres, PASSPHRASE)
        app = MailApplication(home, keyring)
        stack.callback(app.close)

        started = time.perf_counter()
        imported = app.execute(ImportMailbox(path=mbox))
        took = time.perf_counter() - started
        messages = count(app.current("messages"), parse_query("*"))
        print(f"import   {messages:,} messages in {took:.2f} s: {messages / took:,.0f} msg/s")
        print(f"         ({imported.message})")

        people = senders(app)
        top = people[0]
        theirs = count(app.current("messages"), parse_query(f'from:"{top}"'))
        size = home.key_file.stat().st_size
        started = time.perf_counter()
        app.forget(top)
        took = time.perf_counter() - started
        print(
            f"forget   the top sender ({theirs:,} messages) in {took:.2f} s, "
            "the index made anew from the log"
        )
        times = []
        for who in people[1 : 1 + args.forget]:
            started = time.perf_counter()
            app.forget(who)
            times.append(time.perf_counter() - started)
        if times:
            print(
                f"forget   {len(times)} more, one at a time: {statistics.median(times):.2f} s "
                f"each (median; min {min(times):.2f}, max {max(times):.2f})"
            )
        forgotten = 1 + len(times)
        grown = home.key_file.stat().st_size - size
        print(
            f"key file {size:,} bytes before, {grown / forgotten:,.0f} bytes more per person "
            f"forgotten ({forgotten} forgotten)"
        )
        tree = Tree.from_bytes(home.unlock(PASSPHRASE).people_tree())
        leaf = app.people.current_id(people[-1])
        started = time.perf_counter()
        for _ in range(1000):
            tree.key(leaf)
        per = (time.perf_counter() - started) / 1000
        print(f"derive   one person's key: {per * 1e6:.0f} µs ({len(tree.nodes):,} tree nodes)")


if __name__ == "__main__":
    main()
