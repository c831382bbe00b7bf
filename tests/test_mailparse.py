"""Mailbox reading and message parsing (commands.mailparse) and the synthetic mail generator."""

import base64
import gzip
import hashlib
import mailbox
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from eventpile.commands.operations import answer
from eventpile.domain.operation import Status
from eventpile.mail import mailparse
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox
from eventpile.mail.mailparse import (
    MailboxError,
    MalformedMail,
    ParsedMail,
    count_messages,
    parse_message,
    read_mailbox,
)
from eventpile.mail.synthetic import BASE_DATE, SPAN, synthetic_messages, write_mbox

CORPUS = Path(__file__).resolve().parents[1].parent / "shared/data/linux-mips-2000.mbox.gz"


def mail(*headers: str, body: str | bytes = "Hello.\n") -> bytes:
    """A raw message from header lines and a body."""
    head = "".join(f"{line}\n" for line in headers).encode()
    return head + b"\n" + (body.encode() if isinstance(body, str) else body)


def parse(raw: bytes) -> ParsedMail:
    return parse_message(raw, "test#0")


def only_parsed(results: Iterable[ParsedMail | MalformedMail]) -> list[ParsedMail]:
    """The results as a list, failing on any malformed message."""
    parsed = []
    for item in results:
        assert isinstance(item, ParsedMail), item
        parsed.append(item)
    return parsed


def items(path: Path) -> list[ParsedMail]:
    return only_parsed(read_mailbox(path))


# --- single messages ---------------------------------------------------------------------------


def test_plain_message_fields() -> None:
    raw = mail(
        "From: Jane Doe <jane@example.org>",
        "To: dev@lists.example.org,",
        "    Bob <bob@example.org>",
        "Cc: carol@example.org",
        "Subject: Hello",
        "   world",
        "Date: Tue, 5 Mar 2024 10:00:00 +0100",
        "Message-ID: < abc.123@example.org >",
        body="First   line\n\n\tsecond line\n",
    )
    parsed = parse(raw)
    assert parsed.message_id == "abc.123@example.org"
    assert parsed.subject == "Hello world"
    assert parsed.sender == "Jane Doe <jane@example.org>"
    assert parsed.to == "dev@lists.example.org, Bob <bob@example.org>"
    assert parsed.cc == "carol@example.org"
    assert parsed.date == datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    assert parsed.references == ()
    assert parsed.text == "First line second line"
    assert parsed.size == len(raw)
    assert parsed.location == "test#0"
    # An ordinary message (LF, no mailbox state fields) is its own normal form.
    assert parsed.fingerprint == parsed.raw_fingerprint == hashlib.sha256(raw).hexdigest()


def test_encoded_words_are_decoded() -> None:
    parsed = parse(
        mail(
            "From: =?utf-8?q?Rafa=C5=82_Mi=C5=82ecki?= <rafal@example.org>",
            "To: =?iso-8859-1?q?J=FCrgen?= <j@example.org>",
            # Adjacent encoded words join without the whitespace between them; a multi-byte
            # character may be split across two words of the same charset.
            "Subject: Re: =?UTF-8?Q?caf=C3=A9_?=",
            " =?UTF-8?Q?=E2=80?= =?UTF-8?B?mHF1b3RlZOKAmQ==?= done",
            "Message-ID: <1@example.org>",
        )
    )
    assert parsed.subject == "Re: café ‘quoted’ done"
    assert parsed.sender == "Rafał Miłecki <rafal@example.org>"
    assert parsed.to == "Jürgen <j@example.org>"


def test_undecodable_headers_degrade_to_replacement_characters() -> None:
    raw = (
        b"From: Bj\xf6rn \xc3\xa9 <bjorn@example.org>\n"  # raw 8-bit: latin-1, then UTF-8
        b"Subject: =?x-no-such-charset?q?caf=E9?= =?utf-8?q?ok?=\n"
        b"To: broken =?utf-8?b?A?= base64\n\nbody\n"
    )
    parsed = parse(raw)
    assert parsed.sender == "Bj\ufffdrn \xe9 <bjorn@example.org>"
    assert parsed.subject == "caf\ufffdok"  # unknown charsets are read as UTF-8
    assert parsed.to == "broken =?utf-8?b?A?= base64"  # left as it came
    assert parsed.text == "body"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Doe, Jane" <jane@example.org>', "Doe, Jane <jane@example.org>"),
        ("jane@example.org (Jane Doe)", "Jane Doe <jane@example.org>"),
        ("<jane@example.org>", "jane@example.org"),
        ("undisclosed-recipients:;", "undisclosed-recipients:;"),
    ],
)
def test_sender_forms(value: str, expected: str) -> None:
    assert parse(mail(f"From: {value}", "Subject: x")).sender == expected


def test_missing_message_id_is_the_fingerprint() -> None:
    for raw in (mail("From: a@example.org", "Subject: x"), mail("Message-ID: <>", "To: b@x")):
        parsed = parse(raw)
        assert parsed.message_id == f"sha256:{hashlib.sha256(raw).hexdigest()}"
        assert parsed.message_id == f"sha256:{parsed.fingerprint}"
        marked_read = raw.replace(b"\n\n", b"\nStatus: RO\n\n", 1)
        assert parse(marked_read).message_id == parsed.message_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fri, 4 Dec 2015 21:04:25 -0000", datetime(2015, 12, 4, 21, 4, 25, tzinfo=UTC)),
        ("Fri, 4 Dec 2015 21:04:25", datetime(2015, 12, 4, 21, 4, 25, tzinfo=UTC)),
        ("Sat, 5 Dec 2015 01:30:00 +0530", datetime(2015, 12, 4, 20, 0, tzinfo=UTC)),
        ("yesterday at noon", None),
        ("Mon, 31 Feb 2015 10:00:00 +0000", None),
        ("Fri, 31 Dec 9999 23:30:00 -0100", None),  # beyond datetime.max once in UTC
        ("Tue, 1 Mar 2005 10:00:00 -0500", datetime(2005, 3, 1, 15, 0, tzinfo=UTC)),
        ("Tue, 1 Mar 2005 10:00 +1400", datetime(2005, 2, 28, 20, 0, tzinfo=UTC)),
        ("Tue, 1 Mar 2005 10:00:00 -1400", datetime(2005, 3, 2, 0, 0, tzinfo=UTC)),
        # Zones that are no real ones are read as +0000, as notmuch does.
        ("Tue, 1 Mar 2005 10:00:00 +0480", datetime(2005, 3, 1, 10, 0, tzinfo=UTC)),
        ("Tue, 1 Mar 2005 10:00:00+0480", datetime(2005, 3, 1, 10, 0, tzinfo=UTC)),
        ("Tue, 1 Mar 2005 10:00:00 -1401", datetime(2005, 3, 1, 10, 0, tzinfo=UTC)),
        ("Tue, 1 Mar 2005 10:00:00 +2400 (bogus)", datetime(2005, 3, 1, 10, 0, tzinfo=UTC)),
        ("", None),
    ],
)
def test_dates_become_aware_utc_or_none(value: str, expected: datetime | None) -> None:
    parsed = parse(mail("From: a@example.org", f"Date: {value}"))
    assert parsed.date == expected
    assert parsed.date is None or parsed.date.utcoffset() is not None


def test_references_and_in_reply_to() -> None:
    parsed = parse(
        mail(
            "From: a@example.org",
            "References: <root@example.org> <mid@ex",
            " ample.org>",
            "\t<root@example.org>",
            'In-Reply-To: Your message of "Monday" <parent@example.org>',
        )
    )
    assert parsed.references == ("root@example.org", "mid@example.org", "parent@example.org")


def test_multipart_with_html_only() -> None:
    raw = mail(
        "From: a@example.org",
        'Content-Type: multipart/alternative; boundary="b1"',
        body=(
            "preamble\n--b1\nContent-Type: text/html; charset=utf-8\n\n"
            "<html><head><style>p { color: red }</style></head>"
            "<body><p>Fish &amp; chips</p><!-- hidden --><p>caf&eacute;</p></body></html>\n"
            "--b1--\n"
        ),
    )
    assert parse(raw).text == "Fish & chips café"


@pytest.mark.parametrize(
    "markup",
    ["<script" * 30_000, "<!--" * 50_000, "<a" * 100_000, "<style>x</styl" * 20_000],
)
def test_hostile_html_is_stripped_in_linear_time(markup: str) -> None:
    raw = mail("From: a@example.org", "Content-Type: text/html", body=f"visible {markup}")
    start = time.perf_counter()
    assert parse(raw).text == "visible"
    assert time.perf_counter() - start < 1


def test_html_stray_angle_brackets_are_text() -> None:
    raw = mail("From: a@x", "Content-Type: text/html", body="<p>if a < b &amp;&amp; c > d</p>")
    assert parse(raw).text == "if a < b && c > d"


def test_multipart_prefers_the_first_text_plain_part() -> None:
    raw = mail(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=outer",
        body=(
            "--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
            "--inner\nContent-Type: text/html\n\n<p>html version</p>\n"
            "--inner\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n\n"
            "plain =C3=A9 vers=\nion\n--inner--\n"
            "--outer\nContent-Type: application/octet-stream\n\nxxx\n--outer--\n"
        ),
    )
    assert parse(raw).text == "plain é version"


def test_base64_latin1_body() -> None:
    text = "Grüße aus Köln,\nça va?\n"
    raw = mail(
        "From: a@example.org",
        "Content-Type: text/plain; charset=ISO-8859-1",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(text.encode("iso-8859-1")),
    )
    assert parse(raw).text == "Grüße aus Köln, ça va?"


def test_truncated_base64_and_unknown_charset_still_give_text() -> None:
    raw = mail(
        "From: a@example.org",
        "Content-Type: text/plain; charset=x-klingon",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(b"hello world, and more")[:-4],
    )
    assert parse(raw).text.startswith("hello world")


def test_html_single_part_and_non_text_bodies() -> None:
    html_mail = mail("From: a@x", "Content-Type: text/html", body="<b>bold</b>&nbsp;text")
    assert parse(html_mail).text == "bold text"
    pdf = mail("From: a@x", "Content-Type: application/pdf", body="%PDF-1.4")
    assert parse(pdf).text == ""


def test_text_is_normalised_and_whole() -> None:
    words = " ".join(f"w{i}" for i in range(20_000))
    raw = mail("From: a@example.org", body=" \n\n\t".join(words.split()) + "\x00 end")
    assert len(words) > 100_000
    assert parse(raw).text == words + " end"
    spaced = mail("From: a@example.org", body=" " * 50_000 + "late\x00text")
    assert parse(spaced).text == "late text"


def test_crlf_line_endings() -> None:
    raw = mail("From: a@example.org", "Subject: crlf", " folded", body="one\ntwo\n")
    parsed = parse(raw.replace(b"\n", b"\r\n"))
    assert (parsed.subject, parsed.text) == ("crlf folded", "one two")


def test_lenient_header_block_falls_back_to_the_email_package() -> None:
    # The header block is interrupted by a line that is not a header field.
    raw = b"From: a@example.org\nSubject: odd\nthis is body already\n\nmore body\n"
    parsed = parse(raw)
    assert parsed.subject == "odd"
    assert parsed.text == "this is body already more body"


# --- whole messages: every text, attachment name and content type ------------------------------


def multipart(*parts: str, subtype: str = "mixed", headers: tuple[str, ...] = ()) -> bytes:
    """A multipart message from its parts, each given as header lines, a blank line and a body."""
    body = "".join(f"--b\n{part}\n" for part in parts) + "--b--\n"
    content_type = f"Content-Type: multipart/{subtype}; boundary=b"
    return mail("From: a@example.org", *headers, content_type, body=body)


@pytest.mark.parametrize("lenient", [False, True])
def test_every_to_and_cc_field_counts(lenient: bool) -> None:
    raw = mail(
        "From: a@example.org",
        "To: one@example.org",
        "Cc: Ann <ann@example.org>",
        "To: =?utf-8?q?J=C3=BCrgen?= <j@example.org>,",
        " two@example.org",
        "Cc: bob@example.org",
        "Cc:",  # empty: adds nothing
        "Subject: a repeated To and three Cc fields",
        "Cc: carol@example.org",
        *(["not a field: the email package parses this block"] if lenient else []),
    )
    parsed = parse(raw)
    assert parsed.to == "one@example.org, Jürgen <j@example.org>, two@example.org"
    assert parsed.cc == "Ann <ann@example.org>, bob@example.org, carol@example.org"
    assert parsed.subject == "a repeated To and three Cc fields"  # other fields: the first


PATCH = "--- a/irq.c\n+++ b/irq.c\n@@ -1 +1 @@\n-old_irq();\n+new_irq();\n"
PATCH_WORDS = "--- a/irq.c +++ b/irq.c @@ -1 +1 @@ -old_irq(); +new_irq();"


def test_text_attachments_are_text() -> None:
    raw = multipart(
        "Content-Type: text/plain\n\nPlease apply.",
        "Content-Type: text/x-patch\n"
        'Content-Disposition: attachment; filename="fix-irq.patch"\n\n' + PATCH,
        "Content-Type: text/plain\nContent-Disposition: inline\n\nA second text part.",
        'Content-Type: text/x-diff; name="more.diff"\nContent-Transfer-Encoding: base64\n\n'
        + base64.encodebytes(b"+more();\n").decode(),
    )
    parsed = parse(raw)
    assert parsed.text == f"Please apply. {PATCH_WORDS} A second text part. +more();"
    assert parsed.attachments == ("fix-irq.patch", "more.diff")
    assert parsed.mimetypes == ("multipart/mixed", "text/plain", "text/x-patch", "text/x-diff")


def test_single_part_patch() -> None:
    raw = mail("From: a@example.org", 'Content-Type: text/x-patch; name="a.patch"', body=PATCH)
    parsed = parse(raw)
    assert (parsed.text, parsed.attachments, parsed.mimetypes) == (
        PATCH_WORDS,
        ("a.patch",),
        ("text/x-patch",),
    )


def test_long_parts_are_kept_whole() -> None:
    words = " ".join(f"w{i}" for i in range(20_000))
    raw = multipart(
        f"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n{words}=\nend",
        f"Content-Type: text/x-log\n\n{words}",
    )
    assert parse(raw).text == f"{words}end {words}"


@pytest.mark.parametrize("html_first", [False, True])
def test_alternative_reads_the_plain_text_once(html_first: bool) -> None:
    parts = ["Content-Type: text/plain\n\nplain words", "Content-Type: text/html\n\n<p>html</p>"]
    parsed = parse(multipart(*(parts[::-1] if html_first else parts), subtype="alternative"))
    assert parsed.text == "plain words"
    assert set(parsed.mimetypes) == {"multipart/alternative", "text/plain", "text/html"}


def test_alternative_names_and_types_count_though_its_text_does_not() -> None:
    related = (
        "Content-Type: multipart/related; boundary=c\n\n"
        "--c\nContent-Type: text/html\n\n<p>html words</p>\n"
        '--c\nContent-Type: image/png; name="logo.png"\nContent-Transfer-Encoding: base64\n\n'
        "iVBORw0KGgo=\n--c--"
    )
    parsed = parse(
        multipart("Content-Type: text/plain\n\nplain words", related, subtype="alternative")
    )
    assert parsed.text == "plain words"
    assert parsed.attachments == ("logo.png",)
    assert parsed.mimetypes == (
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
    )
    # Without a text/plain or text/html alternative, the last one is read.
    html_only = parse(multipart("Content-Type: image/png\n\nxx", related, subtype="alternative"))
    assert html_only.text == "html words"


def test_html_parts_outside_alternatives_are_text() -> None:
    raw = multipart("Content-Type: text/plain\n\nintro", "Content-Type: text/html\n\n<b>more</b>")
    assert parse(raw).text == "intro more"


FORWARDED = mail(
    "From: Ann <ann@example.org>",
    "To: bob@example.org",
    "Cc: c1@example.org",
    "Cc: c2@example.org",
    "Subject: =?utf-8?q?Caf=C3=A9?= plans",
    "Message-ID: <inner@example.org>",
    "Content-Type: multipart/mixed; boundary=c",
    body=(
        "--c\nContent-Type: text/plain\n\nOriginal body words.\n"
        "--c\nContent-Type: application/pdf; name=menu.pdf\n\n%PDF-1.4\n--c--\n"
    ),
).decode()


def test_forwarded_messages_are_text() -> None:
    raw = multipart(
        "Content-Type: text/plain\n\nSee below.",
        f"Content-Type: message/rfc822\nContent-Disposition: inline\n\n{FORWARDED}",
        headers=("Subject: Fwd: Café plans", "Message-ID: <outer@example.org>"),
    )
    parsed = parse(raw)
    assert parsed.message_id == "outer@example.org"
    assert parsed.text == (
        "See below. Café plans Ann <ann@example.org> bob@example.org "
        "c1@example.org, c2@example.org Original body words."
    )
    assert parsed.attachments == ("menu.pdf",)
    assert parsed.mimetypes == (
        "multipart/mixed",
        "text/plain",
        "message/rfc822",
        "application/pdf",
    )


def test_a_single_part_forwarded_message_is_parsed_in_full() -> None:
    raw = mail("From: a@example.org", "Content-Type: message/rfc822", body=FORWARDED)
    parsed = parse(raw)
    assert parsed.text == (
        "Café plans Ann <ann@example.org> bob@example.org "
        "c1@example.org, c2@example.org Original body words."
    )
    assert parsed.mimetypes == (
        "message/rfc822",
        "multipart/mixed",
        "text/plain",
        "application/pdf",
    )


def test_other_parts_are_listed_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    get_payload = Message.get_payload

    def spy(self: Message, i: int | None = None, decode: bool = False) -> object:
        if decode:
            decoded.append(self.get_content_type())
        return get_payload(self, i, decode)

    monkeypatch.setattr(Message, "get_payload", spy)
    pdf = base64.encodebytes(b"%PDF-1.4 secret words").decode()
    raw = multipart(
        "Content-Type: text/plain\n\nReport attached.",
        'Content-Type: application/pdf; name="report.pdf"\nContent-Transfer-Encoding: base64\n'
        f"Content-Disposition: attachment\n\n{pdf}",
    )
    parsed = parse(raw)
    assert parsed.text == "Report attached."
    assert parsed.attachments == ("report.pdf",)
    assert parsed.mimetypes == ("multipart/mixed", "text/plain", "application/pdf")
    assert decoded == ["text/plain"]

    def refuse(data: bytes, encoding: str) -> bytes:
        raise AssertionError("transfer-decoded")

    monkeypatch.setattr(mailparse, "_transfer_decode", refuse)
    single = mail(
        "From: a@example.org",
        "Content-Type: application/pdf; name=report.pdf",
        "Content-Transfer-Encoding: base64",
        body=pdf,
    )
    parsed = parse(single)
    assert (parsed.text, parsed.attachments, parsed.mimetypes) == (
        "",
        ("report.pdf",),
        ("application/pdf",),
    )


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ("Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.pdf", "€ rates.pdf"),
        (  # RFC 2231 continuations
            "Content-Disposition: attachment;\n filename*0*=iso-8859-1''R%E9sum%E9;\n"
            ' filename*1=" final.txt"',
            "Résumé final.txt",
        ),
        (
            'Content-Type: application/pdf; name="=?UTF-8?B?UmVjaG51bmcgTcOkcnoucGRm?="',
            "Rechnung März.pdf",
        ),
        (
            'Content-Disposition: attachment; filename="=?iso-8859-1?q?caf=E9?= menu.pdf"',
            "café menu.pdf",
        ),
        ('Content-Disposition: inline; filename="Übersicht.pdf"', "Übersicht.pdf"),  # raw UTF-8
        (
            'Content-Type: text/plain; name="a.txt"\nContent-Disposition: inline; filename=b.txt',
            "b.txt",
        ),
        ('Content-Disposition: attachment; filename="  two\n  lines.pdf "', "two lines.pdf"),
    ],
)
def test_file_names(fields: str, name: str) -> None:
    single = mail("From: a@example.org", fields, body="x")
    within = multipart("Content-Type: text/plain\n\nbody", f"{fields}\n\nx")
    assert parse(single).attachments == parse(within).attachments == (name,)


def test_undecodable_file_names_are_left_out() -> None:
    raw = mail(
        "From: a@example.org", "Content-Disposition: attachment; filename*=idna''x", body="x"
    )
    assert parse(raw).attachments == ()


@pytest.mark.parametrize(
    "raw",
    [
        mail("From: a@example.org", body="plain\ttext"),
        mail("From: a@example.org", 'Content-Type: text/x-patch; name="a.patch"', body=PATCH),
        mail("From: a@x", "Content-Type: text/html; charset=latin-1", body="<i>caf&eacute;</i>"),
        mail(
            "From: a@example.org",
            "Content-Type: text/plain; charset=iso-8859-1",
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt",
            body=base64.encodebytes("Grüße".encode("iso-8859-1")),
        ),
        mail("From: a@example.org", "Content-Type: application/pdf; name=a.pdf", body="%PDF"),
        mail("From: a@example.org", "Content-Type: image/png", body="\x89PNG"),
    ],
)
def test_single_part_bodies_read_as_a_full_parse_would(raw: bytes) -> None:
    parsed = parse(raw)
    full = mailparse._contents(message_from_bytes(raw, policy=compat32))
    assert (parsed.text, parsed.attachments, parsed.mimetypes) == full


def nested_multipart(depth: int) -> bytes:
    parts = [f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth)]
    body = "".join(parts) + f"--b{depth}\nContent-Type: text/plain\n\ndeep text\n"
    return mail("From: a@example.org", "Content-Type: multipart/mixed; boundary=b0", body=body)


def test_nested_multipart() -> None:
    assert parse(nested_multipart(100)).text == "deep text"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (nested_multipart(5000), "nested too deeply"),
        (b"", "empty message"),
        (b" \r\n\n\t", "empty message"),
        (b"just some text\nwithout headers\n", "no header fields"),
        (b"\x00\x01\x02\xff\xfe binary", "no header fields"),
        (b"\nSubject: after a blank line\n", "no header fields"),
        (b"X-Foo: bar\nX-Bar: baz\n\nbody\n", "no From, To, Subject, Date or Message-ID"),
    ],
)
def test_malformed_messages(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMail, match=reason) as caught:
        parse_message(raw, "mbox:/x#7")
    assert caught.value.location == "mbox:/x#7"
    assert str(caught.value).startswith("mbox:/x#7: ")
    assert "\n" not in str(caught.value)


_CONTROL = {chr(c) for c in [*range(32), 127]}


def check_parsed(parsed: ParsedMail, raw: bytes) -> None:
    """Invariants of any parse result."""
    fields = (parsed.message_id, parsed.subject, parsed.sender, parsed.to, parsed.cc)
    for text in (*fields, *parsed.references):
        assert not _CONTROL & set(text)
        text.encode("utf-8")  # no lone surrogates
    for text in (parsed.text, *parsed.attachments):
        assert not _CONTROL & set(text)
        text.encode("utf-8")
        assert text == " ".join(text.split())  # one line, single spaces
    assert all(parsed.attachments)
    assert parsed.mimetypes and len(set(parsed.mimetypes)) == len(parsed.mimetypes)
    assert all(ctype == ctype.lower() and "/" in ctype for ctype in parsed.mimetypes)
    assert parsed.date is None or parsed.date.tzinfo is UTC
    assert parsed.message_id
    assert all(parsed.references)
    assert parsed.size == len(raw)
    assert parsed.raw_fingerprint == hashlib.sha256(raw).hexdigest()
    assert len(parsed.fingerprint) == 64 and int(parsed.fingerprint, 16) >= 0


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_raise_malformed(raw: bytes) -> None:
    try:
        parsed = parse_message(raw, "fuzz")
    except MalformedMail:
        return
    check_parsed(parsed, raw)


_NAMES = st.sampled_from(
    [
        *("From", "To", "Cc", "Subject", "Date", "Message-ID", "References", "In-Reply-To"),
        *("Content-Type", "Content-Transfer-Encoding", "MIME-Version", "X-Junk", "From "),
        "Content-Disposition",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "=?utf-8?q?caf=C3=A9?=",
            "=?utf-8?b?Y2Fmw6k?=",
            "=?bogus?q?x?=",
            "=?utf-16?b?2D3eAA==?=",
            "=?unicode_escape?q?=5Cud800?=",
            "=?idna?q?x?=",
            "multipart/mixed; boundary=b",
            "message/rfc822",
            "text/x-patch; name=a.patch",
            "attachment; filename*=idna''x",
            "attachment; filename*=unicode_escape''%5Cud800",
            'inline; filename="=?utf-8?q?caf=C3=A9?="',
            "text/html; charset=utf-7",
            "text/plain; charset*=utf-8''%E2%82%AC",
            "base64",
            "quoted-printable",
            "<a@b> <c@d",
            "Mon, 1 Jan 9999 23:00:00 -2359",
            '"q\\"uoted" <x@y>',
        ]
    ),
)


@given(
    st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    st.sampled_from(["\n", "\r\n", "\n "]),
    st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
)
def test_header_shaped_input_parses_or_raises_malformed(
    fields: list[tuple[str, str]], separator: str, body: bytes
) -> None:
    head = separator.join(f"{name}: {value}" for name, value in fields)
    raw = head.encode("utf-8", "surrogatepass") + b"\n\n" + body
    try:
        parsed = parse_message(raw, "fuzz")
    except MalformedMail:
        return
    check_parsed(parsed, raw)


# --- mailboxes ---------------------------------------------------------------------------------


def test_mbox_reading_matches_the_stdlib(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "box.mbox", 40, seed=3)
    parsed = items(path)
    assert count_messages(path) == len(parsed) == 40
    stdlib = mailbox.mbox(path, create=False)
    for key, item in zip(stdlib.iterkeys(), parsed, strict=True):
        assert item.location == f"mbox:{path.resolve()}#{key}"
        assert item.fingerprint == hashlib.sha256(stdlib.get_bytes(key)).hexdigest()


def test_mbox_edge_cases_match_the_stdlib(tmp_path: Path) -> None:
    path = tmp_path / "edge.mbox"
    path.write_bytes(
        b"From a\nFrom: x@y\n\nbody\n\n"  # ordinary: the blank line belongs to the separator
        b"From b\nFrom c\n"  # an empty message, directly followed by the next From_ line
        b"From: x@y\n\nno blank line before the next From_ line\n"
        b"From d\n\nFrom e\nFrom: x@y\n\n>From escaped\nlast\n\n"
    )
    stdlib = mailbox.mbox(path, create=False)
    got = list(read_mailbox(path))
    assert len(got) == len(stdlib) == count_messages(path) == 5
    for key, item in zip(stdlib.iterkeys(), got, strict=True):
        raw = stdlib.get_bytes(key)
        if isinstance(item, ParsedMail):
            assert item.raw_fingerprint == hashlib.sha256(raw).hexdigest()
        else:
            assert not raw.strip()
    assert [type(item).__name__ for item in got] == [
        "ParsedMail",
        "MalformedMail",
        "ParsedMail",
        "MalformedMail",
        "ParsedMail",
    ]


def test_malformed_messages_do_not_abort_the_iteration(tmp_path: Path) -> None:
    good = list(synthetic_messages(3, seed=5))
    junk = [b"not a header line\nat all\n", b"\x89PNG\r\n\x1a\n\x00\x00", b"X-Only: custom\n"]
    path = tmp_path / "mixed.mbox"
    with path.open("wb") as f:
        for raw in (good[0], junk[0], good[1], junk[1], junk[2], good[2]):
            f.write(b"From someone Mon Jan  1 00:00:00 2024\n" + raw + b"\n")
    got = list(read_mailbox(path))
    assert [isinstance(item, ParsedMail) for item in got] == [True, False, True, False, False, True]
    malformed = [item for item in got if isinstance(item, MalformedMail)]
    assert [item.location.rsplit("#")[1] for item in malformed] == ["1", "3", "4"]
    assert all(item.location.startswith(f"mbox:{path.resolve()}#") for item in malformed)


def test_gzip_mbox_is_detected_by_magic_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = write_mbox(tmp_path / "box.mbox", 25, seed=4)
    expected = [(item.message_id, item.fingerprint) for item in items(plain)]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in ("box.mbox.gz", "box.archive"):
        packed = tmp_path / name
        packed.write_bytes(gzip.compress(plain.read_bytes()))
        assert count_messages(packed) == 25
        stream = read_mailbox(packed)
        first = next(stream)
        assert isinstance(first, ParsedMail)
        assert first.location == f"mbox:{packed.resolve()}#0"
        rest = only_parsed([first, *stream])
        assert [(item.message_id, item.fingerprint) for item in rest] == expected
        assert list(scratch.iterdir()) == []  # the decompressed copy leaves nothing behind


def test_maildir(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    raws = list(synthetic_messages(12, seed=6))
    keys = [box.add(raw) for raw in raws[:8]]
    for raw in raws[8:]:  # some already seen, in cur/ with flags
        message = mailbox.MaildirMessage(raw)
        message.set_subdir("cur")
        message.add_flag("S")
        keys.append(box.add(message))
    parsed = items(tmp_path / "Mail")
    assert count_messages(tmp_path / "Mail") == len(parsed) == 12
    root = (tmp_path / "Mail").resolve()
    assert [item.location for item in parsed] == [f"maildir:{root}#{key}" for key in sorted(keys)]
    stored = [hashlib.sha256(box.get_bytes(key)).hexdigest() for key in sorted(keys)]
    assert [item.fingerprint for item in parsed] == stored
    assert {item.message_id for item in parsed} == {parse(raw).message_id for raw in raws}


def test_maildir_message_vanishing_during_iteration(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Mail", create=True)
    for raw in synthetic_messages(3, seed=8):
        box.add(raw)
    stream = read_mailbox(tmp_path / "Mail")
    assert isinstance(next(stream), ParsedMail)
    box.remove(sorted(box.keys())[1])
    second, third = list(stream)
    assert isinstance(second, MalformedMail)
    assert "cannot read message" in str(second)
    assert isinstance(third, ParsedMail)


def test_empty_mbox(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbox"
    path.touch()
    assert list(read_mailbox(path)) == []
    assert count_messages(path) == 0


def test_bad_paths_raise_mailbox_error_up_front(tmp_path: Path) -> None:
    (tmp_path / "plain-dir").mkdir()
    (tmp_path / "notes.txt").write_text("Dear diary,\nFrom today on\n")
    (tmp_path / "corrupt.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    (tmp_path / "truncated.gz").write_bytes(gzip.compress(b"From a\n\n" * 1000)[:30])
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"hello\n"))
    cases = {
        "missing.mbox": "does not exist",
        "plain-dir": "not a Maildir",
        "notes.txt": "not an mbox file",
        "corrupt.gz": "not a readable gzip file",
        "truncated.gz": "not a readable gzip file",
        "text.gz": "not an mbox file",
    }
    for name, reason in cases.items():
        path = tmp_path / name
        with pytest.raises(MailboxError, match=reason) as caught:
            read_mailbox(path)  # raises before any iteration
        assert str(tmp_path) in str(caught.value)
        assert "\n" not in str(caught.value)
        with pytest.raises(MailboxError, match=reason):
            count_messages(path)


# --- fingerprints: every copy of a message has the same ----------------------------------------

# Header fields that mail clients and IMAP servers write into mailboxes, and mboxcl body sizes.
STATE_FIELDS = (
    *("Status", "X-Status", "X-Keywords", "X-UID", "X-IMAP", "X-IMAPbase", "X-Evolution"),
    *("X-Mozilla-Status", "X-Mozilla-Status2", "X-Mozilla-Keys", "Content-Length", "Lines"),
)
_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x17F, exclude_characters="\x7f"))
_BODY_LINE = _TEXT | st.sampled_from(["", "From here on", ">From there", ">>From afar", "X-UID: 1"])
# A state field, in any case, its value folded or not: its lines.
_STATE_LINES = st.builds(
    lambda name, case, value, folded: [f"{case(name)}: {value}", *(["\t1"] if folded else [])],
    st.sampled_from(STATE_FIELDS),
    st.sampled_from([str, str.lower, str.upper]),
    _TEXT,
    st.booleans(),
)
# How an mbox file quotes a body line: mboxo quotes "From " lines, mboxrd also quoted ones.
_QUOTING = {
    "maildir": lambda line: line,
    "mboxo": lambda line: ">" + line if line.startswith("From ") else line,
    "mboxrd": lambda line: ">" + line if line.lstrip(">").startswith("From ") else line,
}


@st.composite
def messages(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """The header lines and body lines of an ordinary message."""
    names = ("Message-ID", "From", "To", "Subject", "Date")
    return [f"{name}: {draw(_TEXT)}" for name in names], draw(st.lists(_BODY_LINE, max_size=8))


def join(headers: list[str], body: list[str], eol: str = "\n") -> bytes:
    return eol.join([*headers, "", *body, ""]).encode()


@given(
    messages(),
    st.lists(st.tuples(st.integers(0, 5), _STATE_LINES), max_size=4),
    st.sampled_from(sorted(_QUOTING)),
    st.sampled_from(["\n", "\r\n"]),
    st.integers(0, 2),
)
def test_state_fields_line_breaks_and_mbox_quoting_keep_the_fingerprint(
    message: tuple[list[str], list[str]],
    state: list[tuple[int, list[str]]],
    storage: str,
    eol: str,
    blank_lines: int,
) -> None:
    headers, body = message
    original = parse(join(headers, body))
    copy_headers = list(headers)
    for at, lines in state:
        copy_headers[at:at] = lines
    quoted = [_QUOTING[storage](line) for line in body]
    raw = join(copy_headers, quoted, eol) + eol.encode() * blank_lines
    copy = parse_message(raw, "copy#0", mbox=storage != "maildir")
    assert copy.fingerprint == original.fingerprint
    assert copy.raw_fingerprint == hashlib.sha256(raw).hexdigest()
    assert (copy.message_id, copy.subject, copy.sender) == (
        original.message_id,
        original.subject,
        original.sender,
    )
    if storage != "mboxo":  # which mboxo leaves ambiguous: ">From" may have been "From"
        assert copy.text == original.text


@given(messages(), st.sampled_from(["From", "Subject", "Date"]), _TEXT)
def test_a_changed_header_changes_the_fingerprint(
    message: tuple[list[str], list[str]], name: str, value: str
) -> None:
    headers, body = message
    changed = [f"{name}: {value}" if line.startswith(f"{name}:") else line for line in headers]
    assume(changed != headers)
    assert parse(join(changed, body)).fingerprint != parse(join(headers, body)).fingerprint


@given(messages(), st.data())
def test_a_changed_body_byte_changes_the_fingerprint(
    message: tuple[list[str], list[str]], data: st.DataObject
) -> None:
    """Any byte but a line break or the ">" of a quoted "From " line, which are not content."""
    raw = join(*message)
    start = raw.index(b"\n\n") + 2
    assume(start < len(raw) - 1)
    at = data.draw(st.integers(start, len(raw) - 2))  # the last byte is the final line break
    assume(raw[at] not in b"\r\n>")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at] and b not in b"\r\n>"))
    changed = raw[:at] + bytes([byte]) + raw[at + 1 :]
    assert parse(changed).fingerprint != parse(raw).fingerprint


def test_what_is_not_content() -> None:
    raw = mail("From: a@x", "Subject: s", "Message-ID: <m@x>", body="From here\n")
    same = {
        b"From a@x Mon Jan  1 00:00:00 2001\n" + raw,  # an envelope From_ line
        raw.replace(b"Subject: s\n", b"X-IMAP: 1 2\n  3\nSubject: s\nlines: 2\n"),
        raw.replace(b"\nFrom here", b"\n>>From here"),  # a quoting the mailbox added
        raw.replace(b"\n", b"\r\n") + b"\r\n\r\n",
    }
    assert {parse(copy).fingerprint for copy in same} == {parse(raw).fingerprint}
    # A body line or a field that looks like mailbox state is content all the same.
    other = {raw + b"Status: RO\n", raw.replace(b"Subject:", b"X-Status-Note: 1\nSubject:")}
    assert parse(raw).fingerprint not in {parse(copy).fingerprint for copy in other}


def test_mbox_and_maildir_copies_from_the_stdlib(tmp_path: Path) -> None:
    raw = mail(
        "From: a@x",
        "Subject: quoting",
        "Message-ID: <q@x>",
        body="hello\nFrom here on\n>From there\nend\n",
    )
    mbox = mailbox.mbox(tmp_path / "box.mbox")  # writes mboxo quoting
    mbox.add(raw)
    mbox.add(raw.replace(b"Subject:", b"Status: RO\nX-Status: A\nSubject:"))
    mbox.close()
    assert b"\n>From here on" in (tmp_path / "box.mbox").read_bytes()
    maildir = mailbox.Maildir(tmp_path / "Mail")
    maildir.add(raw)
    from_mbox, read = items(tmp_path / "box.mbox")
    [from_maildir] = items(tmp_path / "Mail")
    assert from_mbox.fingerprint == read.fingerprint == from_maildir.fingerprint
    assert from_maildir.text == "hello From here on >From there end"
    assert from_mbox.text == "hello From here on From there end"  # mboxo is ambiguous
    stored = mailbox.mbox(tmp_path / "box.mbox").get_bytes(0)
    assert from_mbox.raw_fingerprint == hashlib.sha256(stored).hexdigest()
    rd = tmp_path / "rd.mbox"  # mboxrd quoting, as other mail programs write it
    quoted = raw.replace(b"\n>From", b"\n>>From").replace(b"\nFrom here", b"\n>From here")
    rd.write_bytes(b"From a@x Mon Jan  1 00:00:00 2001\n" + quoted)
    [from_mboxrd] = items(rd)
    assert from_mboxrd.text == from_maildir.text
    assert from_mboxrd.fingerprint == from_maildir.fingerprint


# --- re-import ---------------------------------------------------------------------------------


def _maildir(path: Path, *raws: bytes) -> Path:
    box = mailbox.Maildir(path)
    for raw in raws:
        box.add(raw)
    return path


_READ = mail("From: a@x", "Subject: one", "Message-ID: <1@x>", "Status: RO", body="From me\n")
_NEW = mail("From: a@x", "Subject: two", "Message-ID: <2@x>", body="text\n")


def test_reimport_skips_copies_marked_read_or_in_another_mailbox(
    app: MailApplication, tmp_path: Path
) -> None:
    first = tmp_path / "first.mbox"
    first.write_bytes(
        b"From a@x Mon Jan  1 00:00:00 2001\n"
        + _READ.replace(b"Status: RO\n", b"").replace(b"\nFrom me", b"\n>From me")
        + b"\nFrom a@x Mon Jan  1 00:00:00 2001\n"
        + _NEW.replace(b"Subject:", b"X-UID: 7\nSubject:")
    )
    assert app.execute(ImportMailbox(path=first)).result["indexed"] == 2
    moved = _maildir(tmp_path / "Mail", _READ, _NEW.replace(b"\n", b"\r\n"))
    again = app.execute(ImportMailbox(path=moved))
    assert again.status is Status.COMPLETE
    assert again.result == {"indexed": 0, "skipped": 2, "failed": 0, "differing": 0}


@contextmanager
def earlier_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fingerprints as earlier versions took them: the digest of the bytes as stored."""
    with monkeypatch.context() as patch:
        patch.setattr(mailparse, "_normal_form", lambda raw, *_: raw)
        yield


def test_a_home_indexed_by_an_earlier_version_knows_its_messages(
    app: MailApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = _READ.replace(b"From me", b"From me, edited")
    first = _maildir(tmp_path / "first", _READ)
    second = _maildir(tmp_path / "second", edited)
    with earlier_version(monkeypatch):
        app.execute(ImportMailbox(path=first))
        asking = app.execute(ImportMailbox(path=second))
        assert asking.status is Status.WAITING
        answer(app, asking.id, "keep-both")
    for mailbox_path in (first, second):  # the message and its kept copy
        again = app.execute(ImportMailbox(path=mailbox_path))
        assert again.result == {"indexed": 0, "skipped": 1, "failed": 0, "differing": 0}
    marked = _maildir(tmp_path / "marked", _READ.replace(b"Status: RO", b"Status: O"))
    # Changed since: the digest stored by an earlier version cannot tell state from content.
    assert app.execute(ImportMailbox(path=marked)).result["differing"] == 1


def test_a_question_asked_by_an_earlier_version_is_answered(
    app: MailApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = _maildir(tmp_path / "edited", _READ.replace(b"From me", b"From me, edited"))
    with earlier_version(monkeypatch):
        app.execute(ImportMailbox(path=_maildir(tmp_path / "first", _READ)))
        asking = app.execute(ImportMailbox(path=edited))
    _, replaced = answer(app, asking.id, "replace")
    assert replaced is not None and replaced.result == {"changed": 1, "missing": 0}


# --- synthetic mail ----------------------------------------------------------------------------


def test_generator_is_deterministic(tmp_path: Path) -> None:
    first = list(synthetic_messages(40, seed=7))
    assert first == list(synthetic_messages(40, seed=7))
    assert first != list(synthetic_messages(40, seed=8))
    a = write_mbox(tmp_path / "a.mbox", 40, seed=7)
    assert a.read_bytes() == write_mbox(tmp_path / "b.mbox", 40, seed=7).read_bytes()
    stdlib = mailbox.mbox(a, create=False)
    assert [stdlib.get_bytes(key) for key in stdlib.iterkeys()] == first  # stored unaltered


def test_synthetic_messages_parse_into_sensible_fields() -> None:
    raws = list(synthetic_messages(400, seed=1))
    assert not any(b"\nFrom " in raw for raw in raws)  # safe in mbox files without escaping
    parsed = [parse_message(raw, f"synthetic#{i}") for i, raw in enumerate(raws)]
    ids = [item.message_id for item in parsed]
    assert len(set(ids)) == len(ids)
    assert not any(msg_id.startswith("sha256:") for msg_id in ids)
    seen: set[str] = set()
    for item, raw in zip(parsed, raws, strict=True):
        check_parsed(item, raw)
        assert item.subject and "=?" not in item.subject
        assert "@" in item.sender and "=?" not in item.sender
        assert item.date is not None and BASE_DATE <= item.date <= BASE_DATE + SPAN
        assert len(item.text) > 40
        assert set(item.references) <= seen  # replies point at earlier messages
        seen.add(item.message_id)
    assert [item.date for item in parsed] == sorted(item.date for item in parsed if item.date)
    assert len({item.sender for item in parsed}) > 100
    assert sum(not item.sender.isascii() for item in parsed) > 20
    assert sum(item.subject.startswith("Re: ") for item in parsed) > 60
    assert sum(item.subject.startswith("[PATCH") for item in parsed) > 20
    assert sum(not item.subject.isascii() for item in parsed) > 2
    assert sum(not item.text.isascii() for item in parsed) > 50
    for marker in (
        b"Content-Type: multipart/alternative",
        b"Content-Type: text/html",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"charset=iso-8859-1",
        b"=?utf-8?b?",
        b"=?iso-8859-1?q?",
    ):
        assert sum(marker in raw for raw in raws) >= 5, marker


# --- the real corpus ---------------------------------------------------------------------------


@pytest.mark.corpus
def test_real_corpus() -> None:
    if not CORPUS.exists():
        pytest.skip("real corpus ../shared/data/linux-mips-2000.mbox.gz not present")
    got = list(read_mailbox(CORPUS))
    assert len(got) == count_messages(CORPUS) == 2000
    parsed = [item for item in got if isinstance(item, ParsedMail)]
    assert len(parsed) == 2000  # the corpus is clean: every message parses
    assert len({item.message_id for item in parsed}) == 2000
    assert all(item.date is not None and item.text for item in parsed)
    assert parsed[0].subject == (
        "[PATCH (v2) 10/11] watchdog: bcm63xx_wdt: Use bcm63xx_timer interrupt directly"
    )
    assert parsed[0].sender == "Simon Arlott <simon@fire.lp0.eu>"
    subjects = {item.subject for item in parsed}
    assert (
        "cannot build Linux 4.4: arch/mips/kernel/signal.c:142:12: error: "
        "‘struct ucontext’ has no member named ‘uc_extcontext’"
    ) in subjects
    senders = {item.sender for item in parsed}
    assert {"Rafał Miłecki <zajec5@gmail.com>", "Ralf Baechle <ralf@linux-mips.org>"} <= senders
    # "-0000" dates (time zone unknown) are taken as UTC.
    assert datetime(2015, 12, 4, 21, 4, 25, tzinfo=UTC) in {item.date for item in parsed}
    # The mbox split matches the stdlib's, key for key.
    with tempfile.NamedTemporaryFile(suffix=".mbox") as copy:
        copy.write(gzip.decompress(CORPUS.read_bytes()))
        copy.flush()
        stdlib = mailbox.mbox(copy.name, create=False)
        keys = list(stdlib.iterkeys())
        assert [f"mbox:{CORPUS.resolve()}#{key}" for key in keys] == [
            item.location for item in parsed
        ]
        digests = [hashlib.sha256(stdlib.get_bytes(key)).hexdigest() for key in keys]
        assert digests == [item.raw_fingerprint for item in parsed]
        # Every text part is text: the messages with several (a C file attached) have them all.
        several = 0
        for key, item in zip(keys, parsed, strict=True):
            if len(item.mimetypes) > 1:
                message = message_from_bytes(stdlib.get_bytes(key), policy=compat32)
                texts = [part for part in message.walk() if part.get_content_maintype() == "text"]
                several += len(texts) > 1
                for part in texts:
                    words = part.get_payload(decode=True).decode(part.get_content_charset("utf-8"))
                    assert " ".join(words.split()) in item.text
    assert several >= 2  # 2 in this corpus
    # The whole text: 852 messages are longer than the 2,000 characters earlier versions kept.
    assert sum(len(item.text) > 2000 for item in parsed) >= 800
    assert max(len(item.text) for item in parsed) > 90_000
    assert sum(item.mimetypes == ("text/plain",) for item in parsed) >= 1900
    assert all("text/plain" in item.mimetypes for item in parsed)
    names = [name for item in parsed for name in item.attachments]
    assert names.count("signature.asc") >= 50 and names.count(".config.gz") >= 10
    assert {"mprotect.c", "test-sigrestart-futex.c"} <= set(names)
    # Only the 8 messages with a body line quoted as ">From " have a fingerprint of their own.
    quoted = [item for item in parsed if item.fingerprint != item.raw_fingerprint]
    assert len(quoted) == 8
    assert "kswapd) From what I see" in quoted[1].text
