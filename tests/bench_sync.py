"""Sync between two installations through a folder: events/s each way, bytes per event,
and a sync with nothing to do as a whole process. Run on demand::

    .venv/bin/python -m tests.bench_sync                 # 100,000 events
    .venv/bin/python -m tests.bench_sync --events 20000

Installation A's log gets ``--events`` events written directly (as in
``tests.bench``: half of them ``MessageIndexed`` of the real corpus's messages, or of
synthetic ones where it is absent, half ``MessageTagged``), then:

- *send*: A's sync writes them to the folder (read, decrypted, sealed into segments);
- *receive*: B, a second installation of the same keys, takes them (opened, sealed
  anew for its rows, appended; where each came from kept); then its views catch up
  (timed apart: indexing the messages' text is most of it, as in an import);
- *no-op*: ``eventpile sync FOLDER`` as a whole process on B, with nothing to exchange:
  with the passphrase given (scrypt included, the whole command line loaded), and
  while ``eventpile unlock``'s agent runs it; beside a bare interpreter start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from eventpile.commands.sync import Sync
from eventpile.domain.events import DomainEvent, operation_scope, uuid7
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import message_content
from eventpile.mail.mailparse import ParsedMail, read_mailbox
from eventpile.mail.message import Message, MessageTagged
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "linux-mips-2000.mbox.gz"
PASSPHRASE = "bench"
TARGET_EVENTS_S = 20_000
TARGET_NOOP_MS = 150.0


def events(count: int, corpus: Path) -> list[DomainEvent]:
    contents = [message_content(m) for m in read_mailbox(corpus) if isinstance(m, ParsedMail)]
    tag_id = uuid.uuid4()
    out: list[DomainEvent] = []
    with operation_scope(uuid7(), None):
        for i in range(count // 2):
            message_id = uuid.uuid4()
            out.append(Message.index(message_id, contents[i % len(contents)]))
            out.append(MessageTagged(originator_id=message_id, originator_version=2, tag_id=tag_id))
    return out


def process_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    """The median wall time of ``argv`` as a process, after one warm-up."""
    times = []
    for n in range(runs + 1):
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr)
        if n:
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10, help="runs of each process timing")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="eventpile-bench-sync-"))
    corpus = CORPUS if CORPUS.exists() else write_mbox(root / "synthetic.mbox", 2000)
    folder = root / "folder"
    folder.mkdir()
    first, second = Home(root / "a"), Home(root / "b")
    keys = first.init(PASSPHRASE)
    a = MailApplication(first, keys)
    todo = events(args.events, corpus)
    for start in range(0, len(todo), 500):
        a.append(todo[start : start + 500])
    a.catch_up()

    began = time.perf_counter()
    sent = a.sync(folder).result["sent"]
    send_s = time.perf_counter() - began
    size = sum(p.stat().st_size for p in folder.rglob("*.seg"))
    a.close()

    b = MailApplication(second, second.init(PASSPHRASE, keys))
    began = time.perf_counter()
    with b.deferring_catch_up():  # the sync alone: app.sync then asks the index (after_sync)
        operation = b.execute(Sync(folder=str(folder)))
    receive_s = time.perf_counter() - began
    b.catch_up()
    views_s = time.perf_counter() - began - receive_s
    received = operation.result["received"]
    b.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")}
    env.update(EVENTPILE_HOME=str(second.path), EVENTPILE_PASSPHRASE=PASSPHRASE)
    eventpile = str(Path(sys.executable).with_name("eventpile"))
    noop = process_ms([eventpile, "sync", str(folder)], env, args.runs)
    subprocess.run([eventpile, "unlock", "--for", "30m"], env=env, check=True, capture_output=True)
    try:
        served = process_ms([eventpile, "sync", str(folder)], env, args.runs)
    finally:
        subprocess.run([eventpile, "lock"], env=env, check=True, capture_output=True)
    bare = process_ms([sys.executable, "-c", "pass"], env, args.runs)

    print(f"events: {args.events:,} in A's log ({corpus.name})")
    print(
        f"send    {sent:>8,} events  {send_s:6.2f} s  {sent / send_s:>9,.0f} events/s"
        f"  (target >= {TARGET_EVENTS_S:,})"
    )
    print(
        f"receive {received:>8,} events  {receive_s:6.2f} s  {received / receive_s:>9,.0f} "
        f"events/s into the log  (target >= {TARGET_EVENTS_S:,})"
    )
    print(
        f"        then the views caught up: {views_s:6.2f} s  "
        f"({received / (receive_s + views_s):,.0f} events/s in all; the message index's cost)"
    )
    print(f"folder  {size / 1e6:8.1f} MB of segments, {size / max(sent, 1):,.0f} bytes per event")
    print(f"no-op sync as a process: {noop:.0f} ms p50, the passphrase given")
    print(f"  with `eventpile unlock`: {served:.0f} ms p50 (target <= {TARGET_NOOP_MS:.0f})")
    print(f"python -c pass:          {bare:.0f} ms p50")


if __name__ == "__main__":
    main()
