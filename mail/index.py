"""The message index: full-text search over messages, with their tags and threads.

SQLite FTS5 inside the SQLCipher database; one row of headers per message, tag
membership as observed-remove dots, and each message's thread: the messages linked by
their Message-IDs and References (as notmuch, not by subject). Queries are in
:mod:`eventpile.mail.query`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from eventpile import DomainEvent, Projection, ViewDB, person_of, registers
from eventpile.mail.message import (
    TRASH_TAG_ID,
    MessageIndexed,
    MessageRemoved,
    MessageRetagged,
    MessageTagged,
    MessageUntagged,
)
from eventpile.mail.query import (
    DATE_BITS,
    FTS_COLUMNS,
    INDEX_SCHEMA,
    UNDATED,
    UNDATED_END,
    link_key,
    orphan_memberships,
    shared_names,
)
from eventpile.mail.tag import TagCreated, TagRemoved, TagRenamed

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    sender TEXT NOT NULL,
    date BIGINT,
    size BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_date ON messages(date);
CREATE TABLE IF NOT EXISTS tags (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_name ON tags(name);
CREATE TABLE IF NOT EXISTS message_tags (
    message TEXT NOT NULL, tag TEXT NOT NULL, dot TEXT NOT NULL,
    PRIMARY KEY (message, tag, dot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_tags_tag ON message_tags(tag, message);
CREATE TABLE IF NOT EXISTS message_threads (
    message TEXT PRIMARY KEY, header BIGINT NOT NULL, thread TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_threads_header ON message_threads(header);
CREATE INDEX IF NOT EXISTS message_threads_thread ON message_threads(thread);
CREATE TABLE IF NOT EXISTS message_links (
    link BIGINT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (link, message)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_links_message ON message_links(message);
CREATE TABLE IF NOT EXISTS message_senders (
    address TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (address, message)
) WITHOUT ROWID;
"""
_FTS_NAMES = ", ".join(FTS_COLUMNS)
FULL_TEXT = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    {_FTS_NAMES},
    columnsize=0, tokenize="unicode61 remove_diacritics 2 tokenchars '_'"
);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_terms USING fts5vocab(messages_fts, 'row');
"""
"""The full-text table beside the rows (it keeps the text, for snippets): the words of
:func:`eventpile.mail.language.words`."""


FTS5_SETTINGS = {"deletemerge": 50, "hashsize": 8 * 1024 * 1024}
"""SQLite's FTS5 settings of the index.

``deletemerge``: FTS5 merges a level of the index for its removed rows alone once they
are this share (%) of it. Its default, 10, rewrote the index several times over while
10,000 messages were removed a page at a time (1.2 s of undoing their import, 0.7 s at
50); at 50, removed rows at most double what a search reads of a level. Levels are
still merged together as usual, dropping the removed rows.

``hashsize``: the bytes of new terms FTS5 gathers in memory before it writes them out as
a level. Its default, 1 MB, made a rebuild (one transaction) write ten times as many
small levels, and merge them: 10,000 real messages were indexed in 1.5 s, 1.1 s at 8 MB."""
_TAG = "INSERT INTO message_tags VALUES (?,?,?) ON CONFLICT DO NOTHING"
_UNTAG = "DELETE FROM message_tags WHERE message=? AND tag=? AND dot=?"


class Rows:
    """The ``messages`` rows of a page's messages, read in two queries at its start and
    written in two statements at its end: the rows as the page changes them, and the
    highest rowid of each second its messages are dated in (see ``DATE_BITS``).
    Dearer than anything else of indexing a message was a query for its rowid and an
    insert of its row, each a statement of its own."""

    def __init__(self, db: ViewDB, indexed: Sequence[MessageIndexed], ids: Sequence[str]):
        self.db = db
        self.rowids: dict[str, int] = {}
        """Each message's rowid, of those of the page that have a row."""
        for chunk in _chunks(sorted(set(ids))):
            self.rowids.update(
                db.execute(
                    f"SELECT id, rowid FROM messages WHERE id IN ({_marks(chunk)})", chunk
                ).fetchall()
            )
        self.tops: dict[int, int | None] = {}
        """By second (the lowest rowid of its range): its highest rowid, None if none."""
        self._read_tops(sorted({_second(_date(e.sent)) for e in indexed}))
        self.new: dict[str, tuple[object, ...]] = {}
        """The rows to insert, by message id."""
        self.gone: list[int] = []
        """The rowids of the rows to delete (the page found them in the table)."""

    def _read_tops(self, lows: Sequence[int]) -> None:
        for chunk in _chunks(lows):
            pairs = [bound for low in chunk for bound in (low, _end(low))]
            self.tops.update(
                self.db.execute(
                    f"WITH s(low, high) AS (VALUES {','.join(['(?,?)'] * len(chunk))}) "
                    "SELECT low, (SELECT max(rowid) FROM messages "
                    "WHERE rowid >= s.low AND rowid < s.high) FROM s",
                    pairs,
                ).fetchall()
            )

    def add(self, message_id: str, low: int, row: tuple[object, ...]) -> int:
        """The rowid of a message of second ``low`` without a row: the next of its
        second (if it is full, any free one)."""
        if low not in self.tops:  # a row of the second was removed in the page
            self.write()
            self._read_tops([low])
        top = self.tops[low]
        rowid = low if top is None else top + 1
        if rowid >= _end(low):
            self.write()
            found = self.db.execute(_ANY_ROW, row).fetchone()
            self.tops.clear()  # it may be in any second's range
            rowid = int(found[0])
        else:
            self.tops[low] = rowid
            self.new[message_id] = (rowid, *row)
        self.rowids[message_id] = rowid
        return rowid

    def remove(self, message_id: str) -> int | None:
        """The rowid the message's row had (None if it had none), the row removed."""
        rowid = self.rowids.pop(message_id, None)
        if rowid is None:
            return None
        if self.new.pop(message_id, None) is None:
            self.gone.append(rowid)
        low = _second_of(rowid)
        if self.tops.get(low) == rowid:
            del self.tops[low]  # its next highest is read again when needed
        return rowid

    def write(self) -> None:
        if self.gone:
            self.db.executemany("DELETE FROM messages WHERE rowid=?", [(r,) for r in self.gone])
        if self.new:
            self.db.executemany(_NEW_ROW, sorted(self.new.values()))
        self.gone, self.new = [], {}


@dataclass
class PageWrites:
    """Writes a page defers to its end (:meth:`MessageIndex.apply_page` says why)."""

    rows: Rows
    texts: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """The full text of the messages indexed in the page, by rowid."""
    removed: list[int] = field(default_factory=list)
    """The rowids of the messages removed in the page that were indexed before it."""
    dots: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)
    """Tag membership changes in order: ``(statement, rows)``, alike neighbours merged."""
    leaving: set[str] = field(default_factory=set)
    """The messages removed (or indexed again) in the page that may have been in a thread
    before it: they leave it at the page's end, before ``joining`` join theirs."""
    joining: dict[str, tuple[int, list[int]]] = field(default_factory=dict)
    """The messages indexed in the page (and not removed since) that join their threads
    at its end: ``(key of its Message-ID, keys of its links)`` by message id (see
    :func:`~eventpile.mail.query.link_key`)."""

    def dot(self, sql: str, rows: list[tuple[str, str, str]]) -> None:
        if self.dots and self.dots[-1][0] == sql:
            self.dots[-1][1].extend(rows)
        else:
            self.dots.append((sql, rows))

    def write(self, db: ViewDB) -> None:
        self.rows.write()
        for sql, rows in self.dots:
            db.executemany(sql, rows)
        if self.removed:
            db.executemany(
                "DELETE FROM messages_fts WHERE rowid=?", [(r,) for r in sorted(self.removed)]
            )
        if self.texts:  # staged, and indexed in one statement last (aside, for a large page)
            db.execute(_STAGE)
            db.executemany(_STAGED, [(rowid, *text) for rowid, text in sorted(self.texts.items())])
            db.defer(_INDEX_STAGED)
            db.defer("DELETE FROM temp.fts_staged")
        if self.leaving:
            _leave_threads(db, self.leaving)
        if self.joining:
            _join_threads(db, self.joining)


_STAGE = f"CREATE TEMP TABLE IF NOT EXISTS fts_staged (rowid INTEGER PRIMARY KEY, {_FTS_NAMES})"
_STAGED = f"INSERT INTO temp.fts_staged VALUES (?{',?' * len(FTS_COLUMNS)})"
_INDEX_STAGED = (
    f"INSERT INTO messages_fts (rowid, {_FTS_NAMES}) "
    f"SELECT rowid, {_FTS_NAMES} FROM temp.fts_staged ORDER BY rowid"
)
"""A page's texts go into the full-text index in one statement, which
:meth:`~eventpile.store.views.SQLCipherDB.defer` runs last in its transaction: aside,
when the page is large (its tokenizing holds no GIL there)."""


def _tag_changed(db: ViewDB, event: TagCreated | TagRenamed | TagRemoved) -> None:
    """As :meth:`eventpile.mail.tag.Tag.evolve`: the tag's name and whether it is removed,
    each the latest write; ``tags`` holds the live ones."""
    tag = event.originator_id.hex
    match event:
        case TagCreated(name=new) | TagRenamed(new_name=new):
            registers.write(db, tag, "name", event, new)
    if isinstance(event, TagCreated | TagRemoved):
        registers.write(db, tag, "removed", event, "1" if isinstance(event, TagRemoved) else "")
    name, removed = registers.value(db, tag, "name"), registers.value(db, tag, "removed")
    if removed or name is None:
        db.execute("DELETE FROM tags WHERE id=?", (tag,))
    else:
        db.execute(
            "INSERT INTO tags VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name=excluded.name",
            (tag, name),
        )


class MessageIndex(Projection):
    name: ClassVar[str] = "messages"
    schema: ClassVar[int] = INDEX_SCHEMA
    personal: ClassVar[bool] = True
    topics: ClassVar[tuple[type[DomainEvent], ...]] = (
        MessageIndexed,
        MessageRemoved,
        MessageTagged,
        MessageRetagged,
        MessageUntagged,
        TagCreated,
        TagRenamed,
        TagRemoved,
    )

    def create(self, db: ViewDB) -> None:
        db.script(SCHEMA + FULL_TEXT + registers.SCHEMA)
        for key, value in FTS5_SETTINGS.items():
            row = db.execute("SELECT v FROM messages_fts_config WHERE k=?", (key,)).fetchone()
            if row is None or row[0] != value:
                db.execute(
                    "INSERT INTO messages_fts (messages_fts, rank) VALUES (?, ?)", (key, value)
                )
        db.execute(
            "INSERT INTO tags VALUES (?, 'trash') ON CONFLICT DO NOTHING", (TRASH_TAG_ID.hex,)
        )

    def apply(self, db: ViewDB, event: DomainEvent, position: int) -> None:
        self.apply_page(db, [(position, event)])

    def apply_page(self, db: ViewDB, events: Sequence[tuple[int, DomainEvent]]) -> None:
        """Some writes are made at the page's end. Tag membership (which nothing else
        in a page reads) in order, each run of adds or removals in one statement. The
        full-text index's changes, in rowid order: FTS5 writes out what it
        holds each time a rowid goes down (mail is not in date order, and an undo
        removes it newest first). That doubled the cost of indexing a message and made
        removing one 15 times dearer."""
        # whether a message is indexed, and with what, is the latest write (a sync brings
        # what two installations did at once in either order)
        written = [e for _, e in events if isinstance(e, MessageIndexed | MessageRemoved)]
        latest = registers.write_many(
            db,
            [
                (e.originator_id.hex, "indexed", e, "1" if isinstance(e, MessageIndexed) else "")
                for e in written
            ],
        )
        indexed = [e for e in written if isinstance(e, MessageIndexed) and e.event_id in latest]
        changed = [e.originator_id.hex for e in written if e.event_id in latest]
        page = PageWrites(Rows(db, indexed, changed))
        for _, event in events:
            self._apply(db, event, page, latest)
        page.write(db)
        # whose messages the log holds, indexed now or not (what ``forget`` may forget)
        senders = {
            (person, e.originator_id.hex)
            for _, e in events
            if isinstance(e, MessageIndexed | MessageRemoved)
            and (person := person_of(e.sender)) is not None
        }
        if senders:
            db.executemany(
                "INSERT INTO message_senders VALUES (?, ?) ON CONFLICT DO NOTHING", sorted(senders)
            )

    def _apply(
        self, db: ViewDB, event: DomainEvent, page: PageWrites, latest: set[uuid.UUID]
    ) -> None:
        match event:
            case MessageIndexed() if event.event_id in latest:
                _index(db, event, page)
            case MessageRemoved() if event.event_id in latest:
                _remove(db, event.originator_id.hex, page)
            case MessageTagged():
                page.dot(_TAG, [(event.originator_id.hex, event.tag_id.hex, event.event_id.hex)])
            case MessageUntagged():
                message, tag = event.originator_id.hex, event.tag_id.hex
                page.dot(_UNTAG, [(message, tag, dot.hex) for dot in event.dots])
            case TagCreated() | TagRenamed() | TagRemoved():
                _tag_changed(db, event)

    def problems(self, db: ViewDB) -> list[str]:
        """Memberships on removed tags: a log written before tags were taken from their
        messages when removed (they are found by no search)."""
        found = []
        held = orphan_memberships(db)
        if held:
            messages = len({message for message, _tag in held})
            found.append(
                f"{len(held):,} tag memberships of {messages:,} messages are on removed tags "
                "(left by an earlier version, or by commands that raced); no search finds "
                "them: 'eventpile tag repair' takes them off (its undo gives them to a tag "
                "of the same name)"
            )
        shared = shared_names(db)
        if shared:
            found.append(
                f"{len(shared):,} tag names are held by more than one tag (commands that "
                "made them at once): 'eventpile tag repair' gives each name's messages to "
                "one tag and removes the others"
            )
        return found

    def content_queries(self) -> Sequence[str]:
        return (
            "SELECT rowid, id, subject, sender, date, size FROM messages ORDER BY rowid",
            "SELECT term, doc, cnt FROM messages_terms ORDER BY term",
            "SELECT id, name FROM tags ORDER BY id",
            "SELECT message, tag, dot FROM message_tags ORDER BY message, tag, dot",
            "SELECT message, header, thread FROM message_threads ORDER BY message",
            "SELECT link, message FROM message_links ORDER BY link, message",
            "SELECT key, register, stamp, value FROM registers ORDER BY key, register",
            "SELECT address, message FROM message_senders ORDER BY address, message",
        )


def _index(db: ViewDB, event: MessageIndexed, page: PageWrites) -> None:
    """One row per message, its rowid the same in a rebuild: its date and arrival (see
    ``DATE_BITS``), so they sort the same way. A message indexed before is removed first."""
    message_id = event.originator_id.hex
    date = _date(event.sent)
    row = (message_id, event.subject, event.sender, date, event.size)
    forgotten = type(event).forgotten  # found by none of their words, nor threaded by them
    parts = (
        *("" if name in forgotten else getattr(event, name) for name in _SAID),
        " ".join(event.attachments),
        " ".join(event.mimetypes),
    )
    header = message_id if "header_id" in forgotten else event.header_id
    if message_id in page.rows.rowids:
        _remove(db, message_id, page)
    page.texts[page.rows.add(message_id, _second(date), row)] = parts
    page.joining[message_id] = (
        link_key(header),
        list(dict.fromkeys(map(link_key, [header, *event.references]))),
    )


_SAID = ("subject", "sender", "to", "cc", "text")
"""The text fields of a message that its words are found in (with its parts' names and
types)."""


_NEW_ROW = "INSERT INTO messages VALUES (?,?,?,?,?,?)"
_ANY_ROW = "INSERT INTO messages VALUES (NULL,?,?,?,?,?) RETURNING rowid"


def _date(sent: datetime | None) -> int | None:
    """A message's date as the index keeps it: seconds since the epoch."""
    return None if sent is None else int(sent.timestamp())


def _second(date: int | None) -> int:
    """The lowest rowid of the second ``date`` (see ``DATE_BITS``)."""
    return UNDATED if date is None else date << DATE_BITS


def _second_of(rowid: int) -> int:
    return UNDATED if rowid < UNDATED_END else rowid >> DATE_BITS << DATE_BITS


def _end(low: int) -> int:
    """The end of the rowids of the second that starts at ``low``."""
    return UNDATED_END if low == UNDATED else low + (1 << DATE_BITS)


def _remove(db: ViewDB, message_id: str, page: PageWrites) -> None:
    joined_here = page.joining.pop(message_id, None) is not None
    rowid = page.rows.remove(message_id)
    if rowid is None:
        return  # it was not in the index
    if not joined_here:
        page.leaving.add(message_id)
    if page.texts.pop(rowid, None) is None:
        page.removed.append(rowid)  # not indexed in this page: in the index


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


LINKS_PER_QUERY = 500


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), LINKS_PER_QUERY):
        yield values[start : start + LINKS_PER_QUERY]


class _Parts:
    """Union-find whose parts are named by their least member: a thread's id depends
    only on which messages it holds, however they came."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def root(self, node: str) -> str:
        while self.parent.setdefault(node, node) != node:
            node = self.parent[node]
        return node

    def join(self, a: str, b: str) -> None:
        a, b = self.root(a), self.root(b)
        self.parent[max(a, b)] = min(a, b)


def _join_threads(db: ViewDB, joining: dict[str, tuple[int, list[int]]]) -> None:
    """The messages join the threads of every message they share a Message-ID with
    (their own or one they refer to), and each other's: the threads they link are
    merged into one. One pass for a page of messages."""
    db.executemany(
        "INSERT INTO message_links VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(link, message) for message, (_, links) in joining.items() for link in links],
    )
    holders: dict[int, list[str]] = {}  # each link's nodes: joining messages, known threads
    for message, (_, links) in joining.items():
        for link in links:
            holders.setdefault(link, []).append(message)
    for chunk in _chunks(list(holders)):
        for link, thread in db.execute(
            "SELECT DISTINCT l.link, t.thread FROM message_links l JOIN message_threads t "
            f"ON t.message = l.message WHERE l.link IN ({_marks(chunk)})",
            chunk,
        ):
            holders[link].append(thread)
    parts = _Parts()
    for nodes in holders.values():
        for node in nodes[1:]:
            parts.join(nodes[0], node)
    db.executemany(
        "INSERT INTO message_threads VALUES (?, ?, ?)",
        [(message, header, parts.root(message)) for message, (header, _) in joining.items()],
    )
    merged = {
        node: parts.root(node)
        for node in list(parts.parent)
        if node not in joining and parts.root(node) != node
    }
    moved: list[tuple[str, str]] = []
    for chunk in _chunks(list(merged)):
        moved += (
            (merged[thread], message)
            for message, thread in db.execute(
                f"SELECT message, thread FROM message_threads WHERE thread IN ({_marks(chunk)})",
                chunk,
            )
        )
    db.executemany(_MOVE, moved)


_MOVE = "UPDATE message_threads SET thread=? WHERE message=?"
"""A message's move to another thread, one row at a time: a statement that may change
several rows makes FTS5 write out the terms it gathers (8 MB, see ``FTS5_SETTINGS``)
at once, which made a rebuild write the full-text index in many small levels (a tenth
of rebuilding the index)."""


def _leave_threads(db: ViewDB, leaving: set[str]) -> None:
    """The messages leave their threads, which may fall apart into several."""
    found: list[tuple[str, str]] = []
    for chunk in _chunks(sorted(leaving)):
        found += db.execute(
            f"SELECT message, thread FROM message_threads WHERE message IN ({_marks(chunk)})",
            chunk,
        ).fetchall()
    for chunk in _chunks([message for message, _ in found]):
        for table in ("message_threads", "message_links"):
            db.execute(f"DELETE FROM {table} WHERE message IN ({_marks(chunk)})", chunk)
    for thread in sorted({thread for _, thread in found}):
        _split(db, thread)


def _split(db: ViewDB, thread: str) -> None:
    """The messages left of ``thread`` as the threads their links make now."""
    parts = _Parts()
    first: dict[int, str] = {}  # each link's first message
    for member, link in db.execute(
        "SELECT t.message, l.link FROM message_threads t JOIN message_links l "
        "ON l.message = t.message WHERE t.thread=?",
        (thread,),
    ):
        parts.join(member, first.setdefault(link, member))
    db.executemany(
        _MOVE,
        [(parts.root(m), m) for m in list(parts.parent) if parts.root(m) != thread],
    )
