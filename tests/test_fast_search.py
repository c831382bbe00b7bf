"""The fast path of ``eventpile --json search``: the same answers, help and errors as
the full command line, without importing the command-line framework."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from tests.conftest import FAST, FULL, GOES_ON, eventpile_process

PASSPHRASE = "fast path passphrase"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    where = tmp_path_factory.mktemp("fast")
    home = Home(where / "home")
    mbox = write_mbox(where / "mail.mbox", 40, seed=5)
    for argv in (["init"], ["import", str(mbox)], ["tag", "add", "todo", "patch"]):
        done = eventpile_process(home, "--json", *argv, entry=FULL, passphrase=PASSPHRASE)
        assert done.returncode == 0, done.stderr
    return home


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "search", "patch"],
        ["--json", "search"],
        ["--json", "search", "-n", "3", "--offset", "2", "--sort", "oldest", "tag:todo OR fix"],
        ["--json", "search", "--threads", "--limit", "5", "-tag:todo"],
        ["--json", "search", "thread:{tag:todo}", "--sort", "newest"],
        # left to the full command line: each answer the same
        ["--json", "search", "--help"],
        ["--json", "search", "a OR"],
        ["--json", "search", "-n", "0", "x"],
        ["--json", "search", "--sort", "sideways", "x"],
        ["--json", "search", "two", "queries"],
        ["search", "patch"],
        ["--json", "tags"],
    ],
)
def test_the_fast_path_answers_as_the_full_command_line(home: Home, argv: list[str]) -> None:
    fast = eventpile_process(home, *argv, passphrase=PASSPHRASE)
    full = eventpile_process(home, *argv, entry=FULL, passphrase=PASSPHRASE)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )


def test_a_search_loads_no_command_line_framework(home: Home) -> None:
    probe = (
        f"{GOES_ON}import sys; sys.argv = ['eventpile', '--json', 'search', 'patch']\n"
        f"try:\n    {FAST}\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('typer', 'click', 'rich', 'pydantic') if m in sys.modules), "
        "file=sys.stderr)"
    )
    done = eventpile_process(home, entry=probe, passphrase=PASSPHRASE)
    assert done.returncode == 0 and '"total"' in done.stdout
    assert done.stderr.strip() == "[]"


def test_without_a_passphrase_or_a_current_index_the_full_command_line_answers(
    home: Home, tmp_path: Path
) -> None:
    asked = eventpile_process(home, "--json", "search", "patch")
    assert asked.returncode == 1 and "EVENTPILE_PASSPHRASE" in asked.stderr
    before = eventpile_process(home, "--json", "search", "patch", passphrase=PASSPHRASE)
    for view in home.path.glob("views/messages*"):
        view.unlink()  # the index is made anew by the full command line, the same
    after = eventpile_process(home, "--json", "search", "patch", passphrase=PASSPHRASE)
    assert after.returncode == 0 and after.stdout == before.stdout


def test_a_search_whose_reader_is_gone_ends_quietly(home: Home) -> None:
    """``eventpile --json search | head -c 0``: a broken pipe ends it with status 1 and
    no word (it printed what it had, and ends at once)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")}
    env |= {"EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before a byte is written
    try:
        done = subprocess.run(
            [sys.executable, "-c", FAST, "--json", "search", ""],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (1, "")
