"""Search against a plain model of what a mail user expects, on SQLite and PostgreSQL.

Hypothesis writes a small mailbox (repeated Cc fields, patch attachments, missing
dates, replies and replies to a lost message) and random queries: words, phrases,
prefixes, fields, tags, ids, dates and threads under AND, OR, NOT and ``-``. The
mailbox is imported and tagged through the application's commands; every query's
results, in order, must be what a plain-Python reading of the same messages finds.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.message import message_uuid
from eventpile.mail.query import parse_query, search, threads
from eventpile.store.home import Home
from eventpile.testing.postgres import empty_database
from tests.test_threads import expected_threads

LONG = settings.default.max_examples > 100  # the ``long`` profile
VOCABULARY = (
    *("kernel", "patch", "irq", "do_page_fault", "page", "fault", "Rösch", "rosch", "mips"),
    *("fix", "memory", "leak", "and", "not", "or", "__KERNEL__", "Fault"),
)
NAMES = ("Ann Smith <ann@example.org>", "Bob Rösch <bob@mips.example>", "carol@example.org")
DATES = (
    None,
    datetime(2004, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2005, 1, 1, tzinfo=UTC),
    datetime(2005, 3, 1, 8, 30, tzinfo=UTC),
    datetime(2005, 6, 15, 23, 0, tzinfo=UTC),
    datetime(2006, 2, 1, tzinfo=UTC),
)
RANGES = {
    "date:2005": (datetime(2005, 1, 1, tzinfo=UTC), datetime(2006, 1, 1, tzinfo=UTC)),
    "date:2005-03..2005-06-15": (
        datetime(2005, 3, 1, tzinfo=UTC),
        datetime(2005, 6, 16, tzinfo=UTC),
    ),
    "date:..2004": (None, datetime(2005, 1, 1, tzinfo=UTC)),
    "after:2005-06-15": (datetime(2005, 6, 15, tzinfo=UTC), None),
    "before:2005-01-01": (None, datetime(2005, 1, 1, tzinfo=UTC)),
}
TAGS = ("inbox", "todo")


def tokens(text: str) -> list[str]:
    """Words as a user reads them: letters, digits and ``_``; case and accents aside."""
    plain = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return re.findall(r"\w+", plain.lower())


@dataclass
class Mail:
    message_id: str
    sender: str
    to: list[str]
    cc: list[list[str]]
    """Each Cc field's addresses (a message may repeat the field)."""
    subject: list[str]
    body: list[str]
    patch: list[str] | None
    """The words of an attached patch, if it has one."""
    date: datetime | None
    references: list[str]
    tags: set[str] = field(default_factory=set)

    def parts(self) -> dict[str, str]:
        patch = "" if self.patch is None else " ".join(self.patch)
        return {
            "subject": " ".join(self.subject),
            "sender": self.sender,
            "recipients": ", ".join(self.to),
            "cc": ", ".join(a for c in self.cc for a in c),
            "body": " ".join(self.body) + " " + patch,
            "attachment": "fix.patch" if self.patch is not None else "",
        }

    def raw(self) -> str:
        lines = [
            f"From: {self.sender}",
            f"To: {', '.join(self.to)}",
            *(f"Cc: {', '.join(c)}" for c in self.cc),
            f"Subject: {' '.join(self.subject)}",
            f"Message-ID: <{self.message_id}>",
        ]
        if self.date is not None:
            lines.append(f"Date: {format_datetime(self.date)}")
        if self.references:
            lines.append("References: " + " ".join(f"<{r}>" for r in self.references))
        lines.append("MIME-Version: 1.0")
        body = " ".join(self.body)
        if self.patch is None:
            lines += ["Content-Type: text/plain; charset=utf-8", "", body]
        else:
            lines += [
                'Content-Type: multipart/mixed; boundary="b"',
                "",
                "--b",
                "Content-Type: text/plain; charset=utf-8",
                "",
                body,
                "--b",
                'Content-Type: text/x-patch; charset=utf-8; name="fix.patch"',
                'Content-Disposition: attachment; filename="fix.patch"',
                "",
                " ".join(self.patch),
                "--b--",
            ]
        return "\n".join(lines) + "\n"


def mailbox(mails: list[Mail]) -> bytes:
    return b"".join(
        b"From someone Mon Jan  1 00:00:00 2024\n" + m.raw().encode() + b"\n" for m in mails
    )


text = st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=6)


@st.composite
def mails(draw: st.DrawFn) -> list[Mail]:
    count = draw(st.integers(1, 8))
    found: list[Mail] = []
    for n in range(count):
        earlier = [m.message_id for m in found] + ["lost@example.org"]
        found.append(
            Mail(
                message_id=f"m{n}@example.org",
                sender=draw(st.sampled_from(NAMES)),
                to=draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2)),
                cc=draw(
                    st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2), max_size=3)
                ),
                subject=draw(text),
                body=draw(text),
                patch=draw(st.none() | text),
                date=draw(st.sampled_from(DATES)),
                references=draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True)),
                tags=set(draw(st.sets(st.sampled_from(TAGS)))),
            )
        )
    return found


Model = Callable[[Mail], bool]


def has_phrase(have: list[str], want: list[str], prefix: bool) -> bool:
    for i in range(len(have) - len(want) + 1):
        window = have[i : i + len(want)]
        if window[:-1] == want[:-1] and (
            window[-1].startswith(want[-1]) if prefix else window[-1] == want[-1]
        ):
            return True
    return False


def threads_of(corpus: list[Mail]) -> dict[str, str]:
    """Each message's thread: messages linked by a Message-ID, their own or referred to."""
    return expected_threads({m.message_id: (m.message_id, *m.references) for m in corpus})


FIELDS = {
    "": ("subject", "sender", "recipients", "cc", "body"),
    "from:": ("sender",),
    "to:": ("recipients", "cc"),
    "cc:": ("cc",),
    "subject:": ("subject",),
    "body:": ("body",),
    "attachment:": ("attachment",),
}


@st.composite
def queries(draw: st.DrawFn, corpus: list[Mail], depth: int = 0) -> tuple[str, Model]:
    """A query's text and what it means to the user, as a test of one message."""
    kind = draw(
        st.sampled_from(["leaf"] * 3 + ([] if depth >= 3 else ["and", "or", "not", "thread"]))
    )
    if kind == "and":
        (a, in_a), (b, in_b) = draw(queries(corpus, depth + 1)), draw(queries(corpus, depth + 1))
        joint = draw(st.sampled_from([" ", " AND ", " and "]))
        return f"({a}{joint}{b})", lambda m: in_a(m) and in_b(m)
    if kind == "or":
        (a, in_a), (b, in_b) = draw(queries(corpus, depth + 1)), draw(queries(corpus, depth + 1))
        return f"({a} OR {b})", lambda m: in_a(m) or in_b(m)
    if kind == "not":
        a, in_a = draw(queries(corpus, depth + 1))
        form = draw(st.sampled_from(["NOT ", "-", "not "]))
        return f"({form}{a})", lambda m: not in_a(m)
    if kind == "thread":
        a, in_a = draw(queries(corpus, depth + 1))
        group = threads_of(corpus)
        hit = {group[m.message_id] for m in corpus if in_a(m)}
        return f"thread:{{{a}}}", lambda m: group[m.message_id] in hit
    return draw(leaves(corpus))


@st.composite
def leaves(draw: st.DrawFn, corpus: list[Mail]) -> tuple[str, Model]:
    kind = draw(st.sampled_from(["words", "words", "words", "tag", "id", "date", "all"]))
    if kind == "tag":
        name = draw(st.sampled_from(TAGS))
        return f"tag:{name}", lambda m: name in m.tags
    if kind == "id":
        wanted = draw(st.sampled_from([m.message_id for m in corpus] + ["none@example.org"]))
        return f"id:{wanted}", lambda m: m.message_id == wanted
    if kind == "date":
        spec = draw(st.sampled_from(sorted(RANGES)))
        start, end = RANGES[spec]
        return (
            spec,
            lambda m: (
                m.date is not None
                and (start is None or m.date >= start)
                and (end is None or m.date < end)
            ),
        )
    if kind == "all":
        return "*", lambda m: True
    name = draw(st.sampled_from(sorted(FIELDS)))
    source = draw(st.sampled_from(corpus)).parts()[draw(st.sampled_from(FIELDS[name]))]
    available = tokens(source) or ["kernel"]
    start = draw(st.integers(0, len(available) - 1))
    want = available[start : start + draw(st.integers(1, 2))]
    prefix = draw(st.booleans()) and len(want[-1]) > 2
    if prefix:
        want[-1] = want[-1][: draw(st.integers(1, len(want[-1]) - 1))]
    quoted = len(want) > 1 or want[0] in ("and", "or", "not") or draw(st.booleans())
    shown = " ".join(want) + ("*" if prefix else "")
    shown = f'"{shown}"' if quoted else shown
    columns = FIELDS[name]
    return f"{name}{shown}", lambda m: any(
        has_phrase(tokens(m.parts()[c]), want, prefix) for c in columns
    )


def expected_order(corpus: list[Mail], model: Model) -> list[str]:
    """Newest first, undated last, messages of one second in the order they came."""
    hits = [(m.date, n, m.message_id) for n, m in enumerate(corpus) if model(m)]
    hits.sort(key=lambda h: (h[0] is not None, h[0] or datetime.min, h[1]), reverse=True)
    return [h[2] for h in hits]


@pytest.fixture
def place(tmp_path: Path, database_url: str | None) -> tuple[Path, str | None]:
    return tmp_path, database_url


@settings(max_examples=200 if LONG else 12, deadline=None)
@given(corpus=mails(), data=st.data())
def test_search_finds_what_a_user_reading_the_messages_finds(
    place: tuple[Path, str | None], corpus: list[Mail], data: st.DataObject
) -> None:
    where, url = place
    shutil.rmtree(where / "home", ignore_errors=True)
    if url:
        empty_database(url)
    home = Home(where / "home", url)
    app = MailApplication(home, home.init("a passphrase"))
    try:
        mbox = where / "mail.mbox"
        mbox.write_bytes(mailbox(corpus))
        app.execute(ImportMailbox(path=mbox))
        for tag in TAGS:
            tagged = [f"id:{m.message_id}" for m in corpus if tag in m.tags]
            if tagged:
                app.execute(TagMessages(action="add", tag=tag, query=" OR ".join(tagged)))
        key = app.keyring.purpose_key("message-id")
        header = {message_uuid(key, m.message_id).hex: m.message_id for m in corpus}
        group = threads_of(corpus)
        db = app.view("messages").db
        for _ in range(data.draw(st.integers(1, 8), label="queries")):
            query, model = data.draw(queries(corpus), label="query")
            expected = expected_order(corpus, model)
            found = search(db, parse_query(query), limit=100)
            assert [header[r["id"]] for r in found["results"]] == expected, query
            assert found["total"] == len(expected), query
            oldest = search(db, parse_query(query), limit=100, sort="oldest")["results"]
            assert [header[r["id"]] for r in oldest] == expected[::-1], query
            listed = threads(db, parse_query(query), limit=100)
            assert listed["total"] == len({group[m] for m in expected}), query
            assert sum(t["matched"] for t in listed["results"]) == len(expected), query
    finally:
        app.close()
