"""A sync folder: each installation's events as sealed segment files.

::

    DIR/
        keys.json                  a home's key file: the data keys, wrapped by the
                                   passphrase (what ``join`` takes)
        ORIGIN/                    one folder per installation, written only by it
            head                   how far its segments go, and what it has received
            AFTER-LAST.seg         its log's events at positions AFTER < p <= LAST

A segment holds the events of its writer's log in that range: those it wrote, and
those a sync brought it that their origin's own folder here does not hold (as its
head says; so that a peer of a peer is reached), with ``requires``: the events of
others it follows, which a reader takes from their folders first. Each event is a
:class:`Record`: its row's state as the writer stored it (already sealed with the
data keys; a reader that places it at the same version of its stream stores it as it
is), its origin and its place in its origin's log (``seq``), which is what a reader
uses to take each event once.

Every file is sealed with AES-256-GCM under a key every installation of the user
derives from the data keys; its writer and range are associated data, so a file
renamed, moved to another folder, cut short or altered fails, and a reader follows a
writer's chain of segments (``AFTER`` of one is ``LAST`` of the one before) as far as
it reaches: one not here yet holds the rest back. The
sealed length is padded (Padmé), so a reader of the folder learns which installations
there are, how many events each has logged (the file names) and roughly how big they
are, and when each synced; not what any event is. Files are written whole under a
temporary name and renamed; a reader ignores every other name (a sync tool's
conflict copy, a temporary file).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventpile.store.keys import PEOPLE, Keyring, repuncture
from eventpile.store.people import Tree

FORMAT: Final = 1
KEYS: Final = "keys.json"
HEAD: Final = "head"
_SEGMENT_NAME: Final = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.seg$")
_ORIGIN_NAME: Final = re.compile(r"^[0-9a-f]{32}$")
_RECORD: Final = struct.Struct(">16sQ16sIHI")
"""origin, seq, originator id, version, topic length, state length"""
_LENGTH: Final = struct.Struct(">I")


class FolderError(ValueError):
    """A sync folder that cannot be used, or a file in it that is not what its writer
    sealed: the sync stops there (recorded as its failure), and what it took before
    stays taken."""


class Record(NamedTuple):
    """One event as a segment carries it: its row's state as its writer stored it (sealed
    with the data keys every installation of the user shares, bound to its stream,
    version and topic), and where it came from."""

    origin: str
    """The installation that wrote it (hex)."""
    seq: int
    """Its position in its origin's log."""
    originator_id: uuid.UUID
    version: int
    """Its version in the writer's log (the receiver may place it at another)."""
    topic: str
    state: bytes


@dataclass(frozen=True)
class Segment:
    origin: uuid.UUID
    after: int
    last: int
    records: list[Record]
    requires: dict[str, int] = field(default_factory=dict)
    """Events of other installations (hex: seq) that these follow: a reader applies the
    segment once it has them (they are in those installations' own folders)."""


@dataclass(frozen=True)
class Head:
    """How far an installation has looked through its log (``last``) and where its last
    segment ends (``end``), the last event of each origin (hex: seq) its segments hold,
    and what it has received from each."""

    last: int
    end: int
    exported: dict[str, int]
    received: dict[str, int]

    def settles(self, before: Head, slack: int) -> bool:
        """Is this head worth writing over ``before``? Not when only ``last`` moved, by
        less than ``slack`` (a sync that had nothing to send leaves the folder as it was)."""
        moved = self.last - before.last >= slack
        return moved or (self.end, self.exported, self.received) != (
            before.end,
            before.exported,
            before.received,
        )

    def news_for(self, known: dict[str, int]) -> bool:
        """Do its segments hold events a log that has ``known`` has not?"""
        return any(seq > known.get(origin, 0) for origin, seq in self.exported.items())


def padded_length(length: int) -> int:
    """Padmé: ``length`` rounded up so that only its top log2(log2) bits are free (at
    most 12% more), leaking O(log log) bits of it."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    free = exponent - exponent.bit_length()
    mask = (1 << free) - 1
    return (length + mask) & ~mask


class Files(Protocol):
    """Where a sync folder's files are: a directory here, or another installation's over
    HTTP (:class:`eventpile.store.remote.RemoteFiles`). Names are ``keys.json``,
    ``ORIGIN/head`` and ``ORIGIN/AFTER-LAST.seg``."""

    where: str
    """What to call it in messages."""

    def origins(self) -> list[str]:
        """The names of the installations' folders."""

    def names(self, origin: str) -> list[str]:
        """The names of the files in an installation's folder (none if it has none)."""

    def get(self, name: str) -> bytes | None:
        """A file's content, None if there is no such file."""

    def put(self, name: str, data: bytes) -> None:
        """Write a file whole (a reader sees the old content or the new, never a part)."""


class LocalFiles:
    """A folder on this machine: shared, synced by a tool, a USB stick."""

    def __init__(self, path: Path):
        if not path.is_dir():
            raise FolderError(f"{path} is not a folder: make it (or mount it) first")
        self.path = path
        self.where = str(path)

    def origins(self) -> list[str]:
        return [p.name for p in self.path.iterdir() if p.is_dir()]

    def names(self, origin: str) -> list[str]:
        try:
            return os.listdir(self.path / origin)
        except FileNotFoundError:
            return []

    def get(self, name: str) -> bytes | None:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        target = self.path / name
        target.parent.mkdir(exist_ok=True)
        _write_whole(target.parent, target.name, data)


class Folder:
    """A sync folder, as one installation (``origin``) reads and writes it."""

    def __init__(self, files: Files, key: bytes, origin: uuid.UUID):
        self.files = files
        self.origin = origin
        self._aead = AESGCM(key)

    # what is there ----------------------------------------------------------

    def origins(self) -> list[uuid.UUID]:
        """The installations that have a folder here (this one too, once it has)."""
        return sorted(uuid.UUID(n) for n in self.files.origins() if _ORIGIN_NAME.match(n))

    def head(self, origin: uuid.UUID) -> Head | None:
        """What ``origin``'s head says (None before it wrote one)."""
        name = f"{origin.hex}/{HEAD}"
        blob = self.files.get(name)
        if blob is None:
            return None
        document = json.loads(self._open(blob, _head_aad(origin), name))
        return Head(document["last"], document["end"], document["exported"], document["received"])

    def segments(self, origin: uuid.UUID, after: int) -> list[tuple[int, int]]:
        """The ranges of ``origin``'s segments that reach furthest past ``after``, each
        following the one before (one not here yet, or lost, ends a chain). Two may start
        at one position (a send cut short before its head, and the next one); a reader
        takes each event once whichever it reads."""
        ends: dict[int, list[int]] = {}
        for name in self.files.names(origin.hex):
            if (m := _SEGMENT_NAME.match(name)) and int(m[2], 16) > after:
                ends.setdefault(int(m[1], 16), []).append(int(m[2], 16))
        best: list[tuple[int, int]] = []
        todo = [[(first, last)] for first in ends if first <= after for last in ends[first]]
        while todo:
            chain = todo.pop()
            if chain[-1][1] > (best[-1][1] if best else after):
                best = chain
            todo += [[*chain, (chain[-1][1], last)] for last in ends.get(chain[-1][1], ())]
        return best

    def read(self, origin: uuid.UUID, after: int, last: int) -> Segment:
        """One segment, authenticated; :class:`FolderError` if it is not what its writer
        sealed (altered, cut short, renamed or moved)."""
        name = f"{origin.hex}/{_segment_name(after, last)}"
        blob = self.files.get(name)
        if blob is None:
            raise FolderError(f"sync folder {self.files.where}: {name} is gone")
        plain = self._open(blob, _segment_aad(origin, after, last), name)
        (length,) = _LENGTH.unpack_from(plain)
        body = plain[_LENGTH.size : _LENGTH.size + length]
        (header_length,) = _LENGTH.unpack_from(body)
        offset = _LENGTH.size + header_length
        header: dict[str, Any] = json.loads(body[_LENGTH.size : offset])
        return Segment(origin, after, last, list(_records(body, offset)), header["requires"])

    # this installation's writes -----------------------------------------------

    def write(self, segment: Segment) -> None:
        """Write one of this installation's segments."""
        header = json.dumps({"requires": segment.requires}).encode()
        body = b"".join([_LENGTH.pack(len(header)), header, *(_record(r) for r in segment.records)])
        # not compressed: the states it carries are ciphertexts already
        plain = _LENGTH.pack(len(body)) + body
        plain += bytes(padded_length(len(plain)) - len(plain))
        aad = _segment_aad(self.origin, segment.after, segment.last)
        self._put(_segment_name(segment.after, segment.last), self._seal(plain, aad))

    def write_head(self, head: Head) -> None:
        document = json.dumps(
            {
                "last": head.last,
                "end": head.end,
                "exported": head.exported,
                "received": head.received,
            }
        ).encode()
        self._put(HEAD, self._seal(document, _head_aad(self.origin)))

    def publish_keys(self, key_file: Path, ring: Keyring) -> None:
        """Leave the home's key file here for ``join``, if there is none yet (each home
        wraps the keys with its own salt: the first one's stays). Its people's tree is
        kept punctured as much as ``ring``'s: who was forgotten here is not derived from
        the copy in the folder either."""
        found = self.files.get(KEYS)
        if found is None:
            self.files.put(KEYS, key_file.read_bytes())
            return
        if ring.people_key is None:
            return
        mine = Tree.from_bytes(ring.people_tree())
        try:
            document = json.loads(found)
            if PEOPLE not in document or not repuncture(
                document,
                ring.people_key,
                lambda theirs: Tree.from_bytes(theirs).common(mine).to_bytes(),
            ):
                return
        except (ValueError, KeyError, TypeError, InvalidTag):
            raise FolderError(
                f"sync folder {self.files.where}: its {KEYS} is damaged or another home's"
            ) from None
        self.files.put(KEYS, json.dumps(document, indent=2).encode())

    # sealing ------------------------------------------------------------------

    def _seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return bytes([FORMAT]) + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def _open(self, blob: bytes, aad: bytes, name: str) -> bytes:
        where = f"sync folder {self.files.where}: {name}"
        if len(blob) < 29 or blob[0] != FORMAT:
            raise FolderError(f"{where} is not a file of this format (or cut short)")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], aad)
        except InvalidTag:
            raise FolderError(
                f"{where} fails authentication (altered, cut short, renamed, or sealed with "
                "other keys)"
            ) from None

    def _put(self, name: str, data: bytes) -> None:
        self.files.put(f"{self.origin.hex}/{name}", data)


def _write_whole(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` under a temporary name, synced, then rename it."""
    temporary = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, folder / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _segment_name(after: int, last: int) -> str:
    return f"{after:016x}-{last:016x}.seg"


def _segment_aad(origin: uuid.UUID, after: int, last: int) -> bytes:
    return b"eventpile sync segment\0" + origin.bytes + struct.pack(">QQ", after, last)


def _head_aad(origin: uuid.UUID) -> bytes:
    return b"eventpile sync head\0" + origin.bytes


def _record(r: Record) -> bytes:
    topic = r.topic.encode()
    fixed = _RECORD.pack(
        bytes.fromhex(r.origin), r.seq, r.originator_id.bytes, r.version, len(topic), len(r.state)
    )
    return fixed + topic + r.state


def _records(body: bytes, offset: int) -> Iterator[Record]:
    while offset < len(body):
        origin, seq, oid, version, topic_length, length = _RECORD.unpack_from(body, offset)
        offset += _RECORD.size
        topic = body[offset : offset + topic_length].decode()
        offset += topic_length
        yield Record(
            origin.hex(),
            seq,
            uuid.UUID(bytes=oid),
            version,
            topic,
            body[offset : offset + length],
        )
        offset += length
