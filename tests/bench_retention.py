"""Two years of daily use, compressed in time, with and without a daily purge. Run on
demand::

    .venv/bin/python -m tests.bench_retention              # 730 days
    .venv/bin/python -m tests.bench_retention --days 200   # shorter

Each day, on two homes with the same keys and the same commands: an import of 100
new (synthetic) messages, 200 tag changes on messages of the last week, 20 undos and
5 sends (to an SMTP server on loopback that accepts everything); then the clock moves
a day. One home runs ``purge --older-than 90d`` at the end of each day. Printed every
30 days: the bytes on disk of each (the log file and the views), and how much of the
purged one's log is operation history. At the end: the time of the last purge and of
a rebuild of every view after it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import tempfile
import time
from pathlib import Path

from aiosmtpd.controller import Controller

from eventpile.commands.retention import Purge
from eventpile.commands.undo import Undo
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.send import SendMail
from eventpile.mail.synthetic import write_mbox
from eventpile.projections.base import rebuild_together
from eventpile.store.home import Home
from tests.test_operations import Clock
from tests.test_send import free_port

PASSPHRASE = "bench"
IMPORTS, TAGS, UNDOS, SENDS = 100, 200, 20, 5


class Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def on_disk(home: Home) -> tuple[int, int]:
    """The bytes of the log file (its write-ahead log written into it) and of the views'
    files (their write-ahead logs left out: they are written into them at a checkpoint)."""
    db = sqlite3.connect(home.events_db)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.close()
    views = sum(f.stat().st_size for f in home.views.glob("*.db"))
    return home.events_db.stat().st_size, views


def history_share(home: Home) -> tuple[int, int]:
    """Bytes of operation records, and of all events, in the log."""
    db = sqlite3.connect(f"file:{home.events_db}?mode=ro", uri=True)
    try:
        ops, total = db.execute(
            "SELECT sum(CASE WHEN topic LIKE '%domain.operation:%' THEN length(state) END), "
            "sum(length(state)) FROM stored_events"
        ).fetchone()
        return int(ops or 0), int(total or 0)
    finally:
        db.close()


def a_day(
    app: MailApplication, day: int, mbox: Path, recent: list[str], rng: random.Random
) -> None:
    app.execute(ImportMailbox(path=mbox))
    for n in range(TAGS):  # a tag added to a message, then another message's taken off
        action = "add" if n % 2 == 0 else "remove"
        app.execute(
            TagMessages(action=action, tag=f"tag{n // 2 % 10}", query=f"id:{rng.choice(recent)}")
        )
        if n % (TAGS // UNDOS) == TAGS // UNDOS - 1:
            app.execute(Undo())
    for n in range(SENDS):
        app.execute(
            SendMail.compose("me@example.org", ["you@example.org"], f"day {day} {n}", "hello")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--horizon", default="90d")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eventpile-bench-retention-"))
    port = free_port()
    smtp = Controller(Sink(), hostname="127.0.0.1", port=port)
    smtp.start()
    os.environ["EVENTPILE_SMTP"] = f"127.0.0.1:{port}"
    clock = Clock()
    purged_home, kept_home = Home(root / "purged"), Home(root / "kept")
    keyring = purged_home.init(PASSPHRASE)
    kept_home.path.mkdir()
    kept_home.views.mkdir()
    kept_home.key_file.write_bytes(purged_home.key_file.read_bytes())
    purged = MailApplication(purged_home, keyring, clock=clock)
    kept = MailApplication(kept_home, keyring, clock=clock)
    rng_purged, rng_kept = random.Random(1), random.Random(1)
    recent: list[str] = []
    purge = Purge(older_than=args.horizon)
    print(
        f"{'day':>5} {'log, purged':>12} {'views':>10} {'log, kept':>12} {'views':>10} "
        f"{'history in purged log':>22} {'s/day':>6}",
        flush=True,
    )
    began = time.perf_counter()
    last_purge_s = 0.0
    for day in range(1, args.days + 1):
        mbox = write_mbox(root / "day.mbox", IMPORTS, seed=day)
        ids = re.findall(r"^Message-ID: <([^>]+)>", mbox.read_text(errors="replace"), re.M)
        recent = (recent + ids)[-7 * IMPORTS :]
        day_began = time.perf_counter()
        a_day(purged, day, mbox, recent, rng_purged)
        a_day(kept, day, mbox, recent, rng_kept)
        took = time.perf_counter()
        purged.purge(purge)
        last_purge_s = time.perf_counter() - took
        clock.advance(days=1)
        if day % 30 == 0 or day == args.days:
            log_p, views_p = on_disk(purged_home)
            log_k, views_k = on_disk(kept_home)
            ops, total = history_share(purged_home)
            print(
                f"{day:>5} {log_p / 1e6:>10.1f}MB {views_p / 1e6:>8.1f}MB {log_k / 1e6:>10.1f}MB "
                f"{views_k / 1e6:>8.1f}MB {ops / 1e6:>9.1f} of {total / 1e6:>6.1f}MB "
                f"{time.perf_counter() - day_began:>6.1f}",
                flush=True,
            )
    print(f"\nlast purge: {last_purge_s:.2f} s (with its VACUUM of the log)")
    took = time.perf_counter()
    reports = rebuild_together(list(purged.views.values()), purged)
    print(
        f"rebuild of every view after it: {time.perf_counter() - took:.1f} s "
        f"({sum(r.events for r in reports.values()) // len(reports):,} events)"
    )
    print(f"whole run: {time.perf_counter() - began:.0f} s; homes in {root}")
    purged.close()
    kept.close()
    smtp.stop()


if __name__ == "__main__":
    main()
