"""The query language: what each query text means, and clear errors for the rest."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventpile.mail.language import (
    ANYWHERE,
    And,
    Dates,
    Everything,
    MessageId,
    Node,
    Not,
    Or,
    QueryError,
    Tag,
    Thread,
    ThreadOf,
    Words,
    parse_query,
)

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC).timestamp()


def tree(text: str) -> Node:
    return parse_query(text, now=NOW).root


def w(*found: str, fields: tuple[str, ...] = ANYWHERE, prefix: bool = False) -> Words:
    return Words(found, fields, prefix)


def at(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "meaning"),
    [
        ("", Everything()),
        ("*", Everything()),
        ("  ", Everything()),
        ("kernel", w("kernel")),
        (
            'kernel "memory leak" fix*',
            And((w("kernel"), w("memory", "leak"), w("fix", prefix=True))),
        ),
        (
            "from:alice OR from:bob",
            Or((w("alice", fields=("sender",)), w("bob", fields=("sender",)))),
        ),
        ("a or b", Or((w("a"), w("b")))),
        ("kernel AND subject:patch", And((w("kernel"), w("patch", fields=("subject",))))),
        (
            "subject:patch NOT from:bob",
            And((w("patch", fields=("subject",)), Not(w("bob", fields=("sender",))))),
        ),
        ("a -b", And((w("a"), Not(w("b"))))),
        ("+a", w("a")),
        ("NOT a", Not(w("a"))),
        ("not not a", Not(Not(w("a")))),
        # terms side by side bind tightest, then NOT, AND, OR
        ("a b OR c", Or((And((w("a"), w("b"))), w("c")))),
        ("a OR b c", Or((w("a"), And((w("b"), w("c")))))),
        ("a NOT b c", And((w("a"), Not(And((w("b"), w("c"))))))),
        ("a AND b OR c AND d", Or((And((w("a"), w("b"))), And((w("c"), w("d")))))),
        ("NOT a OR b", Or((Not(w("a")), w("b")))),
        ("(a OR b) c", And((Or((w("a"), w("b"))), w("c")))),
        ("a (b OR (c -d))", And((w("a"), Or((w("b"), And((w("c"), Not(w("d"))))))))),
        ('"and"', w("and")),
        ("to:ralf", w("ralf", fields=("recipients", "cc"))),
        ("cc:ralf", w("ralf", fields=("cc",))),
        ("Subject:Mips*", w("mips", fields=("subject",), prefix=True)),
        ('from:"Ralf Baechle"', w("ralf", "baechle", fields=("sender",))),
        ("attachment:fix.patch", w("fix", "patch", fields=("attachment",))),
        ("mimetype:text/x-patch", w("text", "x", "patch", fields=("mimetype",))),
        ("body:irq", w("irq", fields=("body",))),
        ("do_page_fault", w("do_page_fault")),
        ("__KERNEL__", w("__kernel__")),
        ("Rösch", w("rosch")),
        ("O'Brien", w("o", "brien")),
        ('ab"c d"', And((w("ab"), w("c", "d")))),
        ("http://example.org/x", None),  # an unknown field: see the errors below
        ("tag:todo is:work", And((Tag("todo"), Tag("work")))),
        ("id:<x@y.org>", MessageId("x@y.org")),
        ("id:x@y.org", MessageId("x@y.org")),
        ("thread:00AB", Thread("00ab")),
        ("thread:{from:mom OR tag:x}", ThreadOf(Or((w("mom", fields=("sender",)), Tag("x"))))),
        ("-thread:{a}", Not(ThreadOf(w("a")))),
        ("after:2015-01-01", Dates(at(2015, 1, 1), None)),
        ("before:2016-02-29", Dates(None, at(2016, 2, 29))),
        ("date:2005", Dates(at(2005, 1, 1), at(2006, 1, 1))),
        ("date:2005-03", Dates(at(2005, 3, 1), at(2005, 4, 1))),
        ("date:2005-12", Dates(at(2005, 12, 1), at(2006, 1, 1))),
        ("date:2005-03..2005-06-15", Dates(at(2005, 3, 1), at(2005, 6, 16))),
        ("date:2005..", Dates(at(2005, 1, 1), None)),
        ("date:..2005-02", Dates(None, at(2005, 3, 1))),
        ("date:7d..", Dates(int(NOW) - 7 * 86400, None)),
        ("date:2w..1d", Dates(int(NOW) - 14 * 86400, int(NOW) - 86400)),
        ("date:3M..", Dates(at(2025, 12, 31, 12), None)),
        ("date:1M..", Dates(at(2026, 2, 28, 12), None)),  # no 31 February: its last day
        ("date:1y..", Dates(at(2025, 3, 31, 12), None)),
        ("date:today", Dates(at(2026, 3, 31), at(2026, 4, 1))),
        ("date:yesterday..", Dates(at(2026, 3, 30), None)),
        ("date:@100..@200", Dates(100, 201)),
    ],
)
def test_what_a_query_means(text: str, meaning: Node | None) -> None:
    if meaning is None:
        with pytest.raises(QueryError):
            tree(text)
    else:
        assert tree(text) == meaning


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour:red", "unknown field"),
        ("http://example.org", "unknown field"),
        ("after:2015-13-01", "YYYY-MM-DD"),
        ("before:yesterday", "YYYY-MM-DD"),
        ("after:2015-1-3", "YYYY-MM-DD"),
        ("date:2005-13", "not a date"),
        ("date:soon", "cannot read 'soon'"),
        ("date:..", "at least one side"),
        ("from:", "needs a value"),
        ("from:@@", "no letter or digit"),
        ("&", "no letter or digit"),
        ('"unbalanced', "double quote is not closed"),
        ('from:"unbalanced', "double quote is not closed"),
        ('patch" fix', "double quote is not closed"),
        ("*irq", r"a \* may only end a word"),
        ("ir*q", r"a \* may only end a word"),
        ("(a OR b", r"a \( is not closed"),
        ("a OR b)", r"a \) has no \("),
        ("()", "nothing inside"),
        ("a AND", "AND needs a term after it"),
        ("OR a", "OR needs a term before it"),
        ("a OR OR b", "OR needs a term before it"),
        ("NOT", "NOT needs a term after it"),
        ("-", "- needs a term after it"),
        ("thread:{a", r"a \{ is not closed"),
        ("tag:{a}", "only thread:"),
    ],
)
def test_what_the_language_cannot_read_is_a_clear_error(text: str, says: str) -> None:
    with pytest.raises(QueryError, match=says):
        tree(text)


def day(when: date) -> int:
    return int(datetime(when.year, when.month, when.day, tzinfo=UTC).timestamp())


@given(st.lists(st.tuples(st.sampled_from(["after", "before"]), st.dates()), max_size=6))
def test_date_bounds_are_conditions_that_all_hold(bounds: list[tuple[str, date]]) -> None:
    found = tree(" ".join(f"{name}:{when.isoformat()}" for name, when in bounds))
    expected = [
        Dates(day(when), None) if name == "after" else Dates(None, day(when))
        for name, when in bounds
    ]
    if len(expected) > 1:
        assert found == And(tuple(expected))
    else:
        assert found == (expected[0] if expected else Everything())
