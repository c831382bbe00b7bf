"""Searching the message index: a query's tree (:mod:`eventpile.mail.language`) in SQL.

Kept free of the event model (stdlib only) so a search process starts fast.

The full-text conditions of a query become one FTS5 expression where they can (FTS5
has AND, OR and ``a NOT b``); when a query needs some words, that expression leads and
the rest filters its matches.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from hashlib import blake2b
from typing import Any, Literal

from eventpile.mail.language import (
    MAX_TERMS,
    And,
    Dates,
    Everything,
    MessageId,
    Node,
    Not,
    Or,
    Query,
    QueryError,
    Tag,
    Thread,
    ThreadOf,
    Words,
    parse_query,
    words,
)

__all__ = [
    "MAX_TERMS",
    "Query",
    "QueryError",
    "parse_query",
    "words",
]

INDEX_SCHEMA = 8
"""Version of the message index tables; bumping it rebuilds the index."""
DATE_BITS = 20
"""A dated message's rowid is ``date << DATE_BITS`` plus its arrival order in
that second, so full-text matches come newest first and a date range is a rowid range.
(Past 2**20 messages in one second, a message takes any free rowid: it sorts as newest.)
The price: rowid gaps make the full-text index ~40% bigger and ~25% slower to write."""
UNDATED, UNDATED_END = -(1 << 62), -(1 << 57)
"""The rowids of messages without a date, below every dated one (year 1 and on)."""
FTS_COLUMNS = ("subject", "sender", "recipients", "cc", "body", "attachment", "mimetype")
"""The parts of a message the index holds apart: its full-text columns."""

Sort = Literal["newest", "oldest"]


def link_key(message_id: str) -> int:
    """A Message-ID as the index keeps it: 64 bits of its hash (a short key in the
    thread tables; two ids that share one are as likely as a random pair of 64-bit
    numbers)."""
    return int.from_bytes(blake2b(message_id.encode(), digest_size=8).digest(), "big", signed=True)


def _phrase(node: Words) -> str:
    """``node`` as an FTS5 phrase in its columns."""
    columns = node.fields[0] if len(node.fields) == 1 else "{" + " ".join(node.fields) + "}"
    return f'{columns} : "{" ".join(node.words)}"' + (" *" if node.prefix else "")


def _fts5(node: Node) -> str | None:
    """``node`` as one FTS5 expression, if it is words alone (None if not)."""
    match node:
        case Words():
            return _phrase(node)
        case And(nodes):
            wanted = [_fts5(n) for n in nodes if not isinstance(n, Not)]
            unwanted = [_fts5(n.node) for n in nodes if isinstance(n, Not)]
            if not wanted or None in wanted or None in unwanted:
                return None  # FTS5 has no NOT of its own: "a NOT b" needs an "a"
            return (
                "("
                + " AND ".join(map(str, wanted))
                + ")"
                + "".join(f" NOT ({n})" for n in unwanted)
            )
        case Or(nodes):
            found = [_fts5(n) for n in nodes]
            return None if None in found else "(" + " OR ".join(map(str, found)) + ")"
    return None


@dataclass
class _Compiler:
    """SQL conditions on the messages (as ``alias``) that a tree's nodes stand for."""

    tags_lead: bool = True
    params: list[Any] = field(default_factory=list)
    depth: int = 0

    def condition(self, node: Node, alias: str = "m", rowid: str | None = None) -> str:
        rowid = rowid or f"{alias}.rowid"
        if (match := _fts5(node)) is not None:
            self.params.append(match)
            return f"{alias}.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)"
        match node:
            case Everything():
                return "1 = 1"
            case Not(inner):
                return f"NOT ({self.condition(inner, alias, rowid)})"
            case And(nodes) | Or(nodes):
                joint = " AND " if isinstance(node, And) else " OR "
                return joint.join(f"({self.condition(n, alias, rowid)})" for n in nodes)
            case Tag(name):
                self.params.append(name)
                if self.tags_lead:
                    return (
                        f"{alias}.id IN (SELECT mt.message FROM message_tags mt "
                        "WHERE mt.tag IN (SELECT id FROM tags WHERE name = ?))"
                    )
                return (
                    "EXISTS (SELECT 1 FROM message_tags mt JOIN tags t ON t.id = mt.tag "
                    f"WHERE mt.message = {alias}.id AND t.name = ?)"
                )
            case MessageId(value):
                self.params.append(link_key(value))
                return f"{alias}.id IN (SELECT message FROM message_threads WHERE header = ?)"
            case Thread(thread):
                self.params.append(thread)
                return f"{alias}.id IN (SELECT message FROM message_threads WHERE thread = ?)"
            case ThreadOf(query):
                self.depth += 1
                member, thread_row = f"m{self.depth}", f"t{self.depth}"
                found = self.condition(query, member)
                return (
                    f"{alias}.id IN (SELECT message FROM message_threads WHERE thread IN "
                    f"(SELECT {thread_row}.thread FROM message_threads {thread_row} "
                    f"JOIN messages {member} ON {member}.id = {thread_row}.message "
                    f"WHERE {found}))"
                )
            case Dates(start, end):
                return self.dates(start, end, rowid)
        raise AssertionError(f"unknown node {node!r}")

    def dates(self, start: int | None, end: int | None, rowid: str) -> str:
        """A rowid range (see ``DATE_BITS``); never true without a date."""
        low = UNDATED_END if start is None else max(start << DATE_BITS, UNDATED_END)
        self.params.append(low)
        if end is None:
            return f"{rowid} >= ?"
        self.params.append(end << DATE_BITS)
        return f"{rowid} >= ? AND {rowid} < ?"


def _conjuncts(node: Node) -> tuple[Node, ...]:
    return node.nodes if isinstance(node, And) else (node,)


@dataclass(frozen=True)
class _Plan:
    source: str
    """``FROM … WHERE …`` of the matching messages, as ``m``."""
    params: list[Any]
    rowid: str
    """What orders them by date: the full-text index's rowid when it leads."""
    words_lead: bool


def _plan(db: Any, query: Query, *, rows: bool = True, tags_lead: bool | None = None) -> _Plan:
    """Where the matches of ``query`` come from.

    If some of the conditions that must all hold are words, the full-text
    index leads (joined to ``m`` only if ``rows`` or another condition needs it), and
    the matches come straight from it, newest first. Without words, ``tags_lead``
    (the default) looks tagged messages up from the tag's index; otherwise each message
    is tested for its tags, which is quicker only to find the newest few of many
    tagged ones (see :data:`FEW_TAGGED`).
    """
    conjuncts = _conjuncts(query.root)
    searched = [c for c in conjuncts if not isinstance(c, Not) and _fts5(c)]
    rest = [c for c in conjuncts if c not in searched and not isinstance(c, Everything)]
    compiler = _Compiler(not searched if tags_lead is None else tags_lead)
    if not searched:
        where = [compiler.condition(c) for c in rest]
        source = "messages m" + (" WHERE " + " AND ".join(f"({w})" for w in where) if where else "")
        return _Plan(" FROM " + source, compiler.params, "m.rowid", False)
    compiler.params.append(" AND ".join(f"({_fts5(c)})" for c in searched))
    join = rows or any(not isinstance(c, Dates) for c in rest)
    where = ["f.messages_fts MATCH ?"]
    where += [f"({compiler.condition(c, rowid='f.rowid')})" for c in rest]
    source = "messages_fts f" + (" JOIN messages m ON m.rowid = f.rowid" if join else "")
    return _Plan(f" FROM {source} WHERE " + " AND ".join(where), compiler.params, "f.rowid", True)


def _order(plan: _Plan, sort: Sort) -> str:
    """Newest first (undated last), ties in arrival order, or all of it reversed: the
    rowid order."""
    return f"{plan.rowid} {'DESC' if sort == 'newest' else 'ASC'}"


FEW_TAGGED = 2000
"""A page of at most this many tagged matches is found from the tag's index and sorted;
of more, by testing messages newest first, which soon finds a page of them. Over
100,000 messages, a tag on 97 old ones took 820 ms to find the second way and 1 ms
the first; counting a tag on 31,000 took 190 ms the second way and 57 ms the first."""


def _run(db: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    try:
        return list(db.execute(sql, params))
    except Exception as e:  # the FTS5 parser may still refuse an expression
        if "fts5" in str(e).lower():
            raise QueryError(f"the search engine cannot read this query: {e}") from None
        raise


def matching_ids(db: Any, query: Query, sort: Sort = "newest") -> list[str]:
    """Ids of every message matching ``query``, newest first (or oldest)."""
    plan = _plan(db, query)
    rows = _run(db, f"SELECT m.id{plan.source} ORDER BY {_order(plan, sort)}", plan.params)
    return [row[0] for row in rows]


def count(db: Any, query: Query) -> int:
    plan = _plan(db, query, rows=False)
    return int(_run(db, f"SELECT count(*){plan.source}", plan.params)[0][0])


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date_text(date: int | None) -> str | None:
    """As a Date header in GMT (``email.utils.format_datetime``'s form, whose module
    takes a search process 10 ms to import)."""
    if date is None:
        return None
    t = datetime.fromtimestamp(date, UTC)
    return f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} {t:%H:%M:%S} GMT"


def search(
    db: Any,
    query: Query,
    limit: int = 20,
    offset: int = 0,
    sort: Sort = "newest",
    snippets: bool = False,
) -> dict[str, Any]:
    """``{"total", "results": [{"id", "thread", "subject", "from", "date", "tags"}]}``
    (each with a ``snippet`` of its text around a word of the query if ``snippets``),
    newest first (or oldest), ``limit`` of them from ``offset`` on."""
    total = count(db, query)
    plan = _plan(db, query)
    if not plan.words_lead:
        plan = _plan(db, query, tags_lead=total <= FEW_TAGGED)
    rows = _run(
        db,
        "SELECT m.id, m.subject, m.sender, m.date, "
        "(SELECT group_concat(name, char(10)) FROM (SELECT DISTINCT t.name "
        "FROM message_tags mt JOIN tags t ON t.id = mt.tag WHERE mt.message = m.id "
        "ORDER BY t.name) AS names), "
        "(SELECT thread FROM message_threads WHERE message = m.id)"
        f"{plan.source} ORDER BY {_order(plan, sort)} LIMIT ? OFFSET ?",
        [*plan.params, limit, offset],
    )
    results = [
        {
            "id": message_id,
            "thread": thread,
            "subject": subject,
            "from": sender,
            "date": _date_text(date),
            "tags": tags.split("\n") if tags else [],
        }
        for message_id, subject, sender, date, tags, thread in rows
    ]
    if snippets:
        texts = _texts(db, [r["id"] for r in results])
        wanted = _wanted_words(query.root)
        for result in results:
            result["snippet"] = snippet(texts.get(result["id"], ""), wanted)
    return {"total": total, "results": results}


def threads(
    db: Any, query: Query, limit: int = 20, offset: int = 0, sort: Sort = "newest"
) -> dict[str, Any]:
    """The threads with a message matching ``query``, the newest activity first (or the
    oldest first): ``{"total", "results": [{"thread", "matched", "messages", "date",
    "subject", "authors", "tags"}]}``. ``date`` is the thread's newest message's (its
    oldest's, oldest first), ``subject`` its first message's, ``authors`` the senders of
    its matching messages in order, ``tags`` those of its matching messages."""
    plan = _plan(db, query)
    hits = f"SELECT m.id{plan.source}"
    if sort == "newest":
        order, dated = "max(m.rowid) DESC", max
    else:
        order, dated = "min(m.rowid) ASC", min
    page = _run(
        db,
        f"SELECT t.thread, count(*) OVER () FROM message_threads t JOIN messages m "
        f"ON m.id = t.message WHERE t.thread IN (SELECT thread FROM message_threads "
        f"WHERE message IN ({hits})) GROUP BY t.thread ORDER BY {order}, t.thread "
        "LIMIT ? OFFSET ?",
        [*plan.params, limit, offset],
    )
    if not page:
        return {"total": count_threads(db, query) if offset else 0, "results": []}
    ids = [thread for thread, _total in page]
    members = _run(
        db,
        f"SELECT t.thread, m.id, m.subject, m.sender, m.date, m.id IN ({hits}) "
        f"FROM message_threads t JOIN messages m ON m.id = t.message "
        f"WHERE t.thread IN ({','.join('?' * len(ids))}) ORDER BY m.rowid",
        [*plan.params, *ids],
    )
    hit_ids = [row[1] for row in members if row[5]]
    tags: dict[str, set[str]] = {}
    for message, name in _run(
        db,
        "SELECT mt.message, t.name FROM message_tags mt JOIN tags t ON t.id = mt.tag "
        f"WHERE mt.message IN ({','.join('?' * len(hit_ids))})",
        hit_ids,
    ):
        tags.setdefault(message, set()).add(name)
    results = []
    for thread in ids:
        rows = [row for row in members if row[0] == thread]
        hit = [row for row in rows if row[5]]
        dates = [row[4] for row in rows if row[4] is not None]
        results.append(
            {
                "thread": thread,
                "matched": len(hit),
                "messages": len(rows),
                "date": _date_text(dated(dates) if dates else None),
                "subject": rows[0][2],
                "authors": list(dict.fromkeys(row[3] for row in hit)),
                "tags": sorted(set().union(*(tags.get(row[1], set()) for row in hit))),
            }
        )
    return {"total": page[0][1], "results": results}


def count_threads(db: Any, query: Query) -> int:
    plan = _plan(db, query)
    sql = "SELECT count(DISTINCT thread) FROM message_threads WHERE message IN "
    sql += f"(SELECT m.id{plan.source})"
    return int(_run(db, sql, plan.params)[0][0])


def _texts(db: Any, ids: list[str]) -> dict[str, str]:
    """The text of each message of ``ids`` (as the index keeps it)."""
    if not ids:
        return {}
    sql = (
        "SELECT m.id, f.body FROM messages m JOIN messages_fts f ON f.rowid = m.rowid "
        f"WHERE m.id IN ({','.join('?' * len(ids))})"
    )
    return dict(_run(db, sql, ids))


def _wanted_words(node: Node) -> list[tuple[str, bool]]:
    """``(word, is a prefix)`` of the words the query looks for (not those it rules out)."""
    match node:
        case Words():
            return [(w, node.prefix and w == node.words[-1]) for w in node.words]
        case And(nodes) | Or(nodes):
            return [w for n in nodes for w in _wanted_words(n)]
        case ThreadOf(inner):
            return _wanted_words(inner)
    return []


SNIPPET_WORDS = 24
_TEXT_WORD = re.compile(r"\w+")


def snippet(text: str, wanted: list[tuple[str, bool]]) -> str:
    """About :data:`SNIPPET_WORDS` words of ``text`` around the first word of ``wanted``
    (from its start if none is there), ``…`` where cut."""
    at = _first(text, wanted)
    before = list(_TEXT_WORD.finditer(text, max(0, at - SNIPPET_LOOK_BACK), at))
    lead = before[-(SNIPPET_WORDS // 3) :]
    start = lead[0].start() if lead else at
    window = list(itertools.islice(_TEXT_WORD.finditer(text, start), SNIPPET_WORDS + 1))
    stop = window[SNIPPET_WORDS].start() if len(window) > SNIPPET_WORDS else len(text)
    cut = text[start:stop].rstrip()
    cut_before = _TEXT_WORD.search(text, 0, start) is not None
    return ("…" if cut_before else "") + cut + ("…" if stop < len(text) else "")


SNIPPET_LOOK_BACK = 400
"""Characters before a match where a snippet's first words are looked for."""


def _first(text: str, wanted: list[tuple[str, bool]]) -> int:
    """Where the first word of ``wanted`` starts in ``text`` (0 if none is there)."""
    if not wanted:
        return 0
    if text.isascii():  # no accents to fold: one search of the text
        found = _pattern(tuple(wanted)).search(text)
        return found.start() if found else 0
    for candidate in _TEXT_WORD.finditer(text):
        word = "".join(words(candidate.group()))
        if any(word.startswith(w) if prefix else word == w for w, prefix in wanted):
            return candidate.start()
    return 0


@cache
def _pattern(wanted: tuple[tuple[str, bool], ...]) -> re.Pattern[str]:
    """The words of ``wanted`` (whole, or as a word's start) in any case."""
    alternatives = (re.escape(w) + ("" if prefix else r"(?!\w)") for w, prefix in wanted)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


def tag_ids(db: Any, name: str) -> list[str]:
    """The live tags of that name, the one every command uses first (two commands that
    made a name at once leave two)."""
    rows = db.execute("SELECT id FROM tags WHERE name=? ORDER BY id", (name,))
    return [row[0] for row in rows]


def shared_names(db: Any) -> list[tuple[str, list[str]]]:
    """``(name, tag ids)`` of every name more than one live tag holds."""
    rows = db.execute(
        "SELECT name, id FROM tags WHERE name IN "
        "(SELECT name FROM tags GROUP BY name HAVING count(*) > 1) ORDER BY name, id"
    )
    found: dict[str, list[str]] = {}
    for name, tag_id in rows:
        found.setdefault(name, []).append(tag_id)
    return list(found.items())


def tag_dots(db: Any, tag_id: str) -> list[tuple[str, str]]:
    """``(message, dot)`` of every add of the tag ``tag_id`` that holds (messages in the
    index or not)."""
    rows = db.execute("SELECT message, dot FROM message_tags WHERE tag=?", (tag_id,))
    return [(message, dot) for message, dot in rows]


def orphan_memberships(db: Any) -> list[tuple[str, str]]:
    """``(message, tag)`` of every membership on a removed tag (left by an earlier
    version, which removed tags without taking them from their messages)."""
    rows = db.execute(
        "SELECT DISTINCT message, tag FROM message_tags WHERE tag NOT IN (SELECT id FROM tags) "
        "ORDER BY message, tag"
    )
    return [(message, tag) for message, tag in rows]


def all_tags(db: Any) -> list[dict[str, Any]]:
    """Every tag with the number of messages in the index that have it (a message out
    of the index keeps its tags, for when it comes back, but is not counted)."""
    rows = db.execute(
        "SELECT t.name, t.id, count(DISTINCT m.id) FROM tags t "
        "LEFT JOIN message_tags mt ON mt.tag = t.id "
        "LEFT JOIN messages m ON m.id = mt.message GROUP BY t.id, t.name ORDER BY t.name"
    )
    return [{"name": name, "id": tag_id, "messages": n} for name, tag_id, n in rows]
