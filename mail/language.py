"""The query language of the message index: query text to a tree of conditions.

notmuch's language, where it has one (stdlib only, so a search process starts fast):

- words and ``"quoted phrases"`` match the subject, sender, recipients or text;
  ``word*`` matches words that start with ``word`` (``*`` may only end a word);
- ``from:``, ``to:`` (To and Cc), ``cc:``, ``subject:``, ``body:``, ``attachment:``
  (file names) and ``mimetype:`` (part types) match a word or phrase in one place;
- ``tag:NAME`` (or ``is:NAME``), ``id:MESSAGE-ID``, ``thread:ID``, ``thread:{QUERY}``
  (every message of the threads with a message that matches QUERY);
- ``date:SINCE..UNTIL`` (either side may be left out; ``date:X`` is ``date:X..X``),
  each a year, month or day (``2005``, ``2005-03``, ``2005-03-15``, rounded down for
  SINCE and up for UNTIL), ``@SECONDS``, ``today``, ``yesterday``, ``now`` or a time
  ago (``7d``, ``2w``, ``3M``, ``1y``, ``12h``, ``30m``, ``10s``); ``after:YYYY-MM-DD``
  (inclusive) and ``before:YYYY-MM-DD`` (exclusive). Dates are UTC;
- ``AND``, ``OR``, ``NOT`` (in any case), ``-term`` and parentheses. Terms side by side
  are joined by AND and bind tightest, then NOT, AND, OR: ``a b OR c`` is
  ``(a AND b) OR c``, ``a NOT b c`` is ``a AND NOT (b AND c)``.

An empty query (or ``*``) matches every message. Anything else the grammar does not
read is a :class:`QueryError`, never a silently different query.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

ANYWHERE = ("subject", "sender", "recipients", "cc", "body")
"""Where a word without a field is looked for."""
TEXT_FIELDS = {
    "from": ("sender",),
    "to": ("recipients", "cc"),
    "cc": ("cc",),
    "subject": ("subject",),
    "body": ("body",),
    "attachment": ("attachment",),
    "mimetype": ("mimetype",),
}
"""Each field name of the language and the parts of a message it looks in."""
OTHER_FIELDS = ("tag", "is", "id", "thread", "date", "after", "before")
MAX_TERMS = 32
"""Terms a query may have. Each tag is a subquery: SQLite refuses a few hundred (its
expression tree grows too deep)."""


class QueryError(ValueError):
    pass


@dataclass(frozen=True)
class Words:
    """Words side by side (a phrase) in one of ``fields``; ``prefix``: the last one is
    the start of a word. No words: nothing matches."""

    words: tuple[str, ...]
    fields: tuple[str, ...] = ANYWHERE
    prefix: bool = False


@dataclass(frozen=True)
class Tag:
    name: str


@dataclass(frozen=True)
class MessageId:
    value: str


@dataclass(frozen=True)
class Thread:
    id: str


@dataclass(frozen=True)
class ThreadOf:
    """Every message of the threads that have a message matching ``query``."""

    query: Node


@dataclass(frozen=True)
class Dates:
    """Sent at or after ``start`` and before ``end`` (seconds; None: unbounded). A
    message without a date matches no range."""

    start: int | None
    end: int | None


@dataclass(frozen=True)
class Everything:
    pass


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    nodes: tuple[Node, ...]


Node = Words | Tag | MessageId | Thread | ThreadOf | Dates | Everything | Not | And | Or


@dataclass(frozen=True)
class Query:
    root: Node
    text: str = ""


_WORD = re.compile(r"\w+")


@cache
def _combining() -> re.Pattern[str]:
    marks = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.combining(chr(c)))
    return re.compile(f"[{re.escape(marks)}]+")


SHORT_TEXT = 2000
"""Diacritics of a text up to this long are found a character at a time; of a longer
one, by a pattern of every combining mark, which costs a process ~20 ms to make."""


def _without_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    if len(decomposed) <= SHORT_TEXT:
        return "".join(c for c in decomposed if not unicodedata.combining(c))
    return _combining().sub("", decomposed)


def words(text: str) -> list[str]:
    """The words of ``text`` as FTS5's ``unicode61 remove_diacritics 2 tokenchars '_'``
    sees them: lower case, diacritics removed, split at everything but letters, digits
    and ``_`` (``do_page_fault`` is one word, as in notmuch)."""
    return _WORD.findall((text if text.isascii() else _without_marks(text)).lower())


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<paren>[()])
      | (?P<sign>[-+])?
        (?:(?P<name>[^\s"():{}]+):)?
        (?:"(?P<quoted>[^"]*)"|\{(?P<braced>)|(?P<bare>[^\s"()]*))
    )""",
    re.VERBOSE,
)
"""A parenthesis, or a term: an optional sign, an optional ``name:``, then a quoted
phrase, ``{`` (a subquery follows) or a run of anything but spaces, double quotes and
parentheses (apostrophes and backslashes are text: ``O'Brien``)."""
_OPERATORS = frozenset({"and", "or", "not"})


@dataclass(frozen=True)
class _Token:
    kind: str
    """``(``, ``-(``, ``)``, ``and``, ``or``, ``not``, or ``term``."""
    sign: str = ""
    name: str | None = None
    value: str = ""
    quoted: bool = False
    subquery: str | None = None


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        assert match is not None  # a term may be empty
        position = match.end()
        if match["paren"]:
            found.append(_Token(match["paren"]))
            continue
        sign, name, bare = match["sign"] or "", match["name"], match["bare"]
        if sign == "-" and not (bare or name) and text.startswith("(", position):
            found.append(_Token("-("))  # -(a b) is NOT (a b), as tight as a term
            position += 1
        elif match["braced"] is not None:
            end = _closing_brace(text, position)
            found.append(_Token("term", sign, name, subquery=text[position:end]))
            position = end + 1
        elif match["quoted"] is not None:
            found.append(_Token("term", sign, name, match["quoted"], quoted=True))
        elif bare or name:
            if not bare and text.startswith('"', position):
                raise QueryError(f"cannot read the query {text!r}: a double quote is not closed")
            is_operator = not sign and name is None and bare.lower() in _OPERATORS
            found.append(_Token(bare.lower()) if is_operator else _Token("term", sign, name, bare))
        elif text.startswith('"', position):
            raise QueryError(f"cannot read the query {text!r}: a double quote is not closed")
        else:
            raise QueryError(f"cannot read the query {text!r}: {sign} needs a term after it")
    return found


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return position
    raise QueryError(f"cannot read the query {text!r}: a {{ is not closed")


class _Parser:
    """Recursive descent over the tokens, one method per level of precedence."""

    def __init__(self, text: str, now: float) -> None:
        self.text, self.now = text, now
        self.tokens = _tokens(text)
        self.position = 0
        self.terms = 0

    def peek(self) -> str | None:
        return self.tokens[self.position].kind if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def error(self, reason: str) -> QueryError:
        return QueryError(f"cannot read the query {self.text!r}: {reason}")

    def query(self) -> Node:
        if not self.tokens:
            return Everything()
        node = self.or_expression()
        if self.peek() is not None:
            raise self.error("a ) has no ( before it")
        return node

    def or_expression(self) -> Node:
        nodes = [self.and_expression()]
        while self.peek() == "or":
            self.take()
            nodes.append(self.and_expression())
        return nodes[0] if len(nodes) == 1 else Or(tuple(nodes))

    def and_expression(self) -> Node:
        nodes = [self.not_expression()]
        while self.peek() in ("and", "not"):
            if self.peek() == "and":
                self.take()
            nodes.append(self.not_expression())  # "a NOT b" is "a AND NOT b"
        return nodes[0] if len(nodes) == 1 else And(tuple(nodes))

    def not_expression(self) -> Node:
        if self.peek() == "not":
            self.take()
            return Not(self.not_expression())
        return self.group()

    def group(self) -> Node:
        """Terms side by side: all must hold."""
        nodes: list[Node] = []
        while self.peek() in ("term", "(", "-("):
            token = self.take()
            if token.kind == "term":
                nodes.append(self.term(token))
            else:
                inside = self.parenthesised()
                nodes.append(Not(inside) if token.kind == "-(" else inside)
        if nodes:
            return nodes[0] if len(nodes) == 1 else And(tuple(nodes))
        after = self.tokens[self.position - 1].kind.upper() if self.position else ""
        kind = self.peek()
        if kind is None:
            raise self.error(f"{after} needs a term after it")
        if kind == ")":
            raise self.error("a ) has no ( before it")
        raise self.error(f"{kind.upper()} needs a term before it")

    def parenthesised(self) -> Node:
        if self.peek() == ")":
            raise self.error("() has nothing inside")
        node = self.or_expression()
        if self.peek() != ")":
            raise self.error("a ( is not closed")
        self.take()
        return node

    def term(self, token: _Token) -> Node:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QueryError(f"the query has more than {MAX_TERMS} terms")
        node = self.condition(token)
        return Not(node) if token.sign == "-" else node

    def condition(self, token: _Token) -> Node:
        name = None if token.name is None else token.name.lower()
        if token.subquery is not None:
            if name != "thread":
                raise self.error("only thread: takes a {query}")
            return ThreadOf(_Parser(token.subquery, self.now).query())
        if name is None:
            if not token.quoted and token.value.strip("*") == "":
                return Everything()  # a lone "*" matches every message
            return self.phrase(token.value, ANYWHERE)
        if name in TEXT_FIELDS:
            return self.phrase(token.value, TEXT_FIELDS[name], name)
        if name not in OTHER_FIELDS:
            known = ", ".join(f"{f}:" for f in (*TEXT_FIELDS, *OTHER_FIELDS))
            raise QueryError(f"unknown field {name}: in {self.text!r} (known: {known})")
        value = token.value
        if not value:
            raise QueryError(f"{name}: needs a value")
        if name in ("tag", "is"):
            return Tag(unicodedata.normalize("NFC", value))  # as tag names are kept
        if name == "id":
            return MessageId(value.removeprefix("<").removesuffix(">"))
        if name == "thread":
            return Thread(value.lower())
        if name == "after":
            return Dates(_day(name, value), None)
        if name == "before":
            return Dates(None, _day(name, value))
        return _date_range(value, self.now)

    def phrase(self, value: str, fields: tuple[str, ...], name: str | None = None) -> Words:
        field = f"{name}:" if name else ""
        if not value:
            raise QueryError(f"{name}: needs a value")
        prefix = value.endswith("*")
        if "*" in value.rstrip("*"):
            raise QueryError(f"{field}{value}: a * may only end a word (as in irq*)")
        found = words(value.rstrip("*"))
        if not found:
            raise QueryError(f"{field}{value}: has no letter or digit to search for")
        return Words(tuple(found), fields, prefix)


def parse_query(text: str, now: float | None = None) -> Query:
    """The query ``text`` as a tree; ``now`` (seconds) is when ``7d`` counts back from."""
    return Query(_Parser(text, time.time() if now is None else now).query(), text)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _day(name: str, value: str) -> int:
    try:
        day = datetime.strptime(value, "%Y-%m-%d") if _DAY.fullmatch(value) else None
    except ValueError:
        day = None
    if day is None:
        raise QueryError(f"{name}: wants a date as YYYY-MM-DD, not {value!r}")
    return int(day.replace(tzinfo=UTC).timestamp())


_ABSOLUTE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?", re.ASCII)
_AGO = re.compile(r"(\d+)\s*(y|years?|M|months?|w|weeks?|d|days?|h|hours?|m|mins?|s|secs?)")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _date_range(value: str, now: float) -> Dates:
    since, dots, until = value.partition("..")
    if not dots:
        until = since
    start = _instant(since, now, end=False) if since else None
    end = _instant(until, now, end=True) if until else None
    if start is None and end is None:
        raise QueryError("date: needs a date on at least one side of ..")
    return Dates(start, end)


def _instant(text: str, now: float, *, end: bool) -> int:
    """The start (or, with ``end``, the end) of the period ``text`` names."""
    current = datetime.fromtimestamp(now, UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if text.startswith("@") and text[1:].isdigit():
        return int(text[1:]) + end
    if text in ("today", "yesterday"):
        day = midnight - timedelta(days=text == "yesterday")
        return int((day + timedelta(days=end)).timestamp())
    if text == "now":
        return int(now) + end
    if found := _ABSOLUTE.fullmatch(text):
        return _period(text, found, end)
    if found := _AGO.fullmatch(text):
        count, unit = int(found[1]), found[2]
        if unit == "M" or unit.startswith("month") or unit[0] == "y":
            months = count * (12 if unit[0] == "y" else 1)
            return int(_months_back(current, months).timestamp())
        return int(now) - count * _UNIT_SECONDS[unit[0]]
    raise QueryError(
        f"date: cannot read {text!r} (use 2005, 2005-03, 2005-03-15, @SECONDS, today, "
        "yesterday, now, or a time ago such as 7d, 2w, 3M, 1y)"
    )


def _period(text: str, found: re.Match[str], end: bool) -> int:
    year, month, day = int(found[1]), int(found[2] or 1), int(found[3] or 1)
    try:
        start = datetime(year, month, day, tzinfo=UTC)
        if not end:
            return int(start.timestamp())
        if found[3]:
            return int((start + timedelta(days=1)).timestamp())
        if found[2]:
            return int(_months_back(start, -1).timestamp())
        return int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    except (ValueError, OverflowError):
        raise QueryError(f"date: {text!r} is not a date") from None


def _months_back(when: datetime, months: int) -> datetime:
    """``when`` moved back ``months`` calendar months (forward if negative), the day
    kept where the month has it."""
    index = when.year * 12 + when.month - 1 - months
    year, month = divmod(index, 12)
    for day in (when.day, 30, 29, 28):
        try:
            return when.replace(year=year, month=month + 1, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has 28 days")
