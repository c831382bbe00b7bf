"""Search over a corpus of the cases mail users meet, with exact result sets: repeated
To and Cc fields, long bodies, patch attachments, forwarded mail, html, a bogus time
zone, ``_`` identifiers, accents, threads; on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.message import message_uuid
from eventpile.mail.query import QueryError, parse_query, search, snippet, threads

LONG_BODY = " ".join(["filler"] * 5000 + ["needle_at_the_end"])
MAILS = {
    "cc": """From: Ann <ann@example.org>
To: carol@example.org
To: dave@example.org
Cc: erin@example.org
Cc: bob@example.org
Subject: [PATCH] fix the kernel oops
Date: Mon, 10 Jan 2005 10:00:00 +0000
Message-ID: <cc@example.org>

The kernel oopses in do_page_fault and we fix it.
""",
    "long": f"""From: Bob Smith <bob@example.org>
To: list@example.org
Subject: a long report
Date: Tue, 11 Jan 2005 10:00:00 +0000
Message-ID: <long@example.org>

{LONG_BODY}
""",
    "patch": """From: Jürgen Rösch <juergen@example.org>
To: list@example.org
Subject: [PATCH] irq handler
Date: Wed, 12 Jan 2005 10:00:00 +0000
Message-ID: <patch@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="xyz"

--xyz
Content-Type: text/plain

See the attached patch.
--xyz
Content-Type: text/x-patch; name="fix-irq.patch"
Content-Disposition: attachment; filename="fix-irq.patch"

static irqreturn_t handler(int irq) { return IRQ_HANDLED; }
--xyz
Content-Type: application/pdf; name="scan.pdf"
Content-Disposition: attachment; filename="scan.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K
--xyz--
""",
    "forward": """From: carol@example.org
To: ann@example.org
Subject: Fwd: zoo news
Date: Thu, 13 Jan 2005 10:00:00 +0000
Message-ID: <forward@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="out"

--out
Content-Type: text/plain

Look at this.
--out
Content-Type: message/rfc822

From: keeper@zoo.example
Subject: the zebra escaped
Message-ID: <inner@zoo.example>

A quokka saw it.
--out--
""",
    "zone": """From: dave@example.org
To: ann@example.org
Subject: bogus zone
Date: Tue, 1 Mar 2005 10:00:00 +0480
Message-ID: <zone@example.org>

Defined __KERNEL__ here.
""",
    "html": """From: erin@example.org
To: ann@example.org
Subject: html only
Date: Fri, 14 Jan 2005 10:00:00 +0000
Message-ID: <html@example.org>
MIME-Version: 1.0
Content-Type: text/html

<p>Hello <b>wombat</b> and page fault</p>
""",
    "reply": """From: Bob Smith <bob@example.org>
To: juergen@example.org
Subject: Re: [PATCH] irq handler
Date: Sat, 15 Jan 2005 10:00:00 +0000
Message-ID: <reply@example.org>
In-Reply-To: <patch@example.org>

Applied, thanks.
""",
}


@pytest.fixture
def imported(app: MailApplication, tmp_path: Path) -> MailApplication:
    mbox = tmp_path / "cases.mbox"
    mbox.write_text("".join(f"From x Mon Jan  1 00:00:00 2024\n{raw}\n" for raw in MAILS.values()))
    operation = app.execute(ImportMailbox(path=mbox))
    assert operation.result["indexed"] == len(MAILS)
    app.execute(
        TagMessages(action="add", tag="todo", query="id:cc@example.org OR id:zone@example.org")
    )
    return app


def names(app: MailApplication, query: str) -> set[str]:
    """The cases (keys of MAILS) that ``query`` finds."""
    key = app.keyring.purpose_key("message-id")
    ids = {message_uuid(key, f"{name}@example.org").hex: name for name in MAILS}
    found = search(app.view("messages").db, parse_query(query), limit=100)
    assert found["total"] == len(found["results"])
    return {ids[r["id"]] for r in found["results"]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # every To and Cc field, not only the first
        ("to:dave", {"cc"}),
        ("to:bob", {"cc"}),
        ("cc:bob", {"cc"}),
        ("cc:dave", set()),
        ("to:juergen", {"reply"}),
        # the operators are operators
        ("from:ann OR from:carol", {"cc", "forward"}),
        ("subject:patch NOT from:bob", {"cc", "patch"}),
        ("subject:patch -from:bob", {"cc", "patch"}),
        ("kernel AND subject:patch", {"cc"}),
        ("(from:ann OR from:erin) AND NOT tag:todo", {"html"}),
        ("NOT subject:patch", {"long", "forward", "zone", "html"}),
        ('"and"', {"cc", "html"}),
        # the whole body, the end of a long one too
        ("needle_at_the_end", {"long"}),
        ("filler needle_at_the_end", {"long"}),
        # text attachments, attachment names and part types; not a pdf's bytes
        ("irqreturn_t", {"patch"}),
        ("body:IRQ_HANDLED", {"patch"}),
        ("attachment:fix-irq.patch", {"patch"}),
        ("attachment:scan", {"patch"}),
        ("attachment:pdf", {"patch"}),
        ("mimetype:text/x-patch", {"patch"}),
        ("mimetype:application/pdf", {"patch"}),
        ("mimetype:message/rfc822", {"forward"}),
        ("JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI", set()),
        # forwarded mail: its headers and text
        ("quokka", {"forward"}),
        ("zebra", {"forward"}),
        # html's text, not its markup
        ("wombat", {"html"}),
        ("b", set()),
        # identifiers with _ are one word
        ("do_page_fault", {"cc"}),
        ('"page fault"', {"html"}),
        ("__KERNEL__", {"zone"}),
        ("kernel", {"cc"}),
        # accents folded
        ("from:Rosch", {"patch"}),
        ("from:rösch", {"patch"}),
        # prefixes
        ("wom*", {"html"}),
        ("subject:pat*", {"cc", "patch", "reply"}),
        # dates: the bogus zone +0480 is read as +0000
        ("date:2005-03-01", {"zone"}),
        (f"date:@{int(datetime(2005, 3, 1, 10, tzinfo=UTC).timestamp())}", {"zone"}),
        ("date:2005-01-11..2005-01-13", {"long", "patch", "forward"}),
        ("date:..2005-01-10", {"cc"}),
        ("after:2005-01-15", {"reply", "zone"}),
        ("date:2006..", set()),
        # ids and threads
        ("id:patch@example.org", {"patch"}),
        ("id:<reply@example.org>", {"reply"}),
        ("thread:{id:reply@example.org}", {"patch", "reply"}),
        ("thread:{subject:irq} -from:bob", {"patch"}),
        ("tag:todo", {"cc", "zone"}),
    ],
)
def test_each_case_finds_exactly_its_messages(
    imported: MailApplication, query: str, expected: set[str]
) -> None:
    assert names(imported, query) == expected


def test_a_thread_is_found_by_its_id_and_listed_once(imported: MailApplication) -> None:
    db = imported.view("messages").db
    [reply] = search(db, parse_query("id:reply@example.org"))["results"]
    assert names(imported, f"thread:{reply['thread']}") == {"patch", "reply"}
    listed = threads(db, parse_query("irq OR applied"))
    assert listed["total"] == 1
    [thread] = listed["results"]
    assert (thread["thread"], thread["matched"], thread["messages"]) == (reply["thread"], 2, 2)
    assert thread["subject"] == "[PATCH] irq handler"  # its first message's
    assert thread["date"] == "Sat, 15 Jan 2005 10:00:00 GMT"  # its newest message's
    everything = threads(imported.view("messages").db, parse_query("*"), limit=3)
    assert everything["total"] == len(MAILS) - 1  # one thread of two
    assert everything["results"][0]["messages"] == 1  # the newest activity first: zone
    past = threads(imported.view("messages").db, parse_query("*"), limit=3, offset=100)
    assert past == {"total": len(MAILS) - 1, "results": []}
    oldest = threads(imported.view("messages").db, parse_query("*"), sort="oldest")["results"]
    assert [t["subject"] for t in oldest] == [  # by each thread's first message
        "[PATCH] fix the kernel oops",
        "a long report",
        "[PATCH] irq handler",
        "Fwd: zoo news",
        "html only",
        "bogus zone",
    ]


def test_pages_and_order(imported: MailApplication) -> None:
    db = imported.view("messages").db
    newest = [r["subject"] for r in search(db, parse_query("*"), limit=100)["results"]]
    assert newest[0] == "bogus zone" and newest[-1] == "[PATCH] fix the kernel oops"
    page = search(db, parse_query("*"), limit=2, offset=3)
    assert [r["subject"] for r in page["results"]] == newest[3:5]
    assert page["total"] == len(MAILS)
    oldest = search(db, parse_query("*"), limit=100, sort="oldest")["results"]
    assert [r["subject"] for r in oldest] == newest[::-1]


def test_a_snippet_shows_the_words_around_a_match(imported: MailApplication) -> None:
    db = imported.view("messages").db
    [found] = search(db, parse_query("needle_at_the_end"), snippets=True)["results"]
    assert found["snippet"].startswith("…filler") and found["snippet"].endswith("needle_at_the_end")
    [html] = search(db, parse_query("wombat"), snippets=True)["results"]
    assert html["snippet"] == "Hello wombat and page fault"
    [kernel] = search(db, parse_query("tag:todo from:dave"), snippets=True)["results"]
    assert kernel["snippet"] == "Defined __KERNEL__ here."


@pytest.mark.parametrize("query", ["*irq", "ir*q", "from:a OR", "(kernel", "colour:red"])
def test_a_query_it_cannot_read_is_refused_before_searching(
    imported: MailApplication, query: str
) -> None:
    with pytest.raises(QueryError):
        search(imported.view("messages").db, parse_query(query))


def test_a_huge_message_is_indexed_whole(app: MailApplication, tmp_path: Path) -> None:
    """A text of 200,000 words, one of them 400 times: in the index whole, to its last word."""
    words = [f"w{n}x" for n in range(200_000)]
    words[10:4010:10] = ["often"] * 400
    words[-1] = "finale"
    raw = (
        "From: a@example.org\nTo: b@example.org\nSubject: huge\nMessage-ID: <huge@example.org>\n"
        "Date: Mon, 10 Jan 2005 10:00:00 +0000\n\n" + " ".join(words) + "\n"
    )
    mbox = tmp_path / "huge.mbox"
    mbox.write_text(f"From x Mon Jan  1 00:00:00 2024\n{raw}\n")
    assert app.execute(ImportMailbox(path=mbox)).result["indexed"] == 1
    db = app.view("messages").db
    for query in ("often", '"w0x w1x"', "subject:huge", "w5000x", "finale"):
        assert search(db, parse_query(query))["total"] == 1, query


def plain_snippet(text: str, wanted: list[tuple[str, bool]]) -> str:
    """24 words from 8 before the first wanted one, read a word at a time."""
    spans = [m.span() for m in re.finditer(r"\w+", text)]
    first = next(
        (
            n
            for n, (a, b) in enumerate(spans)
            if any(
                text[a:b].lower().startswith(w) if prefix else text[a:b].lower() == w
                for w, prefix in wanted
            )
        ),
        0,
    )
    begin = max(0, first - 8)
    ends = [*spans, (len(text), len(text))]
    start, stop = ends[begin][0], ends[min(len(ends) - 1, begin + 24)][0]
    cut = text[start:stop].rstrip() if spans else ""
    return ("…" if begin else "") + cut + ("…" if spans and stop < len(text) else "")


SNIPPET_WORDS = ["alpha", "beta", "kernel", "patch", "x_y", "Zed", "a1"]


@given(
    st.lists(
        st.tuples(st.sampled_from(SNIPPET_WORDS), st.sampled_from(["", ",", ". ", " -", "\n"])),
        max_size=80,
    ),
    st.lists(
        st.tuples(st.sampled_from(["alp", "beta", "kernel", "x_", "zed", "a"]), st.booleans()),
        max_size=2,
    ),
)
def test_a_snippet_is_the_words_around_the_first_match(
    parts: list[tuple[str, str]], wanted: list[tuple[str, bool]]
) -> None:
    text = " ".join(word + after for word, after in parts)
    assert snippet(text, wanted) == plain_snippet(text, wanted)
