"""The queue and feed projections: what they hold, in place updates, throttled
progress, the recent-plus-incomplete query and its indexes, rendering, and (a
property) that after any sequence of user actions each equals its rebuild and the
queue is exactly the unfinished operations of the log."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventpile.commands
import eventpile.commands.context
from eventpile.commands.app import Application
from eventpile.commands.base import Command, Outcome, handles
from eventpile.commands.context import Context
from eventpile.commands.dispatcher import CommandFailed
from eventpile.commands.eventlog import Conflict
from eventpile.commands.operations import answer, cancel, retry
from eventpile.commands.worker import Worker
from eventpile.domain.aggregate import DomainError, fold
from eventpile.domain.operation import Operation, OperationProgressed, OperationRequested, Status
from eventpile.mail.app import MailApplication
from eventpile.mail.send import SendMail
from eventpile.projections.feed import DEFAULT_RENDERER, all_entries, entry, feed
from eventpile.projections.queue import due_operations, pending
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from tests.test_operations import App as OperationsApp
from tests.test_operations import Clock, Job

pytest_plugins = ["tests.test_operations"]  # its fixtures: clock, ops_app


def feed_db(app: Application) -> Any:
    view = app.view("feed")
    view.catch_up(app)
    return view.db


def unfinished_in_log(app: MailApplication) -> dict[uuid.UUID, Operation]:
    """Every operation not finished, folded from the log itself."""
    streams: dict[uuid.UUID, list[Any]] = {}
    for _, event in app.all_events():
        if isinstance(event, OperationRequested) or event.originator_id in streams:
            streams.setdefault(event.originator_id, []).append(event)
    states = {op: fold(Operation, events) for op, events in streams.items()}
    return {op: s for op, s in states.items() if s is not None and not s.status.finished}


# what the queue holds ---------------------------------------------------------------------


def test_the_queue_loads_at_start_without_reading_the_log(
    home: Home, keyring: Keyring, clock: Clock, backend: str
) -> None:
    first = App(home, keyring, clock=clock)
    for _ in range(5):
        first.execute(Job())
    waiting = first.submit(Job(), run_after=clock.now + timedelta(hours=1))
    retrying = first.execute(Job(behaviour="retryable"))
    first.close()
    again = App(home, keyring, clock=clock)
    try:
        queue = again.view("queue")
        assert queue.catch_up(again).events == 0
        assert {op.id: op.status for op in pending(queue.db)} == {
            waiting.id: Status.SCHEDULED,
            retrying.id: Status.RETRYING,
        }
        assert due_operations(queue.db, clock.now) == []
        clock.past(retrying.retry_at)
        assert [op.id for op in due_operations(queue.db, clock.now)] == [retrying.id]
    finally:
        again.close()


# the feed ----------------------------------------------------------------------------------


class Watched(Command):
    """Reports progress three times, looking at its own feed entry each time."""


SEEN: list[dict[str, Any] | None] = []


@handles(Watched)
def run_watched(command: Watched, ctx: Context) -> Outcome:
    for done in (1, 2, 3):
        ctx.progress(done, 3, f"Step {done}")
        ctx.flush()
        SEEN.append(entry(feed_db(ctx.app), ctx.operation_id.hex))
    return Outcome("All steps done")


def test_a_feed_entry_is_updated_in_place_while_its_operation_runs(
    ops_app: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventpile.commands.context, "PROGRESS_EVERY_S", 0.0)
    SEEN.clear()
    op = ops_app.execute(Watched())
    assert [(e["id"], e["status"], e["flags"]) for e in SEEN if e] == [
        (op.id.hex, "running", "ir")
    ] * 3
    assert [(e["progress"], e["message"]) for e in SEEN if e] == [
        ({"done": n, "total": 3}, f"Step {n}") for n in (1, 2, 3)
    ]
    [final] = all_entries(feed_db(ops_app))
    assert (final["id"], final["status"], final["flags"], final["message"]) == (
        op.id.hex,
        "complete",
        "c",
        "All steps done",
    )
    assert final["ts"] >= SEEN[-1]["ts"]  # type: ignore[index]


class Busy(Command):
    """Reports progress a thousand times, as a long import would."""


@handles(Busy)
def run_busy(command: Busy, ctx: Context) -> Outcome:
    for done in range(1, 1001):
        ctx.progress(done, 1000)
    return Outcome("Busy done")


def test_progress_is_throttled_to_one_event_a_second(
    ops_app: MailApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(1000, 10**6))
    monkeypatch.setattr(eventpile.commands.context.time, "monotonic", lambda: next(ticks) / 100)
    op = ops_app.execute(Busy())  # 1,000 reports 10 ms apart: 10 s
    reports = [e for e in ops_app.stream(op.id) if isinstance(e, OperationProgressed)]
    assert 10 <= len(reports) <= 12
    assert reports[-1].done == 1000


def test_the_feed_is_the_recent_entries_plus_every_incomplete_one(
    ops_app: MailApplication, clock: Clock
) -> None:
    old_waiting = ops_app.execute(Job(behaviour="ask"))
    old_scheduled = ops_app.submit(Job(), run_after=clock.now + timedelta(days=1))
    done = [ops_app.execute(Job()) for _ in range(4)]
    shown = feed(feed_db(ops_app), recent=2)
    assert [e["id"] for e in shown] == [
        done[3].id.hex,
        done[2].id.hex,
        old_scheduled.id.hex,
        old_waiting.id.hex,
    ]
    waiting = shown[-1]
    assert (waiting["status"], waiting["flags"], waiting["question"]) == (
        "waiting",
        "iq",
        {"prompt": "Go on?", "choices": ["again", "stop"]},
    )
    assert shown[-2]["flags"] == "is"
    assert len(all_entries(feed_db(ops_app))) == 6


def test_private_data_appears_only_when_asked_for(ops_app: MailApplication) -> None:
    with pytest.raises(CommandFailed):
        ops_app.execute(Job(behaviour="crash", secret="s3cret"))
    [public] = feed(feed_db(ops_app))
    assert "s3cret" not in repr(public) and "private" not in public
    assert public["data"]["error_type"] == "RuntimeError" and "error" not in public["data"]
    [private] = feed(feed_db(ops_app), private=True)
    assert private["private"]["private_args"] == {"secret": "s3cret"}
    assert private["private"]["error"] == "broken: s3cret"


def test_the_feed_queries_use_their_indexes(ops_app: MailApplication) -> None:
    db = feed_db(ops_app)
    for query, index in [
        ("SELECT id FROM feed ORDER BY position DESC LIMIT 50", "feed_position"),
        ("SELECT id FROM feed WHERE incomplete = 1 ORDER BY position DESC", "feed_incomplete"),
    ]:
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert index in plan and "TEMP B-TREE" not in plan, plan


# rendering -----------------------------------------------------------------------------------


def test_the_default_rendering_as_text_json_and_html(ops_app: MailApplication) -> None:
    ops_app.execute(Job(behaviour="ask"))
    [shown] = feed(feed_db(ops_app))
    renderer = ops_app.registry.renderer(shown["source"])
    assert renderer is DEFAULT_RENDERER
    assert renderer.text(shown).endswith("iq  Job done (ask) — Go on? (again / stop)")
    assert renderer.json(shown)["text"] == "Job done (ask) — Go on? (again / stop)"
    html = renderer.html({**shown, "message": "<b>&</b>"})
    assert html.startswith(f'<li class="operation waiting" id="op-{shown["id"]}">')
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>" not in html
    assert '<button name="answer" value="again">again</button>' in html


def test_a_command_type_renders_its_own_entries(ops_app: MailApplication) -> None:
    entry = {
        "message": "Sent",
        "status": "complete",
        "progress": None,
        "question": None,
        "private": {"private_args": {"to": ["bob@example.org"], "subject": "Hi"}},
    }
    renderer = ops_app.registry.renderer(SendMail.__name__)
    assert renderer is not DEFAULT_RENDERER
    assert renderer.headline(entry) == "Sent: 'Hi' to bob@example.org"
    assert renderer.headline({k: v for k, v in entry.items() if k != "private"}) == "Sent"


# rebuild == incremental (a property) ---------------------------------------------------------

actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("execute"),
            st.sampled_from(["ok", "retryable", "crash", "refuse", "ask", "progress"]),
        ),
        st.tuples(st.just("submit"), st.sampled_from([None, 1, 30])),
        st.tuples(st.just("advance"), st.integers(1, 120)),
        st.tuples(st.just("drain"), st.none()),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
        st.tuples(st.just("retry"), st.integers(0, 20)),
        st.tuples(st.sampled_from(["again", "stop", "nope"]), st.integers(0, 20)),
    ),
    max_size=14,
)


@given(steps=actions)
def test_after_any_actions_queue_and_feed_equal_their_rebuild(
    ops_app: MailApplication, clock: Clock, steps: list[tuple[str, Any]]
) -> None:
    ops: list[uuid.UUID] = [op.id for op in pending(ops_app.view("queue").db)]
    for action, arg in steps:
        try:
            match action:
                case "execute":
                    ops.append(ops_app.execute(Job(behaviour=arg)).id)
                case "submit":
                    when = None if arg is None else clock.now + timedelta(minutes=arg)
                    ops.append(ops_app.submit(Job(), run_after=when).id)
                case "advance":
                    clock.advance(minutes=arg)
                case "drain":
                    Worker(ops_app).drain()
                case "cancel" if ops:
                    cancel(ops_app, ops[arg % len(ops)])
                case "retry" if ops:
                    retry(ops_app, ops[arg % len(ops)])
                case "again" | "stop" | "nope" if ops:
                    answer(ops_app, ops[arg % len(ops)], action)
        except (DomainError, CommandFailed, Conflict):
            pass  # refusals and failures are part of the story
    unfinished = unfinished_in_log(ops_app)
    queue = ops_app.view("queue")
    queue.catch_up(ops_app)
    assert {op.id: op for op in pending(queue.db)} == unfinished
    entries = {e["id"]: e for e in all_entries(feed_db(ops_app))}
    for op_id in ops:
        state = ops_app.load(Operation, op_id)
        assert state is not None and entries[op_id.hex]["status"] == state.status.value
    assert queue.verify(ops_app)
    assert ops_app.view("feed").verify(ops_app)


class App(OperationsApp):
    """The mail application with this module's own test commands."""

    handlers = (
        run_watched,
        run_busy,
    )
