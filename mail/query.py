"""Searching the message index: the query language and its SQL.

Kept free of the event model (stdlib only) so a search process starts fast.

Query syntax: words and ``"quoted phrases"`` (only double quotes quote, and quoted
text is never a field) match the subject, sender, recipients and text; ``from:``,
``to:``, ``subject:`` match one of them; ``tag:NAME`` keeps tagged messages;
``after:YYYY-MM-DD`` and ``before:YYYY-MM-DD`` bound the date (after is inclusive,
before exclusive).
All terms must hold. An empty query (or ``*``) matches every message.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from typing import Any

INDEX_SCHEMA = 4
"""Version of the message index tables; bumping it rebuilds the index."""
DATE_BITS = 20
"""SQLite: a dated message's rowid is ``date << DATE_BITS`` plus its arrival order in
that second, so full-text matches come newest first and a date range is a rowid range.
(Past 2**20 messages in one second, a message takes any free rowid: it sorts as newest.)
The price: rowid gaps make the full-text index ~40% bigger and ~25% slower to write."""
UNDATED, UNDATED_END = -(1 << 62), -(1 << 57)
"""SQLite: the rowids of messages without a date, below every dated one (year 1 and on)."""

_COLUMNS = {"from": "sender", "to": "recipients", "subject": "subject"}
_FIELDS = (*_COLUMNS, "tag", "after", "before")


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Term:
    """A word or phrase to match, in one column (or in any); ``prefix``: its last word."""

    text: str
    column: str | None = None
    prefix: bool = False

    def fts5(self) -> str:
        phrase = '"' + self.text.replace('"', '""') + '"' + (" *" if self.prefix else "")
        return phrase if self.column is None else f"{self.column} : {phrase}"

    def tsquery(self) -> str | None:
        """PostgreSQL ``tsquery`` text (None: no word, so it cannot match)."""
        found = [w for w in words(self.text) if len(w.encode()) <= MAX_WORD_BYTES]
        if not found:
            return None
        weight = "" if self.column is None else WEIGHTS[self.column]
        lexemes = [f"'{w}'" + (f":{weight}" if weight else "") for w in found]
        if self.prefix:
            lexemes[-1] = f"'{found[-1]}':*{weight}"
        return "(" + " <-> ".join(lexemes) + ")"


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()
    tags: tuple[str, ...] = ()
    after: int | None = None
    before: int | None = None
    text: str = field(default="", compare=False)

    @property
    def match(self) -> str | None:
        """The terms as an FTS5 query."""
        return " AND ".join(t.fts5() for t in self.terms) or None


WEIGHTS = {"subject": "A", "sender": "B", "recipients": "C", "body": "D"}
"""PostgreSQL: the ``tsvector`` weight that stands for each column."""
MAX_WORD_BYTES = 2046
"""PostgreSQL does not index longer words."""
_WORD = re.compile(r"[^\W_]+")


@cache
def _combining() -> re.Pattern[str]:
    marks = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.combining(chr(c)))
    return re.compile(f"[{re.escape(marks)}]+")


def words(text: str) -> list[str]:
    """The words of ``text`` as FTS5's ``unicode61 remove_diacritics 2`` sees them.

    Lower case, diacritics removed, split at everything but letters and digits.
    The PostgreSQL index is built from these, so both backends find the same words.
    """
    if not text.isascii():
        text = _combining().sub("", unicodedata.normalize("NFD", text))
    return _WORD.findall(text.lower())


def _term(value: str, column: str | None = None) -> Term:
    prefix = value.endswith("*") and len(value) > 1
    return Term(value.rstrip("*") if prefix else value, column, prefix)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _day(name: str, value: str) -> int:
    try:
        day = datetime.strptime(value, "%Y-%m-%d") if _DATE.fullmatch(value) else None
    except ValueError:
        day = None
    if day is None:
        raise QueryError(f"{name}: wants a date as YYYY-MM-DD, not {value!r}")
    return int(day.replace(tzinfo=UTC).timestamp())


_TOKEN = re.compile(r'(?:([^\s":]+):)?(?:"([^"]*)"|([^\s"]*))\s*')
"""A term: an optional ``name:``, then a double-quoted phrase or a run of anything but
spaces and double quotes (apostrophes and backslashes are text: ``O'Brien``)."""


def _tokens(text: str) -> Iterator[tuple[str | None, str]]:
    """``(field name or None, value)`` of each term: quoted text is never a field."""
    position = len(text) - len(text.lstrip())
    while position < len(text):
        found = _TOKEN.match(text, position)
        assert found is not None  # each part of the pattern may match nothing
        name, quoted, bare = found.groups()
        if quoted is None and not bare and text.startswith('"', found.end(3)):  # unmatched
            raise QueryError(f"cannot read the query {text!r}: a double quote is not closed")
        yield name, bare if quoted is None else quoted
        position = found.end()


MAX_TERMS = 32
"""Terms a query may have. Each tag is a subquery: SQLite refuses a few hundred (its
expression tree grows too deep), and PostgreSQL took 8 s to plan 100 (0.2 s for 32)
and minutes and gigabytes for 1,200."""


def parse_query(text: str) -> Query:
    matches: list[Term] = []
    tags: list[str] = []
    after = before = None
    for count, (name, value) in enumerate(_tokens(text), 1):
        if count > MAX_TERMS:
            raise QueryError(f"the query has more than {MAX_TERMS} terms")
        if name is None:
            if value.strip("*"):  # a lone "*" (or "**") matches everything
                matches.append(_term(value))
            continue
        name = name.lower()
        if name not in _FIELDS:
            known = ", ".join(f"{f}:" for f in _FIELDS)
            raise QueryError(f"unknown field {name}: in {text!r} (known: {known})")
        if not value:
            raise QueryError(f"{name}: needs a value")
        if name in _COLUMNS:
            matches.append(_term(value, _COLUMNS[name]))
        elif name == "tag":
            tags.append(unicodedata.normalize("NFC", value))  # as tag names are kept
        elif name == "after":  # each bound holds: the latest after, the earliest before
            day = _day(name, value)
            after = day if after is None else max(after, day)
        else:
            day = _day(name, value)
            before = day if before is None else min(before, day)
    return Query(tuple(matches), tuple(tags), after, before, text)


def _dialect(db: Any) -> str:
    return str(getattr(db, "dialect", "sqlite"))


def _matching(
    db: Any, query: Query, *, rows: bool = True, tags_lead: bool | None = None
) -> tuple[str, list[Any]]:
    """``FROM … WHERE …`` of the messages (``m``) matching ``query``, with its parameters.

    On SQLite the full-text table (``f``) leads, joined to ``m`` if ``rows`` or a tag
    needs it, and dates are rowid ranges (see ``DATE_BITS``): matches come straight
    from the index, newest first. Without words, ``tags_lead`` (the default) looks
    the tagged messages up from the tag's index; otherwise each message is tested
    for its tags, which is quicker only to find the newest few of many tagged ones
    (see :data:`FEW_TAGGED`).
    """
    if tags_lead is None:
        tags_lead = not query.terms
    sqlite = _dialect(db) == "sqlite"
    source, rowid = "messages m", "m.rowid"
    clauses: list[str] = []
    params: list[Any] = []
    if query.terms and sqlite:
        source, rowid = "messages_fts f", "f.rowid"
        if rows or query.tags:
            source += " JOIN messages m ON m.rowid = f.rowid"
        clauses.append("f.messages_fts MATCH ?")
        params.append(query.match)
    elif query.terms:
        parts = [t.tsquery() for t in query.terms]
        if None in parts:  # a term without a word: nothing can match
            clauses.append("1 = 0")
        else:
            clauses.append("m.tsv @@ ?::tsquery")
            params.append(" & ".join(p for p in parts if p))
    for tag in query.tags:
        clauses.append(
            "m.id IN (SELECT mt.message FROM message_tags mt "
            "WHERE mt.tag IN (SELECT id FROM tags WHERE name = ?))"
            if tags_lead
            else "EXISTS (SELECT 1 FROM message_tags mt JOIN tags t ON t.id = mt.tag "
            "WHERE mt.message = m.id AND t.name = ?)"
        )
        params.append(tag)
    if query.after is not None:
        clauses.append(f"{rowid} >= ?" if sqlite else "m.date >= ?")
        params.append(query.after << DATE_BITS if sqlite else query.after)
    if query.before is not None:
        clauses.append(f"{rowid} >= ? AND {rowid} < ?" if sqlite else "m.date < ?")
        params += [UNDATED_END, query.before << DATE_BITS] if sqlite else [query.before]
    return f" FROM {source}" + (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _newest_first(db: Any, query: Query) -> str:
    """Newest first (undated last), ties in arrival order: on SQLite, the rowid order."""
    if _dialect(db) == "sqlite":
        return "f.rowid DESC" if query.terms else "m.rowid DESC"
    return "m.date DESC NULLS LAST, m.rowid DESC"


_JOIN_LINES = {
    "sqlite": "group_concat(name, char(10))",
    "postgresql": "string_agg(name, chr(10) ORDER BY name)",
}
"""The names of a message's tags, sorted, one per line."""


FEW_TAGGED = 2000
"""A page of at most this many tagged matches is found from the tag's index and sorted;
of more, by testing messages newest first, which soon finds a page of them. Over
100,000 messages, a tag on 97 old ones took 820 ms to find the second way and 1 ms
the first; counting a tag on 31,000 took 190 ms the second way and 57 ms the first."""


def _run(db: Any, sql: str, params: list[Any]) -> list[Any]:
    try:
        return list(db.execute(sql, params))
    except Exception as e:  # the FTS5 parser rejects some inputs, e.g. a lone "*"
        if "fts5" in str(e).lower():
            raise QueryError(f"the search engine cannot read this query: {e}") from None
        raise


def matching_ids(db: Any, query: Query) -> list[str]:
    """Ids of every message matching ``query``, newest first."""
    source, params = _matching(db, query)
    rows = _run(db, f"SELECT m.id{source} ORDER BY {_newest_first(db, query)}", params)
    return [row[0] for row in rows]


def search(db: Any, query: Query, limit: int = 20) -> dict[str, Any]:
    """``{"total", "results": [{"id", "subject", "from", "date", "tags"}]}``, newest first."""
    counted, count_params = _matching(db, query, rows=False)
    total = _run(db, f"SELECT count(*){counted}", count_params)[0][0]
    source, params = _matching(db, query, tags_lead=not query.terms and total <= FEW_TAGGED)
    rows = _run(
        db,
        "SELECT m.id, m.subject, m.sender, m.date, "
        f"(SELECT {_JOIN_LINES[_dialect(db)]} FROM (SELECT DISTINCT t.name "
        "FROM message_tags mt JOIN tags t ON t.id = mt.tag WHERE mt.message = m.id "
        f"ORDER BY t.name) AS names){source} ORDER BY {_newest_first(db, query)} LIMIT ?",
        [*params, limit],
    )
    return {
        "total": total,
        "results": [
            {
                "id": message_id,
                "subject": subject,
                "from": sender,
                "date": None
                if date is None
                else format_datetime(datetime.fromtimestamp(date, UTC), usegmt=True),
                "tags": tags.split("\n") if tags else [],
            }
            for message_id, subject, sender, date, tags in rows
        ],
    }


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
    return [{"name": name, "id": tag_id, "messages": count} for name, tag_id, count in rows]
