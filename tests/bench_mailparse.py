"""Throughput of `read_mailbox` on the real corpus and on 20,000 synthetic messages.

Run with `python -m tests.bench_mailparse`; each figure is the best of three runs.
"""

import tempfile
import time
from pathlib import Path

from eventpile.mail.mailparse import ParsedMail, read_mailbox
from eventpile.mail.synthetic import write_mbox

CORPUS = Path(__file__).resolve().parents[1].parent / "shared/data/linux-mips-2000.mbox.gz"
SYNTHETIC = 20_000
RUNS = 3


def measure(label: str, path: Path) -> None:
    """Read the whole mailbox RUNS times and print the best rate."""
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        items = list(read_mailbox(path))
        best = min(best, time.perf_counter() - start)
    parsed = sum(isinstance(item, ParsedMail) for item in items)
    size = sum(item.size for item in items if isinstance(item, ParsedMail)) / 1e6
    print(
        f"{label}: {len(items):,} messages ({parsed:,} parsed, {size:.1f} MB) "
        f"in {best:.2f} s = {len(items) / best:,.0f} msg/s"
    )


def main() -> None:
    if CORPUS.exists():
        measure("real corpus, gzip mbox", CORPUS)
    else:
        print(f"real corpus {CORPUS} not present: skipped")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mbox(Path(tmp) / "synthetic.mbox", SYNTHETIC, seed=0)
        measure("synthetic, mbox", path)


if __name__ == "__main__":
    main()
