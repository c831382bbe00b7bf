"""Hostile input, generated: mailboxes, queries, command arguments and stored rows give
results or clean refusals, never a traceback, and a refusal writes nothing.

Each test runs the profile's examples (25 in ``make test``, 500 in the ``long``
profile); ``EVENTPILE_HOSTILE=25000`` runs 25,000 of each, 100,000 in all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventpile.mail.app import MailApplication
from eventpile.mail.cli import main
from eventpile.mail.commands import ImportMailbox, message_content
from eventpile.mail.language import QueryError, parse_query
from eventpile.mail.mailparse import MailboxError, MalformedMail, ParsedMail, read_mailbox
from eventpile.mail.query import search
from eventpile.mail.synthetic import write_mbox
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from tests.conftest import PASSPHRASE

EXAMPLES = int(os.environ.get("EVENTPILE_HOSTILE", "0")) or settings().max_examples
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailApplication]:
    """A home with 20 messages, tagged."""
    base = tmp_path_factory.mktemp("hostile")
    home = Home(base / "home")
    app = MailApplication(home, home.init(PASSPHRASE))
    app.execute(ImportMailbox(path=write_mbox(base / "m.mbox", 20, seed=8)))
    yield app
    app.close()


# mailboxes ----------------------------------------------------------------------------

_CHARSETS = st.sampled_from(["utf-8", "latin-1", "x-unknown", "utf-7", "", "us-ascii\0", "é"])
_ZONES = st.sampled_from(["+0000", "+0480", "-9999", "+2400", "GMT", "XYZ", ""])
_JUNK = st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace"))


@st.composite
def _part(draw: Any, depth: int = 0) -> bytes:
    """A MIME part: text in some charset and transfer encoding, or a multipart nesting
    more parts (up to 30 deep), or a forwarded message."""
    kind = draw(
        st.sampled_from(["text", "multipart", "rfc822", "junk"] if depth < 30 else ["text"])
    )
    if kind == "multipart":
        boundary = draw(st.sampled_from(["b", "=_x", "", "a" * 80]))
        inner = [draw(_part(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        body = b"".join(b"--" + boundary.encode() + b"\n" + p + b"\n" for p in inner)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\n"
        return b'Content-Type: multipart/mixed; boundary="' + boundary.encode() + b'"\n\n' + body
    if kind == "rfc822":
        return b"Content-Type: message/rfc822\n\n" + draw(_message(depth + 1))
    if kind == "junk":
        return draw(_JUNK)
    charset = draw(_CHARSETS).encode()
    encoding = draw(st.sampled_from([b"7bit", b"base64", b"quoted-printable", b"x-bogus"]))
    return (
        b"Content-Type: text/plain; charset="
        + charset
        + b"\nContent-Transfer-Encoding: "
        + encoding
        + b"\n\n"
        + draw(_JUNK)
    )


@st.composite
def _message(draw: Any, depth: int = 0) -> bytes:
    headers = [
        b"From: " + draw(_JUNK),
        b"Subject: " + draw(_JUNK),
        b"Date: "
        + draw(st.sampled_from([b"Mon, 7 Dec 2026 10:00:00 ", b"yesterday ", b""]))
        + draw(_ZONES).encode(),
        b"Message-ID: <" + draw(_JUNK) + b">",
    ]
    if depth == 0 and draw(st.integers(0, 20)) == 0:
        headers.append(b"X-Long: " + b"x" * 200_000)  # (5 MB: see the test below)
    if draw(st.booleans()):
        headers.append(b"Cc: " + draw(_JUNK))
        headers.append(b"Cc: " + draw(_JUNK))
    body = draw(_part(depth)) if depth < 30 else b""
    return b"\n".join(headers) + b"\n" + body + b"\n"


@st.composite
def mailboxes(draw: Any) -> bytes:
    box = b"".join(
        b"From sender@example.org Mon Dec  7 10:00:00 2026\n" + draw(_message())
        for _ in range(draw(st.integers(1, 3)))
    )
    if draw(st.booleans()):  # truncated anywhere, or with NUL bytes in it
        box = box[: draw(st.integers(0, len(box)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(box)))
        box = box[:at] + b"\0" * draw(st.integers(1, 8)) + box[at:]
    return box


@HOSTILE
@given(box=mailboxes())
def test_a_hostile_mailbox_is_read_as_messages_or_refusals(
    box: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every item is a message whose event can be made, or a malformed mail saying why
    (or the file is refused whole, in one line: it is no mailbox)."""
    path = tmp_path_factory.mktemp("box") / "hostile.mbox"
    path.write_bytes(box)
    try:
        items = list(read_mailbox(path))
    except MailboxError as refusal:
        assert str(refusal) and "\n" not in str(refusal)
        return
    for item in items:
        if isinstance(item, ParsedMail):
            message_content(item)  # what an import records: it validates
        else:
            assert isinstance(item, MalformedMail) and str(item).strip()


def test_a_5_mb_header_line_is_imported(filled: MailApplication, tmp_path: Path) -> None:
    box = tmp_path / "long.mbox"
    box.write_bytes(
        b"From a@example.org Mon Dec  7 10:00:00 2026\nFrom: a@example.org\nSubject: long\n"
        b"X-Long: " + b"x" * 5_000_000 + b"\n\nbody\n"
    )
    assert filled.execute(ImportMailbox(path=box)).result["indexed"] == 1


# queries ------------------------------------------------------------------------------

_QUERY_PARTS = st.sampled_from(
    (
        *("AND", "OR", "NOT", "(", ")", '"', "*", "-", ":", "..", "{", "}", " ", "_", "é", "\0"),
        *("from:", "to:", "subject:", "id:", "thread:", "tag:", "date:", "after:", "before:"),
        *("mimetype:", "attachment:", "2005", "7d", "kernel", "ir*q", "*irq", "x" * 300),
    )
)
_QUERIES = st.lists(_QUERY_PARTS | st.text(max_size=20), max_size=15).map("".join)


@HOSTILE
@given(text=_QUERIES)
def test_a_hostile_query_finds_or_is_refused_in_words(text: str, filled: MailApplication) -> None:
    try:
        query = parse_query(text)
    except QueryError as refusal:  # (the command line prints it as one line: see below)
        assert str(refusal).strip()
        return
    found = search(filled.current("messages"), query, 5)
    assert found["total"] >= len(found["results"])


# command arguments --------------------------------------------------------------------

_ARGUMENTS = st.sampled_from(
    [
        "",
        "-1",
        "0",
        "99999999999999999999",
        "../../etc/passwd",
        "\0",
        "a" * 2000,
        "ünï",
        str(uuid.uuid4()),
        "--json",
        "-n",
        "--limit",
        "*",
        "tag:",
        "(",
        "--offset",
    ]
) | st.text(max_size=30)
_COMMANDS = st.sampled_from(
    [
        ["search"],
        ["tag", "add"],
        ["tag", "remove"],
        ["show"],
        ["undo"],
        ["redo"],
        ["ops"],
        ["log", "-n"],
        ["answer"],
        ["cancel"],
        ["retry"],
        ["import"],
        ["tags"],
    ]
)


@HOSTILE
@given(command=_COMMANDS, arguments=st.lists(_ARGUMENTS, max_size=3))
def test_hostile_arguments_run_or_are_refused_in_one_line_writing_nothing(
    command: list[str],
    arguments: list[str],
    filled: MailApplication,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTPILE_HOME", str(filled.home.path))
    monkeypatch.setenv("EVENTPILE_PASSPHRASE", PASSPHRASE)
    before = filled.max_position()
    code = main([*command, *arguments])
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("eventpile: "), err
        assert filled.max_position() == before, "a refused command wrote"


# stored rows --------------------------------------------------------------------------


@HOSTILE
@given(data=st.data())
def test_a_damaged_stored_row_is_refused_as_tampering(
    data: st.DataObject, filled: MailApplication
) -> None:
    """A bit flipped, the ciphertext cut, or columns swapped with another row's."""
    rows = filled.recorder.select_rows(0, filled.max_position(), (), 100)  # type: ignore[attr-defined]
    position, originator_id, version, topic, state = data.draw(st.sampled_from(rows))
    other = data.draw(st.sampled_from([r for r in rows if r[0] != position]))
    how = data.draw(st.sampled_from(["flip", "cut", "state", "stream", "version", "topic"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(state) * 8 - 1))
        state = state[: at // 8] + bytes([state[at // 8] ^ (1 << at % 8)]) + state[at // 8 + 1 :]
    elif how == "cut":
        state = state[: data.draw(st.integers(0, len(state) - 1))]
    elif how == "state":
        state = other[4]
    elif how == "stream":
        originator_id = data.draw(st.sampled_from(sorted({r[1] for r in rows} - {originator_id})))
    elif how == "version":
        version = data.draw(st.integers(0, 2**31).filter(lambda v: v != version))
    elif other[3] != topic:
        topic = other[3]
    else:
        state = state[:-1]
    with pytest.raises(StoreError):
        filled.mapper.decode(originator_id, version, topic, state)  # type: ignore[attr-defined]


def test_the_hostile_corpus_left_the_home_whole(filled: MailApplication) -> None:
    """(Runs after the others in this module: what they tried wrote nothing wrong.)"""
    assert filled.check_log() == []
    assert all(view.verify(filled) for view in filled.views.values())
