"""The feed's web page in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, against ``eventpile serve`` running as a process of its own.

Opened with the token, refused without it; an import run from the command line shows
its progress in place until it completes, with no reload; a question (a duplicate
import's too) answered by its button starts its second stage; a scheduled send
cancelled; a tag change undone and the search's count changing; a search tagging what
it found; markup from the log shown as text; a forged POST without the CSRF token
refused. Screenshots of the feed and the search go to the test's temporary folder.
Skipped, with one line, where Chromium or Playwright is absent (``.ci/run`` installs
Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.send import SendMail
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from tests.conftest import FAST, PASSPHRASE
from tests.test_web import MARKUP, App, Chore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here (Debian's chromium package: .ci/run installs it)"
)
ROOT = Path(__file__).resolve().parents[1]
SERVE = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
    "from eventpile.commands.cli.core import command_line; from tests.test_web import App; "
    "command_line(App, about='the web tests')()"
)
"""``eventpile`` with this module's test application (its ``Chore`` command)."""
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000


def environment(home: Home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")}
    return {**env, "EVENTPILE_HOME": str(home.path), "EVENTPILE_PASSPHRASE": PASSPHRASE}


@pytest.fixture
def served(home: Home, keyring: Any, backend: str) -> Iterator[dict[str, str]]:
    """``eventpile serve`` on the home, in a process of its own: its printed addresses."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--json", "serve", "--port", "0"],
        env=environment(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"serve did not start: {process.stderr.read()}")
    yield json.loads(line)
    process.terminate()
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, served: dict[str, str]) -> Any:
    """The feed, opened with the token; every confirmation answered yes."""
    opened = browser.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())
    opened.goto(served["open"])
    opened.wait_for_selector("#live.on", timeout=WAIT_MS)
    opened.evaluate("window.stillThisPage = true")
    return opened


@pytest.fixture
def app(home: Home, keyring: Any, backend: str) -> Iterator[App]:
    """The same home from this process: another process than the server's (on PostgreSQL,
    as another machine's worker would be)."""
    application = App(home, keyring)
    yield application
    application.close()


def entry(page: Any, operation: Any) -> Any:
    return page.locator(f"#op-{operation.hex}")


def test_the_token_opens_the_page_and_nothing_else_does(
    browser: Any, served: dict[str, str], tmp_path: Path
) -> None:
    stranger = browser.new_page()
    stranger.goto(served["address"])
    assert "open the address" in stranger.locator(".error").inner_text()
    assert stranger.locator(".operation").count() == 0
    mine = browser.new_page()
    mine.goto(served["open"])
    assert mine.url == served["address"]  # the token left the address bar
    mine.wait_for_selector("#live.on", timeout=WAIT_MS)
    other = browser.new_context().new_page()
    other.goto(served["open"])  # the token works once
    assert "used already" in other.locator(".error").inner_text()


def test_an_import_in_a_terminal_shows_its_progress_in_place(
    page: Any, home: Home, tmp_path: Path
) -> None:
    mbox = write_mbox(tmp_path / "big.mbox", 4000)
    importing = subprocess.Popen(
        [sys.executable, "-c", FAST, "--json", "import", str(mbox)],
        env=environment(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = page.wait_for_selector("li.operation.running progress", timeout=WAIT_MS)
    operation = running.evaluate("node => node.closest('li').id")
    seen = {page.locator(f"#{operation} progress").get_attribute("value")}
    out, err = importing.communicate(timeout=300)
    assert importing.returncode == 0, err
    done = json.loads(out)["operation_id"]
    assert operation == f"op-{done}"
    page.wait_for_selector(f"#{operation}.complete", timeout=WAIT_MS)
    assert page.locator(f"#{operation}").count() == 1  # replaced, not added
    assert "Imported 4,000 messages" in page.locator(f"#{operation}").inner_text()
    assert page.evaluate("window.stillThisPage") is True  # no reload
    assert seen != {None}
    page.screenshot(path=str(tmp_path / "feed.png"), full_page=True)


def test_a_question_is_answered_by_its_button(page: Any, app: App, tmp_path: Path) -> None:
    asked = app.execute(Chore(behaviour="ask"))
    entry(page, asked.id).get_by_role("button", name="left").click()
    page.wait_for_selector(f"#op-{asked.id.hex}.complete", timeout=WAIT_MS)
    page.wait_for_selector("li.operation.complete >> text=Chore left done", timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "question.png"), full_page=True)


def test_a_duplicate_import_question_is_answered_by_its_button(
    page: Any, app: App, tmp_path: Path
) -> None:
    """Known messages whose content changed: the import asks, the button answers, and
    the operation the answer started shows."""
    from tests.test_web import mailbox

    app.execute(ImportMailbox(path=mailbox(tmp_path / "a.mbox", ["first", "second"])))
    asked = app.execute(ImportMailbox(path=mailbox(tmp_path / "b.mbox", ["first!", "second"])))
    assert asked.status.value == "waiting"
    entry(page, asked.id).get_by_role("button", name="replace").click()
    page.wait_for_selector(f"#op-{asked.id.hex}.complete", timeout=WAIT_MS)
    page.wait_for_selector("li.operation.complete >> text=Replaced 1 messages", timeout=WAIT_MS)


def test_a_scheduled_send_is_cancelled(page: Any, app: App) -> None:
    send = SendMail.compose("me@example.org", ["bob@example.org"], "Hi", "Later.")
    queued = app.submit(send, run_after=app.clock() + timedelta(hours=1))
    shown = entry(page, queued.id)
    assert "Send a message to 1 recipient" in shown.inner_text()
    shown.get_by_role("button", name="Cancel").click()
    page.wait_for_selector(f"#op-{queued.id.hex}.cancelled", timeout=WAIT_MS)
    assert app.load(type(queued), queued.id).status.value == "cancelled"  # type: ignore[union-attr]


def test_a_tag_change_is_undone_and_the_counts_change(page: Any, app: App, tmp_path: Path) -> None:
    app.execute(ImportMailbox(path=write_mbox(tmp_path / "m.mbox", 5)))
    tagged = app.execute(TagMessages(action="add", tag="red", query="*"))

    def count() -> str:
        page.get_by_role("link", name="Search").click()
        page.get_by_label("query").fill("tag:red")
        page.get_by_role("button", name="Search").click()
        found = str(page.locator(".total").inner_text())
        page.get_by_role("link", name="Feed").click()
        page.wait_for_selector("#live.on", timeout=WAIT_MS)
        return found

    assert count() == "5 messages"
    entry(page, tagged.id).get_by_role("button", name="Undo").click()
    page.wait_for_selector(f"#op-{tagged.id.hex}.undone", timeout=WAIT_MS)
    page.wait_for_selector("li.operation >> text=Undid", timeout=WAIT_MS)
    assert count() == "0 messages"


def test_markup_from_the_log_is_shown_as_text(page: Any, app: App) -> None:
    done = app.execute(Chore(title=MARKUP))
    shown = page.wait_for_selector(f"#op-{done.id.hex}.complete", timeout=WAIT_MS)
    assert MARKUP in shown.inner_text()
    assert page.locator("#feed img").count() == 0


def test_a_forged_post_is_refused(page: Any, app: App) -> None:
    queued = app.submit(Chore(title="kept"), run_after=app.clock() + timedelta(hours=1))
    status = page.evaluate(
        """async (operation) => (await fetch(`/operations/${operation}/cancel`,
             {method: "POST", body: new URLSearchParams({csrf: "forged"})})).status""",
        queued.id.hex,
    )
    assert status == 403
    assert app.load(type(queued), queued.id).status.value == "scheduled"  # type: ignore[union-attr]


def test_search_then_tag_what_it_found(page: Any, app: App, tmp_path: Path) -> None:
    from tests.test_web import mailbox

    app.execute(ImportMailbox(path=mailbox(tmp_path / "m.mbox", [MARKUP, "weekly report"])))
    page.get_by_role("link", name="Search").click()
    page.get_by_label("query").fill("from:ann")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("table.results")
    assert page.locator("table.results tbody tr").count() == 2
    assert MARKUP in page.locator("table.results").inner_text()  # as text
    assert page.locator("table.results img").count() == 0
    assert "from:ann" not in page.url  # the query was posted
    page.get_by_label("tag").fill("work")
    page.get_by_role("button", name="Add to all").click()
    page.wait_for_selector(".notice >> text=Tagged 2 messages")
    assert page.locator("table.results .tag >> text=work").count() == 2
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    page.get_by_role("link", name="Feed").click()
    page.wait_for_selector("li.operation.complete >> text=Tagged 2 messages")
