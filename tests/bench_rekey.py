"""``eventpile rekey``: events re-encrypted per second, on SQLite and (with ``--postgres``)
PostgreSQL. Run on demand::

    .venv/bin/python -m tests.bench_rekey                # 100,000 events, SQLite
    .venv/bin/python -m tests.bench_rekey --postgres     # on a throwaway server

The log gets ``--events`` events (as in ``tests.bench_sync``), then the ``Rekey``
operation seals every one anew under the new key (read, opened, sealed, and written back
a page per transaction), after the views are keyed anew (timed apart).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from eventpile.commands.rekey import Rekey
from eventpile.mail.app import MailApplication
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from tests.bench_postgres import Databases
from tests.bench_sync import CORPUS, PASSPHRASE, events


def run(home: Home, count: int, corpus: Path) -> None:
    app = MailApplication(home, home.unlock(PASSPHRASE))
    todo = events(count, corpus)
    for start in range(0, len(todo), 500):
        app.append(todo[start : start + 500])
    app.catch_up()
    app.close()

    began = time.perf_counter()
    keyring = home.rekey(PASSPHRASE)
    views_s = time.perf_counter() - began
    app = MailApplication(home, keyring)
    began = time.perf_counter()
    operation = app.execute(Rekey())
    took = time.perf_counter() - began
    app.close()
    resealed = operation.result["resealed"]
    print(f"backend: {'PostgreSQL' if home.database else 'SQLite'}; {count:,} events")
    print(f"new key and views keyed anew: {views_s:.2f} s (scrypt included)")
    print(f"re-encrypted {resealed:,} events in {took:.2f} s: {resealed / took:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--postgres", action="store_true", help="on a throwaway PostgreSQL server instead"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eventpile-bench-rekey-"))
    corpus = CORPUS if CORPUS.exists() else write_mbox(root / "synthetic.mbox", 2000)
    if not args.postgres:
        home = Home(root / "home")
        home.init(PASSPHRASE)
        run(home, args.events, corpus)
        return
    databases = Databases(None)
    try:
        with databases.home() as (home, _):
            run(home, args.events, corpus)
    finally:
        databases.close()


if __name__ == "__main__":
    main()
