"""Benchmarks of undo and redo (issue 4): each figure printed beside its target.

Run on demand, never in the test suite::

    .venv/bin/python -m tests.bench_undo                  # 10,000 messages, 3 runs (~2 minutes)
    .venv/bin/python -m tests.bench_undo --size 2000 --runs 5

The target: undoing one operation that wrote 10,000 events takes at most 1 s end to
end, the views caught up included (``Eventpile.execute(Undo())`` returns once they
have). Two homes are built once through the real command path and copied for each
run: ``size`` synthetic messages imported (one operation of ``size`` events), and the
same plus one ``tag add`` of every message (``size`` + 1 events).

Figures: wall seconds (median, spread in brackets) and, beside them, the CPU seconds
of this process: the machine is shared, so a wall time far above its CPU time was
spent waiting for another process.

- ``undo tag``: undo of the tagging, right after it: every event is still the last of
  its stream, so each is reverted by its inverse, without loading an aggregate;
- ``redo tag``: redo of that undo (the same, the other way);
- ``undo tag again``: undo after undo and redo (it reverts the redo);
- ``undo import``: undo of the import, right after it (10,000 removals, each carrying
  its message's content);
- ``undo import (tagged since)``: undo of the import after the tagging: every message
  has changed since, so the messages' states are loaded (together, first) to see what
  is still in effect;
- ``eventpile undo``: the tagging undone by the whole command-line process.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eventpile.commands.base import Command
from eventpile.commands.undo import Redo, Undo
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from tests.bench import PASSPHRASE, Sample, cli, header, opened, report, timed

TARGET_S = 1.0


@contextmanager
def copy_of(home: Path) -> Iterator[MailApplication]:
    """The application on a fresh copy of ``home``, its views current."""
    with tempfile.TemporaryDirectory(prefix="eventpile-bench-undo-") as tmp:
        shutil.copytree(home, Path(tmp) / "home")
        copy = Home(Path(tmp) / "home")
        with opened(copy, copy.unlock(PASSPHRASE)) as app:
            app.catch_up()
            yield app


def figure(label: str, samples: list[Sample], target: float | None) -> None:
    walls, cpus = [w for w, _ in samples], [c for _, c in samples]
    spread = f"[{min(walls):.2f}..{max(walls):.2f}, cpu {statistics.median(cpus):.2f} s]"
    report(label, statistics.median(walls), "s", target, at_most=True, spread=spread)


def build(directory: Path, size: int) -> tuple[Path, Path]:
    """The imported home and the imported-and-tagged home."""
    mbox = write_mbox(directory / "synthetic.mbox", size, seed=4)
    imported, tagged = directory / "imported", directory / "tagged"
    home = Home(imported)
    with opened(home, home.init(PASSPHRASE)) as app:
        app.execute(ImportMailbox(path=mbox))
    shutil.copytree(imported, tagged)
    home = Home(tagged)
    with opened(home, home.unlock(PASSPHRASE)) as app:
        app.execute(TagMessages(action="add", tag="all", query=""))
    mbox.unlink()
    return imported, tagged


def run(size: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="eventpile-bench-undo-base-") as tmp:
        imported, tagged = build(Path(tmp), size)
        samples: dict[str, list[Sample]] = {}

        def sample(
            label: str, home: Path, *before: Command, action: Callable[[MailApplication], object]
        ) -> None:
            with copy_of(home) as app:
                for command in before:
                    app.execute(command)
                samples.setdefault(label, []).append(timed(lambda: action(app)))

        for _ in range(runs):
            sample("undo tag", tagged, action=lambda app: app.execute(Undo()))
            sample("redo tag", tagged, Undo(), action=lambda app: app.execute(Redo()))
            sample("undo tag again", tagged, Undo(), Redo(), action=lambda a: a.execute(Undo()))
            sample("undo import", imported, action=lambda app: app.execute(Undo()))
            sample(
                "undo import (tagged since)",
                tagged,
                action=lambda app: app.execute(Undo(operation_id=_first(app))),
            )
            samples.setdefault("eventpile undo (process)", []).append(_cli_undo(tagged))
        for label, values in samples.items():
            figure(f"{label}, {size:,} messages", values, TARGET_S if size == 10_000 else None)


def _first(app: MailApplication) -> uuid.UUID:
    """The first operation: the import."""
    from eventpile.projections.operations import recent

    return uuid.UUID(recent(app.view("operations").db, 100)[-1]["id"])


def _cli_undo(home: Path) -> Sample:
    """Wall and CPU (of the child) seconds of ``eventpile --json undo`` on a copy of ``home``."""
    with tempfile.TemporaryDirectory(prefix="eventpile-bench-undo-cli-") as tmp:
        shutil.copytree(home, Path(tmp) / "home")
        return cli(Home(Path(tmp) / "home"), "undo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench_undo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=int, default=10_000, help="messages (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    args = parser.parse_args(argv)
    header("undo")
    run(args.size, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
