"""Read mbox, gzip-compressed mbox and Maildir mailboxes into `ParsedMail` records (stdlib only).

For speed, header blocks are split into fields here and single-part bodies are decoded straight
from the raw bytes; the email package's compat32 parser takes over for multipart and message/*
bodies and for header blocks that need its leniency.
"""

import binascii
import gzip
import hashlib
import html
import itertools
import mailbox
import mmap
import multiprocessing
import multiprocessing.queues
import operator
import os
import queue
import re
import signal
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, NoReturn, Protocol, cast

_PARSER = BytesParser(policy=compat32)
_GZIP_MAGIC = b"\x1f\x8b"
_FROM_LINE = b"From "
_SEPARATOR = b"\n" + _FROM_LINE
_CHUNK = 1 << 20
_STEP = 1 << 18
"""The head of a gzip file is decompressed so many bytes at a time (its first messages
are parsed at once)."""
# A message needs at least one of these header fields.
_MAIL_FIELDS = frozenset({"from", "sender", "to", "cc", "subject", "date", "message-id"})
_RECIPIENT_FIELDS = frozenset({"to", "cc"})  # every occurrence counts, not only the first
# Parts the email package reads in full: it parses message/* bodies as messages of their own.
_PARSED_TYPES = frozenset({"multipart", "message"})
_UTF8_ALIASES = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "unknown-8bit", "x-unknown"})
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
# Unclosed scripts, comments and tags run to the end of the text, as in browsers; that also keeps
# the substitutions linear on hostile markup.
_HTML_HIDDEN = re.compile(
    r"<(script|style)\b.*?(?:</\1\s*>|\Z)|<!--.*?(?:-->|\Z)", re.IGNORECASE | re.DOTALL
)
_HTML_TAG = re.compile(r"<[a-zA-Z/!?][^>]*(?:>|\Z)")
_MAX_FIELD = 1 << 16  # longer header values are cut: decode_header is quadratic on odd input
_LOGICAL_LINE = re.compile(r"\n(?![ \t])")  # a line break that is not followed by a fold
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ":"
_NUMERIC_ZONE = re.compile(r"\d:\d\d(?::\d\d)?\s*([+-])(\d+)(?!\S)")  # "10:00:00 +0100"
_MAX_ZONE_MINUTES = 14 * 60
# C0 control characters and DEL become spaces (then folded with the other whitespace).
_CONTROLS = bytes.maketrans(bytes([*range(32), 127]), b" " * 33)
# Header fields that hold mailbox state, not content: read/answered flags, keywords and IMAP
# UIDs that mail clients and IMAP servers write into mbox files (Status to X-Evolution; X-IMAP
# and X-IMAPbase hold a mailbox's UID counters, which change as mail arrives), and the body
# sizes of mboxcl files (Content-Length, Lines), which depend on the mailbox's From_ quoting.
_STATE_FIELDS = frozenset(
    {
        *("status", "x-status", "x-keywords", "x-uid", "x-imap", "x-imapbase"),
        *("x-mozilla-status", "x-mozilla-status2", "x-mozilla-keys", "x-evolution"),
        *("content-length", "lines"),
    }
)
_STATE_FIELD = re.compile(  # after a line break, so that the search looks for "\n" first
    rb"\n(?:%b):[^\n]*(?:\n[ \t][^\n]*)*" % b"|".join(n.encode() for n in sorted(_STATE_FIELDS)),
    re.IGNORECASE,
)
_QUOTED_FROM = re.compile(rb">From ")  # searches faster than bytes.find
_MBOX_QUOTE = re.compile(rb"^>(>*From )", re.MULTILINE)  # one level of mboxo/mboxrd quoting
_ANY_QUOTES = re.compile(rb"^>+From ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """The searchable summary of one raw message and where it lives."""

    message_id: str
    subject: str
    sender: str
    to: str
    cc: str
    date: datetime | None
    references: tuple[str, ...]
    text: str
    """All searchable text, whitespace-normalised: the body, text attachments, forwarded mail."""
    attachments: tuple[str, ...]
    """The file names of its parts (in forwarded mail too), in message order."""
    mimetypes: tuple[str, ...]
    """The distinct content types of its parts, containers included, in first-seen order."""
    size: int
    location: str
    fingerprint: str
    """SHA-256 of the message in a normal form, the same for every copy of it (`_normal_form`)."""
    raw_fingerprint: str
    """SHA-256 of its bytes as stored in the mailbox: what earlier versions took as fingerprint."""

    def __reduce__(self) -> "tuple[type[ParsedMail], tuple[object, ...]]":
        """Pickled as its values, in field order (it crosses from the reading process to
        the importing one): a frozen dataclass's own pickling looks its fields up for each
        message, which cost the importing process a twentieth of its time."""
        return ParsedMail, _parsed_values(self)


_parsed_values = operator.attrgetter(*(field.name for field in fields(ParsedMail)))


class MalformedMail(ValueError):
    """Bytes that cannot be read as an RFC 5322 message."""

    def __init__(self, reason: str, location: str = "") -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location


class MailboxError(ValueError):
    """A path that cannot be read as a mailbox."""


def parse_message(raw: bytes, location: str, mbox: bool = False) -> ParsedMail:
    """Parse one raw message; raise `MalformedMail` if it is not an RFC 5322 message.

    ``mbox``: the bytes come from an mbox file, whose lines starting with "From " are quoted as
    ">From " (and ">From " as ">>From " in mboxrd files): one level of quoting is removed.
    """
    if not raw.strip():
        raise MalformedMail("empty message", location)
    stored, body_start = raw, _body_start(raw)
    quoted = _QUOTED_FROM.search(raw, body_start) is not None
    if mbox and quoted:
        raw = _MBOX_QUOTE.sub(rb"\1", raw)
        body_start = _body_start(raw)
    head = _header_fields(raw[:body_start])
    if head and (content := _content_headers(head[0])).get_content_maintype() not in _PARSED_TYPES:
        encoding = head[0].get("content-transfer-encoding", "")
        text, attachments, mimetypes = _single_part(content, raw[body_start:], encoding)
    else:
        # A full MIME parse, for multipart and message/* bodies and for header blocks that need
        # its leniency.
        try:
            msg = _PARSER.parsebytes(raw)
            text, attachments, mimetypes = _contents(msg)
        except RecursionError as exc:  # the parser recurses once per level of MIME nesting
            raise MalformedMail("MIME parts nested too deeply", location) from exc
        head = head or _message_fields(msg)
    fields, recipients = head
    if not fields:
        raise MalformedMail("no header fields (does not start with 'Name: value' lines)", location)
    if _MAIL_FIELDS.isdisjoint(fields):
        raise MalformedMail("no From, To, Subject, Date or Message-ID header field", location)
    normal = _normal_form(raw, fields, quoted)
    fingerprint = hashlib.sha256(normal).hexdigest()
    return ParsedMail(
        message_id=_message_id(fields.get("message-id", "")) or f"sha256:{fingerprint}",
        subject=_header_text(fields.get("subject", "")),
        sender=_sender(fields.get("from", "")),
        to=_recipients(recipients.get("to", ())),
        cc=_recipients(recipients.get("cc", ())),
        date=_date(fields.get("date", "")),
        references=_references(fields.get("references", ""), fields.get("in-reply-to", "")),
        text=text,
        attachments=attachments,
        mimetypes=mimetypes,
        size=len(raw),
        location=location,
        fingerprint=fingerprint,
        raw_fingerprint=fingerprint if normal == stored else hashlib.sha256(stored).hexdigest(),
    )


def _normal_form(raw: bytes, fields: dict[str, str], quoted: bool) -> bytes:
    """What the fingerprint hashes: the message with LF line breaks, without a leading From_ line
    or the header fields of mailbox state (`_STATE_FIELDS`; ``fields`` maps the names it has),
    with body lines quoted as ">From " (any number of ">"; ``quoted`` if there may be some)
    unquoted, and ending with one line break.

    A copy in an mbox file (whatever its quoting) or in a Maildir, marked read or not, has the
    same normal form; an ordinary message (LF, unquoted, no state fields) is its own, unchanged.
    """
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    state = not _STATE_FIELDS.isdisjoint(fields)
    if state or quoted or raw.startswith(_FROM_LINE):
        split = raw.find(b"\n\n") + 1 or len(raw)
        head, body = raw[:split], raw[split:]
        if head.startswith(_FROM_LINE):
            head = head.partition(b"\n")[2]
        if state:
            head = _STATE_FIELD.sub(b"", b"\n" + head)[1:]
        if quoted:
            body = _ANY_QUOTES.sub(_FROM_LINE, body)
        raw = head + body
    if raw.endswith(b"\n") and not raw.endswith(b"\n\n"):
        return raw
    return raw.rstrip(b"\n") + b"\n"


class Messages(Iterator["ParsedMail | MalformedMail"], Protocol):
    """The messages of a mailbox, read as they are asked for; ``close`` stops reading."""

    def close(self) -> None: ...


def read_mailbox(path: Path) -> Messages:
    """Yield every message of an mbox, gzip-compressed mbox or Maildir, in mailbox order.

    Messages that cannot be parsed are yielded as `MalformedMail`; a path that is not a readable
    mailbox raises `MailboxError` at call time, before iteration starts. A gzip file is
    decompressed up front into an anonymous temporary file, which disappears when iteration ends.
    Maildir messages come in key order.
    """
    return _opened(path, counted=False)[0]


def _opened(path: Path, counted: bool) -> tuple[Messages, int | None]:
    """`read_mailbox`, and if ``counted`` the number of messages it will yield."""
    path = Path(path).resolve()
    kind = _kind(path)
    if kind == "maildir":
        return _read_maildir(path), count_messages(path) if counted else None
    data = _map_mbox(path, gzipped=kind == "gzip")
    total = None
    if counted:
        total = 0
        if isinstance(data, mmap.mmap):
            total = _count_from_lines(data.read, path)
            data.seek(0)
    return _read_mbox(data, f"mbox:{path}"), total


_START_METHODS = multiprocessing.get_all_start_methods()
_Batch = list[ParsedMail | MalformedMail] | int | Exception | None
"""What the reading process sends: some messages at a time, and the number of messages
once it knows it; its error, or None at the end."""
FIRST_BATCH = 10
"""The first batch is small, so that the caller starts on it soon."""
HEAD_BYTES = 4 << 20
"""The first bytes of a gzip file, whose messages are parsed while it is decompressed."""


class CountedMessages(Messages, Protocol):
    def total(self) -> int | None:
        """How many messages there are (or None if they cannot be told in advance)."""

    def ready(self) -> bool:
        """Is the next message (or the end) at hand, without waiting for it to be parsed?"""


def read_mailbox_aside(path: Path, batch: int = 100) -> CountedMessages:
    """`read_mailbox` in a second process, so parsing overlaps the caller's work on what it
    yields; it counts them too (a gzip file is decompressed once, by a third process,
    while its head is parsed: see `_parsed_and_counted`; its count comes after the head's
    messages, once the whole file was read).

    Parsing starts at once (forked: no start-up cost, nothing re-imported), so the caller
    can do other work before it iterates. Raises what `read_mailbox` raises, when
    ``total`` or iteration reaches it. Close the iterator (or exhaust it) to stop the
    process. Where no process can be forked (no fork, or a daemonic process), it reads here.
    """
    if multiprocessing.current_process().daemon or "fork" not in _START_METHODS:
        return read_mailbox_counted(path)
    return _ReadAside(path, batch)


def read_mailbox_counted(path: Path) -> CountedMessages:
    """`read_mailbox`, counting the messages in the file it opens (not opening it twice)."""
    return _ReadHere(path)


class _ReadHere(Iterator[ParsedMail | MalformedMail]):
    def __init__(self, path: Path):
        self._items, self._total = _opened(path, counted=True)

    def __next__(self) -> ParsedMail | MalformedMail:
        return next(self._items)

    def total(self) -> int | None:
        return self._total

    def ready(self) -> bool:
        return True  # parsed when asked for

    def close(self) -> None:
        self._items.close()


class _ReadAside(Iterator[ParsedMail | MalformedMail]):
    """The messages a forked process parses, received in batches."""

    def __init__(self, path: Path, batch: int):
        context = multiprocessing.get_context("fork")
        self._path = path
        self._batches: multiprocessing.queues.Queue[_Batch] = context.Queue(maxsize=16)
        self._process = context.Process(
            target=_read_into, args=(path, self._batches, batch, os.getpid()), daemon=True
        )
        self._process.start()
        self._total: int | None = None
        self._received: deque[list[ParsedMail | MalformedMail]] = deque()
        self._ended = False
        self._held = 0
        """Messages of the batch being taken, not taken yet."""
        self._items = self._messages()

    def __next__(self) -> ParsedMail | MalformedMail:
        return next(self._items)

    def total(self) -> int | None:
        """The count the reading process sends (waiting for it: a gzip file's comes once
        it is decompressed whole, after the first messages)."""
        while self._total is None and not self._ended:
            self._receive()
        return self._total

    def ready(self) -> bool:
        return self._held > 0 or bool(self._received) or self._ended or not self._batches.empty()

    def _receive(self) -> None:
        """Take what the reading process sends next: a batch, the count, the end, or its
        error (raised)."""
        try:
            found = self._next_batch()
            if isinstance(found, Exception):
                raise found
        except BaseException:
            self.close()
            raise
        if isinstance(found, int):
            self._total = found
        elif found is None:
            self._ended = True
        else:
            self._received.append(found)

    def _next_batch(self) -> _Batch:
        while True:
            try:
                return self._batches.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    stopped = f"reading {self._path} stopped (exit code {code})"
                    raise MailboxError(stopped) from None

    def _messages(self) -> Iterator[ParsedMail | MalformedMail]:
        try:
            while True:
                while not self._received:
                    if self._ended:
                        return
                    self._receive()
                items = self._received.popleft()
                self._held = len(items)
                for item in items:
                    self._held -= 1
                    yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reading process (again: nothing)."""
        self._process.terminate()
        self._process.join()
        self._batches.close()


def _read_into(
    path: Path, batches: "multiprocessing.queues.Queue[_Batch]", size: int, parent: int
) -> None:
    """The second process of `read_mailbox_aside`: parse, and send batches, then None.

    TERM ends it at once, whatever handler the forked process had (the command line's
    turns TERM into KeyboardInterrupt, and this process then waited forever to flush
    its queue into a pipe nobody read)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
    try:
        chunk: list[ParsedMail | MalformedMail] = []
        sizes = itertools.chain([FIRST_BATCH], itertools.repeat(size))
        wanted = next(sizes)
        for item in _parsed_and_counted(path):
            if isinstance(item, int):
                batches.put(item)
                continue
            chunk.append(item)
            if len(chunk) == wanted:
                batches.put(chunk)
                chunk, wanted = [], next(sizes)
        if chunk:
            batches.put(chunk)
        batches.put(None)
    except Exception as exc:  # raised on the reading side
        batches.put(exc)
    batches.close()
    batches.join_thread()


def _parsed_and_counted(path: Path) -> Iterator[ParsedMail | MalformedMail | int]:
    """The messages of a mailbox and, once known, their number (a gzip file's, after the
    messages of its head: a third process decompresses it all and counts them, while
    the messages of its first :data:`HEAD_BYTES` are parsed here, decompressed apart)."""
    path = Path(path).resolve()
    if _kind(path) != "gzip":
        items, total = _opened(path, counted=True)
        yield cast(int, total)
        yield from items
        return
    location = f"mbox:{path}"
    with tempfile.TemporaryFile() as whole, _Decompressing(path, whole) as decompressing:
        parsed = 0
        for raw in _head_messages(path, HEAD_BYTES):
            yield _parse_or_error(raw, f"{location}#{parsed}", mbox=True)
            parsed += 1
        yield decompressing.count()
        yield from _read_mbox(_map_file(whole, path), location, start=parsed)


class _Decompressing:
    """The gzip file ``path`` decompressed into ``into`` by a process of its own (forked;
    it ends with this one, or when this ends its use), which counts its messages too."""

    def __init__(self, path: Path, into: BinaryIO):
        self._path = path
        report, told = os.pipe()
        self._child = os.fork()
        if self._child == 0:
            os.close(report)
            self._decompress(path, into, told)  # never returns
        os.close(told)
        self._report: int | None = report

    @staticmethod
    def _decompress(path: Path, into: BinaryIO, told: int) -> NoReturn:
        """The decompressing process: it says the count (or ``!`` and its error) and ends,
        whatever happens (nothing of the process it was forked from runs in it)."""
        try:
            threading.Thread(target=_exit_without, args=(os.getppid(),), daemon=True).start()
            try:
                said = str(_gunzip(path, into))
            except MailboxError as exc:
                said = f"!{exc}"
            except BaseException as exc:
                said = f"!reading {path}: {exc!r}"
            with suppress(OSError):  # the reading process is gone
                os.write(told, said.encode())
        finally:
            os._exit(0)

    def count(self) -> int:
        """The number of messages, once the file is decompressed whole (or its error)."""
        assert self._report is not None
        with os.fdopen(self._report, "rb") as pipe:
            self._report = None
            said = pipe.read().decode()
        os.waitpid(self._child, 0)
        if said.startswith("!") or not said:
            raise MailboxError(said[1:] or f"decompressing {self._path} stopped")
        return int(said)

    def __enter__(self) -> "_Decompressing":
        return self

    def __exit__(self, *_: object) -> None:
        """Unless its count was taken, stop the process and wait for it."""
        if self._report is not None:
            os.close(self._report)
            self._report = None
            with suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGKILL)
            os.waitpid(self._child, 0)


def _exit_without(parent: int) -> None:
    """End this reading process once its parent is gone (killed, say): nobody reads its
    batches, so it would otherwise wait on the full queue forever."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def count_messages(path: Path) -> int | None:
    """Count the messages `read_mailbox` will yield, scanning without parsing."""
    path = Path(path).resolve()
    kind = _kind(path)
    if kind == "maildir":
        return len(mailbox.Maildir(path, factory=None, create=False))
    with _read_errors(path), gzip.open(path) if kind == "gzip" else path.open("rb") as stream:
        return _count_from_lines(stream.read, path)


def check_mailbox(path: Path) -> Path:
    """The resolved path if it looks like a mailbox we read; `MailboxError` if not.

    Cheap: it reads the first bytes only, so a command can refuse bad input up front.
    """
    path = Path(path).expanduser().resolve()
    kind = _kind(path)
    if kind == "maildir":
        return path
    try:
        with gzip.open(path) if kind == "gzip" else path.open("rb") as stream:
            head = stream.read(len(_FROM_LINE))
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise MailboxError(f"{path} is not a readable gzip file: {exc}") from exc
    except OSError as exc:
        raise MailboxError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head and head != _FROM_LINE:  # an empty mbox holds no messages, like read_mailbox
        raise _not_mbox(path)
    return path


def _kind(path: Path) -> str:
    """Tell "maildir", "gzip" or "mbox" apart, raising `MailboxError` for anything else."""
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return "maildir"
        raise MailboxError(f"{path} is a directory but not a Maildir (no cur/ and new/)")
    try:
        with path.open("rb") as f:
            return "gzip" if f.read(2) == _GZIP_MAGIC else "mbox"
    except FileNotFoundError as exc:
        raise MailboxError(f"{path} does not exist") from exc
    except OSError as exc:
        raise MailboxError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _map_mbox(path: Path, gzipped: bool) -> mmap.mmap | bytes:
    """Memory-map an mbox file, decompressing a gzip file into a temporary file first."""
    if not gzipped:
        with _read_errors(path), path.open("rb") as f:
            return _map_file(f, path)
    with tempfile.TemporaryFile() as tmp:
        _gunzip(path, tmp)
        return _map_file(tmp, path)


def _gunzip(path: Path, into: BinaryIO) -> int:
    """Decompress the gzip file ``path`` into ``into``; the messages it holds (its lines
    starting with "From ", counted as they pass)."""

    def read(size: int) -> bytes:
        chunk = gz.read(size)
        into.write(chunk)
        return chunk

    with _read_errors(path), path.open("rb") as f, gzip.GzipFile(fileobj=f) as gz:
        count = _count_from_lines(read, path)
    into.flush()
    return count


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """Inside, what a mailbox file (gzip or not) that cannot be read raises is a
    `MailboxError`."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise MailboxError(f"{path} is not a readable gzip file: {exc}") from exc
    except OSError as exc:
        raise MailboxError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _head_messages(path: Path, size: int) -> Iterator[bytes]:
    """The messages of the first ``size`` bytes of the gzip file ``path``, as they are
    decompressed (as `_split_mbox` delimits them; not the last, which may go on)."""
    with _read_errors(path), path.open("rb") as f, gzip.GzipFile(fileobj=f) as gz:
        left, rest = size, b""
        while left > 0 and (chunk := gz.read(min(_STEP, left))):
            left, rest = left - len(chunk), rest + chunk
            if rest[: len(_FROM_LINE)] != _FROM_LINE[: len(rest)]:
                raise _not_mbox(path)
            if cut := rest.rfind(_SEPARATOR) + 1:
                yield from _split_mbox(rest[:cut])
                rest = rest[cut:]


def _map_file(f: BinaryIO, path: Path) -> mmap.mmap | bytes:
    if not f.seek(0, 2):
        return b""
    data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if data[: len(_FROM_LINE)] != _FROM_LINE:
        data.close()
        raise _not_mbox(path)
    return data


def _not_mbox(path: Path) -> MailboxError:
    return MailboxError(f"{path} is not an mbox file (it does not start with a 'From ' line)")


def _count_from_lines(read: Callable[[int], bytes], path: Path) -> int:
    """Count lines starting with "From " (message separators) in a stream, chunk by chunk."""
    chunk = read(_CHUNK)
    if not chunk:
        return 0
    if not chunk.startswith(_FROM_LINE):
        raise _not_mbox(path)
    count, tail = 1, b""
    while chunk:
        buf = tail + chunk
        count += buf.count(_SEPARATOR)
        tail = buf[-len(_FROM_LINE) :]
        chunk = read(_CHUNK)
    return count


def _split_mbox(data: mmap.mmap | bytes) -> Iterator[bytes]:
    """Yield the messages of an mbox without their From_ lines, as `mailbox.mbox` delimits them.

    A message ends before the next line starting with "From " (or at the end of the file); a
    final blank line belongs to the separator.
    """
    pos = 0
    while pos < len(data):
        start = data.find(b"\n", pos) + 1 or len(data)
        separator = data.find(_SEPARATOR, start - 1)
        stop = len(data) if separator == -1 else separator + 1
        if stop > start and data[stop - 2 : stop] == b"\n\n":
            stop -= 1
        yield data[start:stop]
        pos = len(data) if separator == -1 else separator + 1


def _read_mbox(
    data: mmap.mmap | bytes, location: str, start: int = 0
) -> Generator[ParsedMail | MalformedMail, None, None]:
    """The messages of ``data`` from the ``start``-th on."""
    try:
        for key, raw in enumerate(_split_mbox(data)):
            if key >= start:
                yield _parse_or_error(raw, f"{location}#{key}", mbox=True)
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


def _read_maildir(path: Path) -> Generator[ParsedMail | MalformedMail, None, None]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        location = f"maildir:{path}#{key}"
        try:
            raw = box.get_bytes(key)
        except (OSError, KeyError) as exc:  # removed by a concurrent mail client
            yield MalformedMail(f"cannot read message: {exc}", location)
            continue
        yield _parse_or_error(raw, location)


def _parse_or_error(raw: bytes, location: str, mbox: bool = False) -> ParsedMail | MalformedMail:
    try:
        return parse_message(raw, location, mbox)
    except MalformedMail as exc:
        return exc.with_traceback(None)  # keep no parser frames alive


def _body_start(raw: bytes) -> int:
    """Offset just past the blank line that ends the header block (len(raw) if there is none)."""
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\n\r\n", 0, len(raw) if lf == -1 else lf)
    if crlf != -1:
        return crlf + 3
    return len(raw) if lf == -1 else lf + 2


_Fields = tuple[dict[str, str], dict[str, list[str]]]
"""Lower-cased field names mapped to their first (still folded) value, and "to" and "cc" mapped
to all of theirs, in order."""


def _header_fields(head: bytes) -> _Fields | None:
    """The `_Fields` of a raw header block.

    Returns None unless every line is a field, a continuation, or a leading From_ line: such
    blocks are left to the email package's lenient parser.
    """
    text = head.decode("utf-8", "replace")  # raw 8-bit header bytes are taken as UTF-8
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if text.startswith(_FROM_LINE.decode()):
        text = text.partition("\n")[2]
    pairs = []
    for line in _LOGICAL_LINE.split(text.rstrip("\n")):
        name, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return None
        pairs.append((name, value))
    return _collect(pairs)


def _message_fields(msg: Message) -> _Fields:
    """`_header_fields` for a message parsed by the email package."""
    return _collect((name, _unescape(str(value))) for name, value in msg.raw_items())


def _collect(pairs: Iterable[tuple[str, str]]) -> _Fields:
    """The `_Fields` of (name, value) pairs in header order."""
    fields: dict[str, str] = {}
    recipients: dict[str, list[str]] = {}
    for name, value in pairs:
        key = name.lower()
        fields.setdefault(key, value)
        if key in _RECIPIENT_FIELDS:
            recipients.setdefault(key, []).append(value)
    return fields, recipients


def _unescape(text: str) -> str:
    """Read as UTF-8 the raw 8-bit bytes that the email package's parser surrogate-escapes."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _content_headers(fields: dict[str, str]) -> Message:
    """A message holding just the Content-Type and Content-Disposition fields, for the email
    package's parameter parsing."""
    msg = Message()
    for name in ("Content-Type", "Content-Disposition"):
        if (value := fields.get(name.lower())) is not None:
            msg[name] = value
    return msg


def _decode(data: bytes, charset: str | None) -> str:
    """Decode with a declared charset, falling back to UTF-8; never raises."""
    if charset:
        charset = charset.split("*", 1)[0].strip().lower()  # drop an RFC 2231 language suffix
        if charset not in _UTF8_ALIASES:
            try:
                return data.decode(charset, "replace")
            except (LookupError, ValueError):  # unknown or unusable codec
                pass
    return data.decode("utf-8", "replace")


def _clean(text: str) -> str:
    """Fold whitespace and C0 control characters to single spaces; drop lone surrogates."""
    data = text.encode("utf-8", "replace").translate(_CONTROLS)
    return " ".join(data.decode("utf-8").split())


def _header_text(value: str) -> str:
    """Decode RFC 2047 encoded words and fold the value to one line."""
    value = value[:_MAX_FIELD]
    if "=?" in value:
        try:
            parts = decode_header(value)
        except HeaderParseError:
            parts = [(value, None)]
        value = "".join(
            part
            if isinstance(part, str)
            # decode_header hands back unencoded text as raw-unicode-escape bytes.
            else part.decode("raw-unicode-escape", "replace")
            if charset is None
            else _decode(part, charset)
            for part, charset in parts
        )
    return _clean(value)


def _recipients(values: Iterable[str]) -> str:
    """Every value of a To or Cc field, decoded, joined with ", "."""
    return ", ".join(filter(None, map(_header_text, values)))


def _sender(value: str) -> str:
    """Render a From field as "Name <addr>" (or "addr"), with the name decoded."""
    name, addr = parseaddr(value)
    if not addr:
        return _header_text(value)
    name = _header_text(name)
    return f"{name} <{_clean(addr)}>" if name else _clean(addr)


def _message_id(value: str) -> str:
    """The first <id> of a field (else the whole value) without whitespace or control characters."""
    match = _ANGLE_ID.search(value)
    return _clean(match.group(1) if match else value).replace(" ", "")


def _references(references: str, in_reply_to: str) -> tuple[str, ...]:
    found = _ANGLE_ID.findall(f"{references} {in_reply_to}")
    ids = (_clean(msg_id).replace(" ", "") for msg_id in found)
    return tuple(dict.fromkeys(msg_id for msg_id in ids if msg_id))


def _date(value: str) -> datetime | None:
    """The date in UTC (naive dates taken as UTC); None if unreadable.

    A numeric zone that is no real one (minutes of 60 or more, or beyond ±14 hours) is read as
    +0000, as notmuch does.
    """
    if zone := _NUMERIC_ZONE.search(value):
        hours, minutes = divmod(int(zone[2]), 100)
        if minutes >= 60 or hours * 60 + minutes > _MAX_ZONE_MINUTES:
            value = f"{value[: zone.start(1)]}+0000{value[zone.end() :]}"
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):
        return None


_Contents = tuple[str, tuple[str, ...], tuple[str, ...]]
"""The text, attachment names and content types of a message (see `ParsedMail`)."""


def _single_part(content: Message, body: bytes, encoding: str) -> _Contents:
    """`_contents` of a message that is not multipart, from its content fields and raw body."""
    ctype = content.get_content_type()
    text = ""
    if ctype.startswith("text/"):  # other bodies are not even transfer-decoded
        text = _clean(_body_text(content, _transfer_decode(body, encoding)))
    name = _file_name(content)
    return text, (name,) if name else (), (ctype,)


def _contents(msg: Message) -> _Contents:
    """The `_Contents` of a message parsed by the email package."""
    texts: list[str] = []
    names: list[str] = []
    types: dict[str, None] = {}
    _gather(msg, texts, names, types, searchable=True)
    return _clean(" ".join(texts)), tuple(names), tuple(types)


def _gather(
    part: Message, texts: list[str], names: list[str], types: dict[str, None], searchable: bool
) -> None:
    """Add the text (if ``searchable``), file name and content type of a part and its subparts.

    Text comes from text/* parts, and from the headers of forwarded messages; of the parts of a
    multipart/alternative, only the one `_alternative` picks is searchable.
    """
    ctype = part.get_content_type()
    types[ctype] = None
    # The file name comes from the raw fields: the email package's own accessors would turn
    # 8-bit bytes into replacement characters.
    if name := _file_name(_content_headers(_message_fields(part)[0])):
        names.append(name)
    if not part.is_multipart():
        if searchable and ctype.startswith("text/"):
            # Text parts always decode to bytes; this also undoes the transfer encoding.
            texts.append(_body_text(part, cast(bytes, part.get_payload(decode=True))))
        return
    subparts = cast(list[Message], part.get_payload())
    if searchable and ctype == "message/rfc822":
        texts.extend(map(_forwarded_headers, subparts))
    chosen = _alternative(subparts) if ctype == "multipart/alternative" and subparts else None
    for subpart in subparts:
        readable = searchable and (chosen is None or chosen is subpart)
        _gather(subpart, texts, names, types, readable)


def _alternative(parts: list[Message]) -> Message:
    """The alternative to read: the text/plain one, else the text/html one, else the last."""
    types = [part.get_content_type() for part in parts]
    for wanted in ("text/plain", "text/html"):
        if wanted in types:
            return parts[types.index(wanted)]
    return parts[-1]


def _forwarded_headers(msg: Message) -> str:
    """The Subject, From, To and Cc of a forwarded message, decoded."""
    fields, recipients = _message_fields(msg)
    return " ".join(
        (
            _header_text(fields.get("subject", "")),
            _header_text(fields.get("from", "")),
            _recipients(recipients.get("to", ())),
            _recipients(recipients.get("cc", ())),
        )
    )


def _file_name(headers: Message) -> str:
    """The file name in `_content_headers` (RFC 2231 and RFC 2047 encodings decoded), else ""."""
    if not any("name" in value.lower() for value in headers.values()):
        return ""  # no "filename" or "name" parameter: spare the parameter parsing
    try:
        name = headers.get_filename()
    except ValueError:  # RFC 2231 text in a charset that cannot decode it
        return ""
    return _header_text(name) if name else ""


def _body_text(headers: Message, data: bytes) -> str:
    """The text of a transfer-decoded text/* body; text/html without its markup."""
    text = _decode(data, headers.get_content_charset())
    return _html_text(text) if headers.get_content_type() == "text/html" else text


def _transfer_decode(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:  # truncated or badly padded: keep the complete 4-character groups
            clean = _B64_JUNK.sub(b"", data)
            return binascii.a2b_base64(clean[: len(clean) // 4 * 4])
    return data


def _html_text(markup: str) -> str:
    """Crude tag stripping: drop scripts, styles and comments, then tags; unescape entities."""
    return html.unescape(_HTML_TAG.sub(" ", _HTML_HIDDEN.sub(" ", markup)))
