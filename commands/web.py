"""``eventpile serve``: the feed as a live web page on this machine.

**Who may see it.** The address printed at start carries a one-time token (as
Jupyter's): the first visit with it opens a session (an ``HttpOnly``,
``SameSite=Strict`` cookie) and the token works no more. Every request needs that
session, and names this server as its host (a page of another site that rebinds its
name to 127.0.0.1 is refused). Every form carries the session's CSRF token, and a
``POST`` from another origin is refused. Each response carries a strict
Content-Security-Policy: no inline script or style (the page's own are
``/static/feed.js`` and ``feed.css``), nothing loaded from elsewhere; and every value
from the log is escaped where it is written into the page.

**What it shows.** Every incomplete operation and the recent finished ones, newest
first, each rendered by its command's :class:`~eventpile.projections.feed.Renderer`,
with buttons: a question's choices, cancel, retry now, undo, each confirmed, each run
as on the command line (a recorded operation, the same refusals, in words). Private
data (arguments, results, errors) is fetched by a button per entry, never put in a URL.

**Live.** A stream of server-sent events (``/events``) sends each entry anew as its
operation changes, whichever process changed it (an ``eventpile import`` in a
terminal, a worker on another machine sharing the PostgreSQL database): the page puts
it in place of the old one. One thread watches the log (woken by the backend: a
notification on PostgreSQL, a look every so often on SQLite) and renders what changed
once for every open page; another holds the application that pages and buttons use.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import logging
import os
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventpile.domain.aggregate import DomainError
from eventpile.projections.feed import entry as feed_entry
from eventpile.projections.feed import feed
from eventpile.projections.operations import events_of
from eventpile.projections.queue import operation_events
from eventpile.store.errors import StoreError

if TYPE_CHECKING:
    from eventpile.commands.app import Application

T = TypeVar("T")

STATIC: Final = Path(__file__).with_name("static")
COOKIE: Final = "eventpile_session"
RECENT: Final = 50
"""The finished operations the page shows (beside every incomplete one)."""
KEEPALIVE_S: Final = 15.0
MAX_QUEUED: Final = 1000
"""Entries waiting for a page that does not read: past that, it is dropped (it reconnects)."""
WATCH_RETRY_S: Final = 2.0
LOG: Final = logging.getLogger("eventpile.web")
MAX_FORM: Final = 64 << 10
POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make a form's Origin "null"
    (b"cache-control", b"no-store"),
]
ACTIONS: Final = ("answer", "cancel", "retry", "undo")
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_CANCELLABLE: Final = frozenset({"pending", "scheduled", "retrying", "waiting"})
_RETRYABLE: Final = frozenset({"scheduled", "retrying", "failed"})


class Refused(Exception):
    """A request without the session, the host or the CSRF token it needs."""


class _Secured:
    """Every response with :data:`HEADERS` (the policy, and no sniffing, referrer or cache)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, sending)


class _AppThread:
    """An application in a thread of its own: the work given runs there, one at a time."""

    def __init__(self, open_app: Callable[[], Application], name: str) -> None:
        self._open = open_app
        self._work: SimpleQueue[tuple[Callable[[Application], Any], Future[Any]] | None] = (
            SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[Application], T]) -> T:
        done: Future[T] = Future()
        self._work.put((work, done))
        return await asyncio.wrap_future(done)

    def close(self, *, wait: bool) -> None:
        """Close the application once the work given so far is done (``wait``: until then;
        else a long command the page started goes on while the process lives)."""
        self._work.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        app: Application | None = None
        try:
            while (item := self._work.get()) is not None:
                work, done = item
                if not done.set_running_or_notify_cancel():
                    continue
                try:
                    if app is None:
                        app = self._open()
                    done.set_result(work(app))
                except BaseException as error:
                    done.set_exception(error)
        finally:
            if app is not None:
                app.close()


@dataclass(eq=False)  # each page is itself (kept in a set)
class _Page:
    """An open page's stream: what it is to be sent, and whether it fell behind."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[int, dict[str, Any]]]
    behind: bool = False

    def offer(self, position: int, entry: dict[str, Any]) -> None:
        """(In the page's loop.) A page that does not read is dropped: it reconnects, and
        is sent what changed since the last entry it had."""
        try:
            self.queue.put_nowait((position, entry))
        except asyncio.QueueFull:
            self.behind = True


class Web:
    """The web page of one home: ``open_app`` makes an application (one per thread);
    ``hosts`` are the ``Host`` headers it answers (its address, as browsers write it)."""

    def __init__(
        self, open_app: Callable[[], Application], token: str, hosts: Iterable[str]
    ) -> None:
        self.open_app = open_app
        self._token: list[str] = [token]  # it works once
        self.sessions: dict[str, str] = {}
        """By session id, its CSRF token."""
        self.hosts = frozenset(hosts)
        self._pages: set[_Page] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: _AppThread | None = None
        self._doer: _AppThread | None = None
        self._watcher = threading.Thread(target=self._watch, name="feed watcher", daemon=True)

    def asgi(self) -> ASGIApp:
        routes = [
            Route("/", self.home),
            Route("/events", self.events),
            Route("/operations/{operation}/private", self.private),
            Route("/operations/{operation}/{action}", self.act, methods=["POST"]),
            Route("/search", self.search, methods=["GET", "POST"]),
            Route("/search/tag", self.tag, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]
        return _Secured(Starlette(routes=routes, lifespan=self._lifespan))

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            await asyncio.to_thread(self.stop)

    def start(self) -> None:
        self._reader = _AppThread(self.open_app, "pages")  # what pages read
        self._doer = _AppThread(self.open_app, "buttons")  # what buttons run (maybe long)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread, wait in ((self._reader, True), (self._doer, False)):
            if thread is not None:
                thread.close(wait=wait)
        self._watcher.join()  # it looks at the stop at least once a second

    # who may see it ------------------------------------------------------------------

    def _session(self, request: Request) -> str:
        """The request's CSRF token, if it comes with a session to this server."""
        if request.headers.get("host") not in self.hosts:
            raise Refused("this server answers only its own address")
        session = request.cookies.get(COOKIE, "")
        csrf = self.sessions.get(session)
        if csrf is None:
            raise Refused("open the address `eventpile serve` printed (its token opens a session)")
        return csrf

    async def _form(self, request: Request) -> dict[str, str]:
        """The form of a POST that carries the session's CSRF token, from this page."""
        csrf = self._session(request)
        origin = request.headers.get("origin")
        if origin is not None and origin.partition("://")[2] not in self.hosts:
            raise Refused("a form from another site")
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_FORM:
            raise Refused(f"a form is at most {MAX_FORM:,} bytes")
        body = await request.body()
        if len(body) > MAX_FORM:
            raise Refused(f"a form is at most {MAX_FORM:,} bytes")
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if not hmac.compare_digest(form.get("csrf", ""), csrf):
            raise Refused("this form did not come from this page (its CSRF token is missing)")
        return form

    # pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        token = request.query_params.get("token")
        try:
            csrf = self._session(request)
        except Refused as refused:
            return _refused(refused) if token is None else self._login(request, token)
        if token is not None:  # the printed address again, with a session: the page
            return RedirectResponse("/", status_code=303)
        position, entries = await self._read(_feed_now)
        return HTMLResponse(_page(_feed_html(entries, csrf, position), csrf))

    def _login(self, request: Request, token: str) -> Response:
        if request.headers.get("host") not in self.hosts:
            return _refused(Refused("this server answers only its own address"))
        with self._lock:
            unused = any(hmac.compare_digest(token, t) for t in self._token)
            if not unused:
                return _refused(Refused("that token was used already, or is not this server's"))
            self._token.clear()
            session = secrets.token_urlsafe(32)
            self.sessions[session] = secrets.token_urlsafe(32)
        response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
        response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def events(self, request: Request) -> Response:
        """The stream of a page: first what changed since the position it had (its
        ``after``, or on a reconnection the id of the last event it got), then each
        change as the watcher sees it; each event's id is the log's position."""
        try:
            csrf = self._session(request)
        except Refused as refused:
            return _refused(refused)
        known = request.headers.get("last-event-id") or request.query_params.get("after", "")
        after = int(known) if known.isdigit() else None
        page = _Page(asyncio.get_running_loop(), asyncio.Queue(maxsize=MAX_QUEUED))

        async def stream() -> AsyncIterator[str]:
            with self._lock:
                self._pages.add(page)
            try:
                yield "retry: 1000\n\n"
                if after is not None:
                    position, missed = await self._read(lambda app: _since(app, after))
                    for entry in missed:
                        yield _event(position, entry, csrf)
                while not page.behind:
                    try:
                        position, entry = await asyncio.wait_for(page.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": still here\n\n"
                        continue
                    yield _event(position, entry, csrf)
            finally:
                with self._lock:
                    self._pages.discard(page)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def private(self, request: Request) -> Response:
        try:
            self._session(request)
        except Refused as refused:
            return _refused(refused)
        operation = _hex(request.path_params["operation"])
        found = None
        if operation is not None:
            found = await self._read(
                lambda app: feed_entry(app.current("feed"), operation, private=True)
            )
        if found is None:
            return JSONResponse({"error": "no such operation"}, status_code=404)
        return JSONResponse(found["private"])

    async def act(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except Refused as refused:
            return _refused(refused)
        action, operation = request.path_params["action"], _hex(request.path_params["operation"])
        if action not in ACTIONS or operation is None:
            return _refused(Refused("there is no such operation or action"), 404)
        target = uuid.UUID(hex=operation)
        try:
            await self._do(lambda app: _act(app, action, target, form.get("answer", "")))
        except Exception as error:
            csrf = self._session(request)
            position, entries = await self._read(_feed_now)
            body = _feed_html(entries, csrf, position)
            return HTMLResponse(_page(body, csrf, error=_failure(error)), status_code=409)
        return RedirectResponse("/", status_code=303)

    async def search(self, request: Request) -> Response:
        """The search box, and what it finds (the query is posted: a query is private, and
        never goes into a URL)."""
        try:
            csrf = self._session(request)
            form = await self._form(request) if request.method == "POST" else {}
        except Refused as refused:
            return _refused(refused)
        return await self._results(csrf, form.get("q", ""))

    async def tag(self, request: Request) -> Response:
        """Add a tag to what a query finds, or take it off: an operation, as on the
        command line; the results are shown again."""
        try:
            form = await self._form(request)
        except Refused as refused:
            return _refused(refused)
        csrf, query = self._session(request), form.get("q", "")
        add, tag = form.get("action") == "add", form.get("tag", "")
        try:
            done = await self._do(lambda app: app.tag_found(query, tag, add))
        except Exception as error:
            return await self._results(csrf, query, error=_failure(error))
        return await self._results(csrf, query, notice=done.message)

    async def _results(
        self, csrf: str, query: str, *, error: str | None = None, notice: str | None = None
    ) -> Response:
        found: dict[str, Any] | None = None
        if query:
            try:
                found = await self._read(lambda app: app.search(query))
            except Exception as failed:
                error = _failure(failed)
        body = _search_html(query, found, csrf, notice)
        return HTMLResponse(_page(body, csrf, error=error, title="Search"))

    # the application's thread, and the watcher's -------------------------------------

    async def _read(self, work: Callable[[Application], T]) -> T:
        """``work`` on the application that pages read (quick)."""
        assert self._reader is not None, "the server started"
        return await self._reader.run(work)

    async def _do(self, work: Callable[[Application], T]) -> T:
        """``work`` on the application that buttons run (a retry may run a long command:
        pages are still read meanwhile)."""
        assert self._doer is not None, "the server started"
        return await self._doer.run(work)

    def _watch(self) -> None:
        """Send every open page the entries of the operations the log's new events
        changed, whoever wrote them. A failure (the database gone for a while) is said
        once a round, and the watcher opens the application anew and goes on from where
        it was."""
        seen: int | None = None
        while not self._stopping.is_set():
            try:
                app = self.open_app()
            except Exception as error:
                LOG.warning("the feed's watcher cannot open the home: %s", error)
                self._stopping.wait(WATCH_RETRY_S)
                continue
            try:
                seen = app.max_position() if seen is None else seen
                while not self._stopping.is_set():
                    end = app.wait_for_events(seen, 1.0)
                    if end > seen:
                        position, changed = _since(app, seen, end)
                        for entry in changed:
                            self._send(position, entry)
                        seen = end
            except Exception as error:
                LOG.warning("the feed's watcher: %s; it looks again", error)
                self._stopping.wait(WATCH_RETRY_S)
            finally:
                app.close()

    def _send(self, position: int, entry: dict[str, Any]) -> None:
        with self._lock:
            pages = list(self._pages)
        for page in pages:
            page.loop.call_soon_threadsafe(page.offer, position, entry)


def hosts_of(host: str, port: int) -> set[str]:
    """The ``Host`` headers a browser sends to this server: its address (an IPv6 one in
    brackets), and the loopback names when it listens there; without the port for 80."""
    names = {host, *(("127.0.0.1", "localhost") if host in LOOPBACK else ())}
    written = {f"[{name}]" if ":" in name else name for name in names}
    return {f"{name}:{port}" for name in written} | (written if port == 80 else set())


def opener(url: str, where: Path) -> Path:
    """A page (mode 0600, in ``where``) that sends the browser to ``url``: given to the
    browser instead of the address itself, whose token would be in its command line,
    which other users of the machine may read (as Jupyter does)."""
    page = where / f"eventpile-{secrets.token_hex(8)}.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            '<!doctype html><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={html.escape(url)}">'
        )
    return page


def _feed_now(app: Application) -> tuple[int, list[dict[str, Any]]]:
    """The log's position, then the feed's entries (so nothing after it is missed)."""
    position = app.max_position()
    return position, _entries(app, feed(app.current("feed"), RECENT))


def _since(
    app: Application, after: int, upto: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """The entries of the operations whose events lie after ``after`` (up to ``upto``, or
    the log's end), and that end."""
    end = app.max_position() if upto is None else upto
    db = app.current("feed")
    found = [feed_entry(db, operation) for operation in _changed(app, after, end)]
    return end, _entries(app, [e for e in found if e is not None])


def _event(position: int, entry: dict[str, Any], csrf: str) -> str:
    data = json.dumps({"id": entry["id"], "html": _entry_html(entry, csrf)})
    return f"id: {position}\nevent: entry\ndata: {data}\n\n"


def _failure(error: Exception) -> str:
    """What the page says of a command that failed: a refusal in its own words (as the
    command line says it, to the user who asked); any other failure without its reason,
    which may hold private values (it is in the operation's private data)."""
    if isinstance(error, NotImplementedError):
        return "this application has no search"
    if isinstance(error, DomainError | StoreError | ValueError):
        return str(error)
    return "it failed; its reason is in the private data of its operation (see the feed)"


def _changed(app: Application, after: int, upto: int) -> list[str]:
    """The operations (hex ids) whose events lie after ``after`` up to ``upto``, in order."""
    changed: dict[str, None] = {}
    topics = operation_events()
    while after < upto:
        page = app.read(after, upto, topics, 2000)
        if not page:
            break
        for _, event in page:
            changed[event.originator_id.hex] = None
        after = page[-1][0]
    return list(changed)


def _entries(app: Application, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries, each with its HTML body (by its command's renderer) and, if it can
    be undone, the changes it wrote (what an undo would revert, of what is in effect)."""
    shown = []
    log = app.current("operations")
    for entry in entries:
        command = app.registry.command_class(entry["source"])
        changes = None  # what undo would revert: the changes it wrote, by kind
        if command is not None and command.undoable and entry["status"] == "complete":
            kinds = Counter(e["type"] for e in events_of(log, entry["id"]))
            changes = ", ".join(f"{n:,} {_words(kind)}" for kind, n in sorted(kinds.items()))
        body = app.registry.renderer(entry["source"]).body(entry)
        shown.append({**entry, "body": body, "changes": changes})
    return shown


def _words(kind: str) -> str:
    """An event type's name in words: ``MessageTagged``, ``message tagged``."""
    return "".join(f" {c.lower()}" if c.isupper() else c for c in kind).strip()


def _entry_html(entry: dict[str, Any], csrf: str) -> str:
    """One entry: its body and its buttons in one form (each button posts its action)."""
    operation, status = entry["id"], entry["status"]
    action = f"/operations/{operation}"
    buttons = []
    if status in _CANCELLABLE:
        buttons.append(_button(f"{action}/cancel", "Cancel", "Cancel this operation?"))
    if status in _RETRYABLE:
        buttons.append(_button(f"{action}/retry", "Retry now", "Run it again now?"))
    if entry["changes"] and not entry["data"].get("undone_by"):
        asked = f"Undo: revert what of it is still in effect ({entry['changes']})?"
        buttons.append(_button(f"{action}/undo", "Undo", asked))
    buttons.append(
        f'<button type="button" class="reveal" data-operation="{operation}">Private data</button>'
    )
    return (
        f'<li class="operation {html.escape(status)}" id="op-{operation}">'
        f'<form method="post" action="{action}/answer">'
        f'<input type="hidden" name="csrf" value="{html.escape(csrf)}">'
        f'<span class="status">{html.escape(status)}</span>{entry["body"]}{_why(entry)}'
        f'<span class="actions">{"".join(buttons)}</span>'
        '<pre class="private" hidden></pre></form></li>'
    )


_FAILURES: Final = {
    "DomainError": "refused by the rules",
    "StoreError": "refused by the store",
    "ValidationError": "its arguments are no longer valid",
}


def _why(entry: dict[str, Any]) -> str:
    """Why a failed operation failed, in words that hold no private value (the reason
    itself, which may, is under its private data)."""
    if entry["status"] != "failed":
        return ""
    kind = entry["data"].get("error_type") or ""
    said = _FAILURES.get(kind, "stopped by an error")
    return f'<span class="why">{html.escape(said)}: the reason is in its private data</span>'


def _button(action: str, label: str, confirm: str) -> str:
    return (
        f'<button formaction="{action}" data-confirm="{html.escape(confirm)}">'
        f"{html.escape(label)}</button>"
    )


def _act(app: Application, action: str, target: uuid.UUID, choice: str) -> None:
    from eventpile.commands.operations import answer, cancel, retry
    from eventpile.commands.undo import Undo

    match action:
        case "answer":
            answer(app, target, choice)
        case "cancel":
            cancel(app, target)
        case "retry":
            retry(app, target)
        case "undo":
            app.execute(Undo(operation_id=target))


def _hex(text: str) -> str | None:
    """An operation id as 32 hex digits (None: not an id)."""
    try:
        return uuid.UUID(text).hex
    except ValueError:
        return None


def _feed_html(entries: Iterable[dict[str, Any]], csrf: str, position: int) -> str:
    items = "".join(_entry_html(e, csrf) for e in entries)
    return f'<ul class="feed" id="feed" data-after="{position}">{items}</ul>'


def _search_html(query: str, found: dict[str, Any] | None, csrf: str, notice: str | None) -> str:
    """The search form, and the results with the tag buttons (every value escaped)."""
    q, token = html.escape(query), html.escape(csrf)
    parts = [
        '<form method="post" action="/search" class="search">'
        f'<input type="hidden" name="csrf" value="{token}">'
        f'<input type="search" name="q" value="{q}" placeholder="from:ann subject:report tag:red"'
        ' aria-label="query" autocomplete="off" autofocus> <button>Search</button></form>'
    ]
    if notice is not None:
        parts.append(f'<p class="notice" role="status">{html.escape(notice)}</p>')
    if found is None:
        return "".join(parts)
    total, results = found["total"], found["results"]
    parts.append(
        f'<p class="total">{total:,} message{"s" * (total != 1)}'
        f"{f' (the newest {len(results):,} shown)' if len(results) < total else ''}</p>"
        '<form method="post" action="/search/tag" class="tagging">'
        f'<input type="hidden" name="csrf" value="{token}">'
        f'<input type="hidden" name="q" value="{q}">'
        '<input name="tag" placeholder="tag" aria-label="tag" required> '
        '<button name="action" value="add" data-confirm="Add this tag to every message found?">'
        "Add to all</button> "
        '<button name="action" value="remove" '
        'data-confirm="Take this tag off every message found?">Remove from all</button></form>'
        '<table class="results"><thead><tr><th>date</th><th>from</th><th>subject</th>'
        "<th>tags</th></tr></thead><tbody>"
    )
    for r in results:
        tags = " ".join(f'<span class="tag">{html.escape(t)}</span>' for t in r["tags"])
        parts.append(
            f'<tr id="m-{html.escape(r["id"])}"><td>{html.escape(r["date"] or "")}</td>'
            f"<td>{html.escape(r['from'])}</td><td>{html.escape(r['subject'])}</td>"
            f"<td>{tags}</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def _page(body: str, csrf: str = "", error: str | None = None, title: str = "Feed") -> str:
    said = "" if error is None else f'<p class="error" role="alert">{html.escape(error)}</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="csrf" content="{html.escape(csrf)}">'
        f"<title>{html.escape(title)} · eventpile</title>"
        '<link rel="stylesheet" href="/static/feed.css">'
        '<script src="/static/feed.js" defer></script></head>'
        '<body><header><h1>eventpile</h1><nav><a href="/">Feed</a> <a href="/search">Search</a>'
        '</nav><span class="live" id="live">connecting…</span></header>'
        f"{said}{body}</body></html>"
    )


def _refused(refused: Exception, status: int = 403) -> Response:
    return HTMLResponse(_page("", error=str(refused)), status_code=status)
