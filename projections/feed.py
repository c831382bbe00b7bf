"""The notification feed: one entry per operation, updated in place.

An entry says what an operation is doing or did: when it last changed (``date``
in RFC 2822, ``ts`` in Unix seconds), its flags and status, its source (the
command type), its message and progress, the question it asks, and its public
data; its private data is kept apart and shown only when asked for. The feed
serves the recent entries plus every incomplete one from two index-backed
queries, without touching the log.

A :class:`Renderer` shows entries as text, JSON or HTML; a command class names
its own in its ``renderer`` attribute.

Flags: ``c`` finished or ``i`` incomplete, then ``s`` scheduled, ``r`` running,
``q`` waiting for an answer, ``e`` an error (retrying, or failed), ``x`` cancelled.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ClassVar

from pydantic_core import to_jsonable_python

from eventpile.domain.events import DomainEvent, private_fields_of, redact
from eventpile.domain.operation import Operation, Status
from eventpile.projections.queue import OperationRows
from eventpile.store.views import ViewDB

SCHEMA = """
CREATE TABLE IF NOT EXISTS feed (
    id TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    date TEXT NOT NULL,
    flags TEXT NOT NULL,
    status TEXT NOT NULL,
    incomplete BIGINT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL,
    done BIGINT,
    total BIGINT,
    prompt TEXT,
    choices TEXT,
    parent_id TEXT,
    data TEXT NOT NULL,
    private TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feed_position ON feed(position);
CREATE INDEX IF NOT EXISTS feed_incomplete ON feed(incomplete, position);
"""

_LETTERS = {
    Status.SCHEDULED: "s",
    Status.RUNNING: "r",
    Status.WAITING: "q",
    Status.RETRYING: "e",
    Status.FAILED: "e",
    Status.CANCELLED: "x",
}
# The entry's own columns: left out of its ``data``.
_TOP = frozenset({"id", "version", "command", "status", "message", "progress", "parent_id"})
_NAMES = (
    *("position", "id", "ts", "date", "flags", "status", "source", "message", "done", "total"),
    *("prompt", "choices", "parent_id", "data", "private"),
)
_COLUMNS = ", ".join(_NAMES[:-1])


def flags(status: Status) -> str:
    return ("c" if status.finished else "i") + _LETTERS.get(status, "")


def private_data(state: Operation) -> dict[str, Any]:
    """The private values of an operation (its private arguments, result, error, detail)."""
    names = sorted(private_fields_of(Operation))
    data = {name: to_jsonable_python(getattr(state, name)) for name in names}
    if state.question is not None:
        data["detail"] = state.question.detail
    return data


class Feed(OperationRows):
    name: ClassVar[str] = "feed"
    schema: ClassVar[int] = 2  # 2: operation states hold in_doubt

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA)

    def store(self, db: ViewDB, state: Operation, position: int, last: DomainEvent) -> None:
        _store(db, state, position, last)

    def content_queries(self) -> Sequence[str]:
        return ("SELECT * FROM feed ORDER BY position",)


def _store(db: ViewDB, state: Operation, position: int, event: DomainEvent) -> None:
    """Write an entry: ``position`` where it was inserted, ``event`` its latest change."""
    done, total = state.progress or (None, None)
    question = state.question
    data = {k: v for k, v in redact(state).items() if k not in _TOP}
    db.execute(
        "INSERT INTO feed VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (id) DO UPDATE SET ts=excluded.ts, date=excluded.date, "
        "flags=excluded.flags, status=excluded.status, incomplete=excluded.incomplete, "
        "message=excluded.message, done=excluded.done, total=excluded.total, "
        "prompt=excluded.prompt, choices=excluded.choices, data=excluded.data, "
        "private=excluded.private, state=excluded.state",
        (
            state.id.hex,
            position,
            event.ts,
            format_datetime(event.timestamp, usegmt=True),
            flags(state.status),
            state.status.value,
            int(not state.status.finished),
            state.command,
            state.message,
            done,
            total,
            None if question is None else question.prompt,
            None if question is None else json.dumps(list(question.choices)),
            None if state.parent_id is None else state.parent_id.hex,
            json.dumps(data),
            json.dumps(private_data(state)),
            state.model_dump_json(),
        ),
    )


def _entries(db: ViewDB, where: str, params: Sequence[Any], private: bool) -> list[dict[str, Any]]:
    columns = _COLUMNS + (", private" if private else "")
    rows = db.execute(f"SELECT {columns} FROM feed {where}", params).fetchall()
    return [_entry(dict(zip(_NAMES, row, strict=False)), private) for row in rows]


def _entry(row: dict[str, Any], private: bool) -> dict[str, Any]:
    entry = {
        k: row[k] for k in ("position", "id", "date", "ts", "flags", "status", "source", "message")
    }
    entry["progress"] = (
        None if row["done"] is None else {"done": row["done"], "total": row["total"]}
    )
    entry["question"] = (
        None
        if row["prompt"] is None
        else {"prompt": row["prompt"], "choices": json.loads(row["choices"])}
    )
    entry["parent_id"] = row["parent_id"]
    entry["data"] = json.loads(row["data"])
    if private:
        entry["private"] = json.loads(row["private"])
    return entry


def feed(db: ViewDB, recent: int = 50, *, private: bool = False) -> list[dict[str, Any]]:
    """The ``recent`` newest entries and every incomplete one, newest first."""
    newest = _entries(db, "ORDER BY position DESC LIMIT ?", (recent,), private)
    incomplete = _entries(db, "WHERE incomplete = 1 ORDER BY position DESC", (), private)
    merged = {e["id"]: e for e in (*newest, *incomplete)}
    return sorted(merged.values(), key=lambda e: e["position"], reverse=True)


def all_entries(db: ViewDB, *, private: bool = False) -> list[dict[str, Any]]:
    """Every entry, newest first."""
    return _entries(db, "ORDER BY position DESC", (), private)


def entry(db: ViewDB, operation_id: str, *, private: bool = False) -> dict[str, Any] | None:
    found = _entries(db, "WHERE id = ?", (operation_id,), private)
    return found[0] if found else None


def states(db: ViewDB) -> Iterator[Operation]:
    """The state of every operation, oldest first."""
    for (state,) in db.execute("SELECT state FROM feed ORDER BY position"):
        yield Operation.model_validate_json(state)


# rendering ------------------------------------------------------------------


class Renderer:
    """How the feed shows the entries of one source (command type).

    An entry is a dict from :func:`feed`; it holds ``private`` only
    when private data was asked for.
    """

    def headline(self, entry: dict[str, Any]) -> str:
        """One line: the message, the progress, the question and its choices."""
        line = entry["message"]
        progress = entry["progress"]
        if progress is not None:
            line += f" [{progress['done']:,}/{progress['total'] or '?'}]"
        question = entry["question"]
        if question is not None and entry["status"] == "waiting":
            line += f" — {question['prompt']} ({' / '.join(question['choices'])})"
        return line

    def text(self, entry: dict[str, Any]) -> str:
        when = datetime.fromtimestamp(entry["ts"]).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when}  {entry['id']}  {entry['flags']:<2}  {self.headline(entry)}"

    def json(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, "text": self.headline(entry)}

    def html(self, entry: dict[str, Any]) -> str:
        status = html.escape(entry["status"])
        return f'<li class="operation {status}" id="op-{entry["id"]}">{self.body(entry)}</li>'

    def body(self, entry: dict[str, Any]) -> str:
        """The entry's HTML inside its ``<li>``: every value escaped."""
        parts = [
            f'<time datetime="{_iso(entry["ts"])}">{html.escape(entry["date"])}</time>',
            f'<span class="message">{html.escape(self.headline(entry))}</span>',
        ]
        progress = entry["progress"]
        if progress is not None and progress["total"]:
            done, total = progress["done"], progress["total"]
            parts.append(f'<progress value="{done}" max="{total}"></progress>')
        question = entry["question"]
        if question is not None and entry["status"] == "waiting":
            for choice in map(html.escape, question["choices"]):
                parts.append(f'<button name="answer" value="{choice}">{choice}</button>')
        return "".join(parts)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


DEFAULT_RENDERER = Renderer()
