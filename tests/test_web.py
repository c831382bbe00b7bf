"""The feed's web page (``eventpile serve``), request by request: who may see it (the
one-time token, the session, the host), the CSRF token and the origin of every form,
the Content-Security-Policy of every response, every value escaped, private data only
on request and never in a URL, and the buttons as the command line's commands (the
same operations, the same refusals). In a real browser: tests/test_web_browser.py."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal

import pytest
from starlette.testclient import TestClient

from eventpile import Command, Context, DomainError, Outcome, Private, handles
from eventpile.commands.web import COOKIE, Web
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from eventpile.store.keys import Keyring

TOKEN = "the-one-time-token"
MARKUP = '<img src=x onerror="alert(1)">'


class Chore(Command):
    """A command whose public title goes into the feed as it is (markup included)."""

    title: str = "chore"
    behaviour: Literal["ok", "ask", "refuse", "crash"] = "ok"
    secret: Annotated[str, Private] = "hush"

    def describe(self) -> str:
        return f"Chore {self.title}"


@handles(Chore)
def run_chore(command: Chore, ctx: Context) -> Outcome:
    if command.behaviour == "refuse":
        raise DomainError(f"no chore named {command.title}")
    if command.behaviour == "crash":
        raise RuntimeError(f"broken by {command.secret}")
    if command.behaviour == "ask":
        ctx.ask("Which way?", {"left": Chore(title="left"), "right": None})
    return Outcome(f"Chore {command.title} done", {"n": 1}, {"secret": command.secret})


class App(MailApplication):
    handlers = (*MailApplication.handlers, run_chore)


@pytest.fixture
def page(home: Home, keyring: Keyring, backend: str) -> Iterator[tuple[TestClient, App]]:
    """A client of the page, logged in, and an application beside it (another process)."""
    web = Web(lambda: App(home, keyring), TOKEN, {"testserver"})
    other = App(home, keyring)
    with TestClient(web.asgi(), follow_redirects=False) as client:
        opened = client.get("/", params={"token": TOKEN})
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        yield client, other
    other.close()


def csrf(client: TestClient) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]+)">', client.get("/").text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def status(app: App, operation: uuid.UUID) -> str:
    return str(
        app.current("feed")
        .execute("SELECT status FROM feed WHERE id = ?", (operation.hex,))
        .fetchone()[0]
    )


def test_the_token_opens_one_session_once(home: Home, keyring: Keyring) -> None:
    web = Web(lambda: App(home, keyring), TOKEN, {"testserver"})
    with TestClient(web.asgi(), follow_redirects=False) as first:
        wrong = first.get("/", params={"token": "not-it"})
        assert wrong.status_code == 403 and COOKIE not in wrong.cookies
        opened = first.get("/", params={"token": TOKEN})
        assert opened.status_code == 303
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert first.get("/").status_code == 200
        second = TestClient(web.asgi(), follow_redirects=False)  # another browser
        again = second.get("/", params={"token": TOKEN})
        assert again.status_code == 403 and "used already" in again.text
        assert second.get("/").status_code == 403


def test_without_the_session_nothing_is_shown_or_done(
    page: tuple[TestClient, App], home: Home, keyring: Keyring
) -> None:
    _, app = page
    done = app.execute(Chore())
    web = Web(lambda: App(home, keyring), TOKEN, {"testserver"})
    with TestClient(web.asgi(), follow_redirects=False) as stranger:  # its token unused
        end = app.max_position()
        for response in (
            stranger.get("/"),
            stranger.get("/events"),
            stranger.get(f"/operations/{done.id.hex}/private"),
            stranger.post(f"/operations/{done.id.hex}/undo", data={"csrf": "x"}),
        ):
            assert response.status_code == 403
            assert "hush" not in response.text and "Chore" not in response.text
        assert app.max_position() == end


def test_another_host_name_is_refused(page: tuple[TestClient, App]) -> None:
    """A page of another site whose name was rebound to this machine's address."""
    client, _ = page
    assert client.get("/", headers={"host": "evil.example:8765"}).status_code == 403


def test_every_response_carries_the_policy(page: tuple[TestClient, App]) -> None:
    client, _ = page
    for path in ("/", "/static/feed.js", "/nowhere"):
        policy = client.get(path).headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    page_html = client.get("/").text
    assert "<script>" not in page_html and " style=" not in page_html  # nothing inline


def test_markup_from_the_log_is_text(page: tuple[TestClient, App]) -> None:
    client, app = page
    app.execute(Chore(title=MARKUP))
    shown = client.get("/").text
    assert MARKUP not in shown
    assert "Chore &lt;img src=x onerror=&quot;alert(1)&quot;&gt; done" in shown


def test_private_data_is_fetched_on_request_and_never_in_the_page(
    page: tuple[TestClient, App],
) -> None:
    client, app = page
    done = app.execute(Chore(secret="the private value"))
    shown = client.get("/").text
    assert "the private value" not in shown and "hush" not in shown
    private = client.get(f"/operations/{done.id.hex}/private").json()
    assert private["private_result"] == {"secret": "the private value"}
    assert private["private_args"] == {"secret": "the private value"}
    assert client.get(f"/operations/{uuid.uuid4().hex}/private").status_code == 404


def test_a_form_without_the_csrf_token_or_from_elsewhere_is_refused(
    page: tuple[TestClient, App],
) -> None:
    client, app = page
    queued = app.submit(Chore(), run_after=app.clock() + timedelta(hours=1))
    token, end = csrf(client), app.max_position()
    for data, headers in (
        ({}, {}),
        ({"csrf": "forged"}, {}),
        ({"csrf": token}, {"origin": "http://evil.example"}),
    ):
        refused = client.post(f"/operations/{queued.id.hex}/cancel", data=data, headers=headers)
        assert refused.status_code == 403
    assert app.max_position() == end and status(app, queued.id) == "scheduled"


def test_cancel_retry_undo_and_answer_are_the_command_line_s(
    page: tuple[TestClient, App], tmp_path: Any
) -> None:
    client, app = page
    token = csrf(client)

    def press(operation: uuid.UUID, action: str, **form: str) -> Any:
        return client.post(f"/operations/{operation.hex}/{action}", data={"csrf": token, **form})

    queued = app.submit(Chore(), run_after=app.clock() + timedelta(hours=1))
    assert press(queued.id, "cancel").status_code == 303
    assert status(app, queued.id) == "cancelled"
    again = press(queued.id, "cancel")  # the command line's refusal, in words, on the page
    assert again.status_code == 409 and "is already cancelled" in again.text

    app.execute(ImportMailbox(path=write_mbox(tmp_path / "m.mbox", 5)))
    tagged = app.execute(TagMessages(action="add", tag="red", query="*"))
    shown = client.get("/").text
    assert f'formaction="/operations/{tagged.id.hex}/undo"' in shown
    assert "still in effect (5 message tagged, 1 tag created)?" in shown  # what undo reverts
    assert press(tagged.id, "undo").status_code == 303
    assert status(app, tagged.id) == "undone"

    asked = app.execute(Chore(behaviour="ask"))
    assert status(app, asked.id) == "waiting"
    assert 'name="answer" value="left"' in client.get("/").text
    assert press(asked.id, "answer", answer="left").status_code == 303
    assert status(app, asked.id) == "complete"

    scheduled = app.submit(Chore(title="later"), run_after=app.clock() + timedelta(hours=1))
    assert press(scheduled.id, "retry").status_code == 303
    assert status(app, scheduled.id) == "complete"
    assert press(uuid.uuid4(), "nothing").status_code == 404


def mailbox(path: Any, subjects: list[str]) -> Any:
    """A mailbox with a message per subject, from Ann."""
    import mailbox as mbox
    from email.message import EmailMessage

    box = mbox.mbox(path)
    for n, subject in enumerate(subjects):
        message = EmailMessage()
        message["From"] = "Ann <ann@example.org>"
        message["Subject"] = subject
        message["Message-ID"] = f"<m{n}@example.org>"
        message.set_content(f"text of {n}")
        box.add(message)
    box.close()
    return path


def test_search_shows_what_the_query_finds_as_text(
    page: tuple[TestClient, App], tmp_path: Any
) -> None:
    client, app = page
    app.execute(ImportMailbox(path=mailbox(tmp_path / "m.mbox", [MARKUP, "weekly report"])))
    token = csrf(client)
    found = client.post("/search", data={"csrf": token, "q": "from:ann"})
    assert found.status_code == 200 and "2 messages" in found.text
    assert (
        MARKUP not in found.text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in found.text
    )
    assert "weekly report" in client.post("/search", data={"csrf": token, "q": "report"}).text
    # a query is private: never read from the address
    assert "weekly report" not in client.get("/search", params={"q": "report"}).text
    said = client.post("/search", data={"csrf": token, "q": 'subject:"open'})
    assert said.status_code == 200 and "a double quote is not closed" in said.text
    assert client.post("/search", data={"q": "report"}).status_code == 403


def test_tags_are_added_and_taken_off_what_a_search_finds(
    page: tuple[TestClient, App], tmp_path: Any
) -> None:
    client, app = page
    app.execute(ImportMailbox(path=mailbox(tmp_path / "m.mbox", ["weekly report", "other"])))
    token = csrf(client)
    tagged = client.post(
        "/search/tag", data={"csrf": token, "q": "report", "tag": "work", "action": "add"}
    )
    assert tagged.status_code == 200 and "Tagged 1 message" in tagged.text
    assert '<span class="tag">work</span>' in tagged.text
    feed_page = client.get("/").text
    assert "Tagged 1 message" in feed_page and "/undo" in feed_page
    taken = client.post(
        "/search/tag", data={"csrf": token, "q": "tag:work", "tag": "work", "action": "remove"}
    )
    assert taken.status_code == 200 and '<span class="tag">work</span>' not in taken.text
    refused = client.post(
        "/search/tag", data={"csrf": token, "q": "report", "tag": "", "action": "add"}
    )
    assert refused.status_code == 200 and 'class="error"' in refused.text


def test_a_failure_says_why_in_words_and_keeps_its_reason_private(
    page: tuple[TestClient, App],
) -> None:
    from eventpile.commands.worker import Worker

    client, app = page
    failed = app.submit(Chore(title="the private name", behaviour="refuse", secret="s"))
    Worker(app).drain()
    shown = client.get("/").text
    assert "refused by the rules: the reason is in its private data" in shown
    assert "no chore named" not in shown
    private = client.get(f"/operations/{failed.id.hex}/private").json()
    assert "no chore named the private name" in private["error"]


def test_the_printed_address_again_with_a_session_is_the_page(
    page: tuple[TestClient, App],
) -> None:
    client, _ = page
    again = client.get("/", params={"token": TOKEN})
    assert again.status_code == 303 and again.headers["location"] == "/"


def test_a_failure_that_is_not_a_refusal_keeps_its_reason_private(
    page: tuple[TestClient, App],
) -> None:
    from eventpile.commands.worker import Worker

    client, app = page
    failed = app.submit(Chore(behaviour="crash", secret="the private reason"))
    Worker(app).drain()
    tried = client.post(f"/operations/{failed.id.hex}/retry", data={"csrf": csrf(client)})
    assert tried.status_code == 409
    assert "its reason is in the private data of its operation" in tried.text
    assert "the private reason" not in tried.text


def test_a_page_is_sent_what_changed_since_it_was_made(page: tuple[TestClient, App]) -> None:
    """Its stream starts with what changed after the position the page was made at (or,
    reconnecting, after the last event it got): nothing is missed in between."""
    client, app = page
    after = int(re.search(r'data-after="(\d+)"', client.get("/").text).group(1))  # type: ignore[union-attr]
    done = app.execute(Chore(title="meanwhile"))
    with client.stream("GET", f"/events?after={after}") as stream:
        lines = stream.iter_lines()
        sent = next(line for line in lines if line.startswith("data: "))
        position = next(line for line in lines if line.startswith("id: ") or line == "")
    assert json.loads(sent.removeprefix("data: "))["id"] == done.id.hex
    assert "Chore meanwhile done" in json.loads(sent.removeprefix("data: "))["html"]
    del position


def test_the_hosts_a_browser_names(tmp_path: Any) -> None:
    from eventpile.commands.web import hosts_of, opener

    assert hosts_of("127.0.0.1", 8765) == {"127.0.0.1:8765", "localhost:8765"}
    assert hosts_of("::1", 80) >= {"[::1]:80", "[::1]", "localhost", "127.0.0.1:80"}
    assert hosts_of("192.0.2.7", 9000) == {"192.0.2.7:9000"}
    made = opener("http://127.0.0.1:8765/?token=secret", tmp_path)
    assert made.stat().st_mode & 0o777 == 0o600
    assert 'url=http://127.0.0.1:8765/?token=secret"' in made.read_text()
