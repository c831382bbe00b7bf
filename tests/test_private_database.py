"""Nothing readable on the database server: a dump of a PostgreSQL store in use holds
no private value.

The store holds the 2,000 real messages, tagged, a tag renamed and removed, an undo
and its redo, a mail sent and one refused (its question answered). ``pg_dump`` then
writes out the whole database, and every private value the test wrote or imported is
looked for in it: each word of three or more characters of every subject, address,
name, message text, tag name and private argument, among the words of the dump's text
(its uuids, numbers and binary values aside); and each such word of eight or more
characters among the bytes of its binary values, decoded (shorter ones occur by
chance in megabytes of ciphertext). A canary written in plaintext beside them shows
that the search finds what is there.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from eventpile.commands.operations import answer
from eventpile.commands.undo import Redo, Undo
from eventpile.domain.operation import Status
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.mail.language import words
from eventpile.mail.mailparse import ParsedMail, read_mailbox
from eventpile.mail.message import MessageIndexed
from eventpile.mail.query import parse_query, search
from eventpile.mail.send import SendMail
from eventpile.mail.synthetic import write_mbox
from eventpile.store.home import Home
from eventpile.store.topics import PlainTopics, StoredTopics
from eventpile.testing.postgres import Server as PostgresServer
from tests.conftest import PASSPHRASE
from tests.test_send import Server as SmtpServer
from tests.test_send import free_port

TAGS = ("Quillwort", "Marzipanfeld", "Zanzibarite")
SENT = ("Quentin Blakemore <quentin.blakemore@example.net>", ["Ottoline <ottoline@example.org>"])
SUBJECT, BODY = "Clandestine rendezvous", "Meet at the Oystercatcher lighthouse, Wednesday.\n"
REFUSAL = "554 5.7.1 Glimmerwick refuses"
CANARY = ("Zwieback", "Phantasmagoria")
"""A word of the text and one of the bytes, written in plaintext to prove the search."""

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_BYTEA = re.compile(r"\\\\x([0-9a-f]*)")
_WORD = re.compile(r"\w{3,}")
_LONG_WORD = re.compile(r"\w{8,}")


def _words(texts: Iterable[str]) -> set[str]:
    """Each text's words as written (lower case) and as the index folds them."""
    found: set[str] = set()
    for text in texts:
        found.update(w.lower() for w in _WORD.findall(text))
        found.update(w for w in words(text) if len(w) >= 3)
    return {w for w in found if not w.isdigit()}


def _private_values(corpus: Path) -> list[str]:
    values = [*TAGS, f"{TAGS[0]}-renamed", SENT[0], *SENT[1], SUBJECT, BODY, REFUSAL]
    for item in read_mailbox(corpus):
        if isinstance(item, ParsedMail):
            values += [item.subject, item.sender, *item.to, *item.cc, item.text]
    return values


def _dump(server: PostgresServer, url: str, *options: str) -> str:
    result = subprocess.run(
        [str(server.bindir / "pg_dump"), "--no-owner", *options, url],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _dump_words(dump: str) -> tuple[set[str], set[str]]:
    """The words of the values of the dump's tables, and the long words of the bytes of
    their binary values."""
    rows = "\n".join(re.findall(r"^COPY [^\n]* FROM stdin;\n(.*?)^\\\.$", dump, re.M | re.S))
    blobs = _BYTEA.findall(rows)
    text = _BYTEA.sub(" ", _UUID.sub(" ", rows))
    decoded = " ".join(bytes.fromhex(b).decode("utf-8", "replace") for b in blobs)
    text_words = {w.lower() for w in _WORD.findall(text)}
    return text_words, {w.lower() for w in _LONG_WORD.findall(decoded)}


@pytest.fixture
def used_store(
    pg_url: str, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A store in PostgreSQL after a user's day of mail; its URL."""
    home = Home(tmp_path / "home", database_url=pg_url)
    app = MailApplication(home, home.init(PASSPHRASE))
    smtp = SmtpServer(free_port())
    monkeypatch.setenv("EVENTPILE_SMTP", f"127.0.0.1:{smtp.port}")
    smtp.start()
    try:
        app.execute(ImportMailbox(path=corpus))
        for tag, query in zip(TAGS, ("subject:patch", "from:ralf", "mips"), strict=True):
            app.execute(TagMessages(action="add", tag=tag, query=query))
        app.execute(RenameTag(tag=TAGS[0], new_name=f"{TAGS[0]}-renamed"))
        undone = app.execute(RemoveTag(tag=TAGS[1]))
        app.execute(Undo(operation_id=undone.id))
        app.execute(Redo())
        assert app.execute(SendMail.compose(SENT[0], SENT[1], SUBJECT, BODY)).status is (
            Status.COMPLETE
        )
        smtp.inbox.reply = REFUSAL
        refused = app.execute(SendMail.compose(SENT[0], SENT[1], SUBJECT, BODY))
        assert refused.status is Status.WAITING
        answer(app, refused.id, "cancel")
        assert len(smtp.inbox.received) == 1
    finally:
        smtp.stop()
        app.close()
    yield pg_url


@pytest.mark.postgres
def test_a_dump_of_the_database_holds_no_private_value(
    used_store: str, pg_server: PostgresServer, corpus: Path
) -> None:
    import psycopg

    private = _words(_private_values(corpus))
    with psycopg.connect(used_store, autocommit=True) as connection:
        connection.execute("CREATE TABLE canary (word TEXT, bytes BYTEA)")
        connection.execute(
            "INSERT INTO canary VALUES (%s, %s)", (CANARY[0], f"..{CANARY[1]}..".encode())
        )
    text_words, byte_words = _dump_words(_dump(pg_server, used_store))
    assert CANARY[0].lower() in text_words and CANARY[1].lower() in byte_words
    text_words -= {CANARY[0].lower()}
    byte_words -= {CANARY[1].lower()}
    leaked = sorted(private & text_words)
    assert not leaked, f"{len(leaked)} private words in the dump's text: {leaked[:40]}"
    leaked = sorted(private & byte_words)
    assert not leaked, f"{len(leaked)} private words in the dump's bytes: {leaked[:40]}"
    assert len(private) > 10_000  # the corpus's words were looked for


def test_reads_name_a_type_in_plaintext_only_where_a_log_of_before_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose first events an older version wrote, with plaintext topics: a read
    that reaches them asks for both names of each type, a read past them only for the
    hidden ones, and a rebuild finds every event either way."""
    home = Home(tmp_path / "home")
    old = MailApplication(home, home.init(PASSPHRASE))
    monkeypatch.setattr(old.mapper, "topics", StoredTopics(old.registry, None))  # as before
    old.execute(ImportMailbox(path=write_mbox(tmp_path / "old.mbox", 5, seed=1)))
    old.close()
    monkeypatch.undo()
    with sqlite3.connect(home.events_db) as db:
        db.execute("DROP TABLE eventpile_plain_topics")  # a log of before has none
    app = MailApplication(home, home.unlock(PASSPHRASE))
    try:
        plain_end = cast(PlainTopics, app.recorder).plain_topics_upto()
        app.execute(ImportMailbox(path=write_mbox(tmp_path / "new.mbox", 5, seed=2)))
        assert 0 < plain_end < app.max_position()
        asked: list[tuple[int, list[str]]] = []
        select = cast(Any, app.recorder).select_rows

        def spying(after: int, upto: int, topics: list[str], limit: int) -> Any:
            asked.append((after, list(topics)))
            return select(after, upto, topics, limit)

        monkeypatch.setattr(app.recorder, "select_rows", spying)
        app.view("messages").rebuild(app)
        assert search(app.view("messages").db, parse_query("*"))["total"] == 10
        assert asked[0][0] < plain_end and any(":" in t for t in asked[0][1])
        asked.clear()
        page = app.read(plain_end, app.max_position(), (MessageIndexed,), 100)
        hidden = app.topics.matching([MessageIndexed], plain=False)
        assert len(page) == 5 and asked == [(plain_end, hidden)]
        assert app.topics.stored(MessageIndexed) in hidden and not any(":" in t for t in hidden)
    finally:
        app.close()
