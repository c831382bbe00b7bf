"""The log's seals: what proves the event log whole.

Each event is sealed alone by AES-GCM (a flipped bit or a moved ciphertext does not
decrypt), but a row deleted, or the end of the log cut off, leaves nothing to decrypt.
So every transaction that writes the log also writes a *seal*, numbered after the last:
the hash of each row it wrote (``REMOVED`` for each it deleted: a retention purge; a
rekey seals each ciphertext it replaced anew), and a MAC (keyed BLAKE2b) of its number
and those. ``verify``
folds the seals in order into what the log must hold, position by position (a later
seal's entry stands for a position), and compares the rows with it:

- a row deleted (and not purged): a sealed position with no row;
- rows changed, moved or swapped: a row whose hash is not its position's;
- a row added or copied in: a position no seal holds;
- a seal changed, moved, copied over another, or copied from another home: its MAC is
  not this home's;
- a seal deleted: a gap in the numbers (or, if it was the last, see the head);
- the log's end cut off (rows and seals): the *head* of the home is past the last seal.

The head (the number and MAC of the last seal this home wrote) is kept in the home
beside the keys, so a cut log is caught even with its seals.

Each seal also keeps its *span*, the least and greatest position it holds, so that a
process reading events others wrote checks the positions it crosses as it reads them
(:meth:`Sealing.check_range`): a row deleted there, or a row no seal holds, stops it;
a row changed there fails to decrypt as it is read. What is not caught: the
whole home (log and head) put back to an older copy of itself; every seal and the head
deleted (the log then looks written before seals).

Seals are written by the writer in its own transaction, after its rows, with the log's
write lock held (SQLite's, and on PostgreSQL the table lock every append takes), so
they neither serialise writers more than before nor break when positions are skipped
(a PostgreSQL sequence skips those of rolled-back transactions). The key is a purpose
key of the keyring that survives key rotation, like the message ids' key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from eventpile.store.errors import StoreError

SEALS_TABLE = "log_seals"
SPANS_INDEX = "log_seals_high"
PURPOSE = "log-seal"
HASH_BYTES = 16
MAC_BYTES = 32
HEAD_BYTES = 4096
"""What is read of a head file: far more than it holds (a seal's number and MAC, in hex)."""
REMOVED = bytes(HASH_BYTES)
"""The hash of a position whose row a purge deleted."""
_ENTRY = struct.Struct(f">q{HASH_BYTES}s")
_ROW = struct.Struct(">qq16s")
PAGE_ROWS = 1000
"""Rows read at a time by a check of the whole log."""
SHOWN = 5
"""How many problems of each kind ``verify`` names (then a count of the others)."""


def row_hash(position: int, originator_id: Any, version: int, topic: str, state: bytes) -> bytes:
    """What a seal holds of a row: a hash of its position and every column."""
    oid = originator_id if isinstance(originator_id, uuid.UUID) else uuid.UUID(originator_id)
    head = _ROW.pack(position, version, oid.bytes)
    return hashlib.blake2b(head + topic.encode() + b"\0" + state, digest_size=HASH_BYTES).digest()


Entry = tuple[int, bytes]
"""A position and the hash its row must have (``REMOVED``: no row)."""


@dataclass(frozen=True)
class Seal:
    """One write transaction's seal: its number, its entries (packed), their MAC."""

    number: int
    entries: bytes
    mac: bytes

    def hashes(self) -> dict[int, bytes]:
        """The hash each position it holds must have (:data:`REMOVED`: no row)."""
        return dict(_ENTRY.iter_unpack(self.entries))


class Sealer:
    """Makes and checks seals with the keyring's log key."""

    def __init__(self, key: bytes):
        self._key = key

    def mac(self, number: int, entries: bytes) -> bytes:
        """The MAC of a seal: of its number and its entries (a seal moved to another
        number, or copied over another, does not match)."""
        data = number.to_bytes(8, "big") + entries
        return hashlib.blake2b(data, key=self._key, digest_size=MAC_BYTES).digest()

    def seal(self, number: int, entries: Iterable[Entry]) -> Seal:
        blob = b"".join(_ENTRY.pack(p, h) for p, h in sorted(entries))
        return Seal(number, blob, self.mac(number, blob))

    def check(
        self, seals: Iterable[Seal], rows: Iterable[tuple[int, Any, int, str, bytes]]
    ) -> tuple[list[str], Seal | None]:
        """What is wrong with the log (nothing: ``[]``), and its last seal."""
        problems = _Problems()
        previous: Seal | None = None

        def numbered() -> Iterator[Seal]:
            nonlocal previous
            for seal in seals:
                number = 0 if previous is None else previous.number + 1
                if seal.number != number:
                    problems.add(
                        "seals missing",
                        f"{number:,}–{seal.number - 1:,}"
                        if seal.number - 1 > number
                        else f"{number:,}",
                    )
                previous = seal
                yield seal

        expected = self._expected(numbered(), problems)
        for position, originator_id, version, topic, state in rows:
            wanted = _found(expected, position, problems)
            if wanted and wanted != row_hash(position, originator_id, version, topic, state):
                problems.add("{events} changed, moved or swapped", f"{position:,}")
        _missing(expected, problems)
        return problems.lines(), previous

    def check_positions(
        self, seals: Iterable[Seal], positions: Iterable[int], after: int, upto: int
    ) -> list[str]:
        """What is wrong with the positions after ``after`` up to ``upto``, of the seals
        that hold some of them: a row deleted, or one no seal holds."""
        problems = _Problems()
        expected = {p: h for p, h in self._expected(seals, problems).items() if after < p <= upto}
        for position in positions:
            _found(expected, position, problems)
        _missing(expected, problems)
        return problems.lines()

    def _expected(self, seals: Iterable[Seal], problems: _Problems) -> dict[int, bytes]:
        """What each position of ``seals`` must hold (a later seal's entry stands), of
        those whose MAC is this home's."""
        expected: dict[int, bytes] = {}
        for seal in seals:
            if not hmac.compare_digest(seal.mac, self.mac(seal.number, seal.entries)):
                problems.add(
                    "seals that are not this home's (changed, or copied in)", f"{seal.number:,}"
                )
            else:
                expected.update(_ENTRY.iter_unpack(seal.entries))
        return expected


def span(entries: bytes) -> tuple[int, int]:
    """The least and greatest position a seal's entries hold (of a seal that holds none
    it can read, every position: each check reads it, and finds it not this home's)."""
    try:
        positions = [p for p, _ in _ENTRY.iter_unpack(entries)]
    except struct.error:
        positions = []
    return (min(positions), max(positions)) if positions else (0, 2**62)


def _found(expected: dict[int, bytes], position: int, problems: _Problems) -> bytes | None:
    """The hash a row found at ``position`` must have (None if it must not be there)."""
    wanted = expected.pop(position, None)
    if wanted is None:
        problems.add("{events} that no seal holds (added, or copied in)", f"{position:,}")
    elif wanted == REMOVED:
        problems.add("{events} back after a purge", f"{position:,}")
        return None
    return wanted


def _missing(expected: dict[int, bytes], problems: _Problems) -> None:
    """The rows a check did not find (``expected`` holds what it did not pop)."""
    for position in sorted(p for p, h in expected.items() if h != REMOVED):
        problems.add("{events} missing (deleted)", f"{position:,}")


class _Problems:
    """Problems by kind: ``kind`` says ``{events}`` where "event(s)" goes."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}

    def add(self, kind: str, where: str) -> None:
        self.found.setdefault(kind, []).append(where)

    def lines(self) -> list[str]:
        lines = []
        for kind, where in self.found.items():
            shown = ", ".join(where[:SHOWN])
            more = f" and {len(where) - SHOWN:,} more" if len(where) > SHOWN else ""
            if "{events}" in kind:
                events = f"{len(where):,} event{'s' if len(where) > 1 else ''}"
                at = f"position{'s' if len(where) > 1 else ''}"
                lines.append(f"the log has {kind.format(events=events)}: at {at} {shown}{more}")
            else:
                lines.append(f"the log has {kind}: {shown}{more}")
        return lines


class Head:
    """The last seal this home wrote (its number and HMAC), in a file beside the keys.

    Each writer replaces it after its commit (atomically, not synced: after a crash it
    may be an older seal, which still anchors the log up to there), never by an older
    one; and no transaction writes a seal at or before it (a write on a cut log would
    seal the cut)."""

    def __init__(self, path: Path):
        self.path = path

    def save(self, seal: Seal) -> None:
        saved = self.load()
        if saved is not None and saved[0] >= seal.number:
            return  # another process saved a later one (or the log was cut: it says so)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        temporary.write_text(f"{seal.number} {seal.mac.hex()}\n")
        temporary.replace(self.path)

    def load(self) -> tuple[int, bytes] | None:
        """The seal the file names (None: no file, or an empty one). Read with ``os``'s
        calls, not ``pathlib``'s: every append and every catch-up reads it."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            text = os.read(descriptor, HEAD_BYTES)
        finally:
            os.close(descriptor)
        if not text.strip():  # (a crash before its bytes reached the disk)
            return None
        try:
            number, mac = text.split()
            return int(number), bytes.fromhex(mac.decode())
        except (ValueError, UnicodeDecodeError):
            raise StoreError(f"{self.path} is damaged: it holds no seal of the log") from None

    def cut(self, saved: tuple[int, bytes] | None, last: int | None) -> list[str]:
        """Does the log (its last seal ``last``, None: none) end before this home's head
        (``saved``, as :meth:`load` read it)?"""
        if saved is None or (last is not None and saved[0] <= last):
            return []
        return [
            f"the log was replaced or cut: this home wrote its seal {saved[0]:,}, its last "
            f"is {'none' if last is None else format(last, ',')} (or, on SQLite, the "
            "machine lost power before its last commits reached the disk: to go on with "
            f"the log as it is, delete {self.path})"
        ]

    def problems(
        self, saved: tuple[int, bytes] | None, last: Seal | None, seal_at: dict[int, bytes]
    ) -> list[str]:
        """Are the log's seals still those this home wrote (its head, ``saved``)?"""
        cut = self.cut(saved, None if last is None else last.number)
        if saved is None or cut:
            return cut
        number, mac = saved
        if seal_at.get(number) != mac:
            return [
                f"the log's seal {number:,} is not the one this home wrote: the log was "
                "replaced by another, or put back to an older copy and written again"
            ]
        return []


class Sealing:
    """What a recorder needs to seal its transactions (both backends').

    A recorder made outside an application (the library's test suites) has no
    ``sealer`` and writes no seals; ``verify`` then finds its rows in none."""

    sealer: Sealer | None = None
    head: Head | None = None
    """The home's head: no seal is written at or before it, reads check the log reaches it."""
    written_seal: Seal | None = None
    """The last seal this recorder wrote and committed (the home's head is saved from it)."""
    _pending: Seal | None = None
    """The seal of the transaction under way (it stands once that commits)."""
    _mark: ClassVar[str]
    """The backend's parameter placeholder."""
    _position: ClassVar[str]
    """The backend's name of the position column."""

    def _seals_table(self) -> str:
        return SEALS_TABLE

    def _events_table(self) -> str:
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[Any]:
        """A cursor in a read-only transaction that sees one state of the log throughout."""
        raise NotImplementedError

    def _rows(self, statement: Any, params: Sequence[Any]) -> list[Any]:
        """The rows of one statement (it reads one state of the log), as tuples."""
        raise NotImplementedError

    def insert_events(self, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        try:
            positions = cast(Any, super()).insert_events(stored_events, **kwargs)
        except BaseException:
            self._pending = None  # its transaction did not commit
            raise
        self._settle()
        return positions

    def _settle(self) -> None:
        """The transaction committed: its seal stands."""
        if self._pending is not None:
            self.written_seal, self._pending = self._pending, None

    def check(self) -> tuple[list[str], Seal | None, dict[int, bytes]]:
        """What is wrong with the log (see :meth:`Sealer.check`), its last seal, and the
        MAC of each seal by number: the seals and every row read in one snapshot, so that
        other processes writing meanwhile change nothing of what is compared."""
        assert self.sealer is not None
        with self._snapshot() as cursor:
            cursor.execute(
                f"SELECT number, entries, mac FROM {self._seals_table()} ORDER BY number"
            )
            seals = [Seal(int(n), bytes(e), bytes(m)) for n, e, m in cursor.fetchall()]
            problems, last = self.sealer.check(seals, self._all_rows(cursor))
        return problems, last, {s.number: s.mac for s in seals}

    def _saved_head(self) -> tuple[int, bytes] | None:
        return None if self.head is None else self.head.load()

    def _cut(self, saved: tuple[int, bytes] | None, last: int | None) -> list[str]:
        return [] if self.head is None else self.head.cut(saved, last)

    def check_head(self) -> list[str]:
        """Is the log cut before the home's head? One statement, no snapshot."""
        saved = self._saved_head()
        if saved is None:
            return []
        return self._cut(
            saved, self._rows(f"SELECT max(number) FROM {self._seals_table()}", ())[0][0]
        )

    def check_range(self, after: int, upto: int) -> list[str]:
        """What is wrong with the positions after ``after`` up to ``upto`` (more than
        none): a row deleted, one no seal holds, a seal not this home's (see
        :meth:`Sealer.check_positions`), a seal missing from the one before the first
        that spans them to the last (no seal is ever deleted: so one deleted with its
        rows, the first that spanned them included, is found); or the log cut before the
        home's head. Cheap: the positions, the seals that span them and how many there
        are from there on, read by one statement (one snapshot, one round trip). Nothing
        for a log without seals (written before them)."""
        assert self.sealer is not None
        table, mark, position = self._seals_table(), self._mark, self._position
        spanning = f"(high > {mark} AND low <= {mark} OR high IS NULL)"
        saved = self._saved_head()  # first: see check_log
        rows = self._rows(
            f"SELECT 0, number, entries, mac FROM {table} WHERE {spanning} "
            f"UNION ALL SELECT 1, {position}, NULL, NULL FROM {self._events_table()} "
            f"WHERE {position} > {mark} AND {position} <= {mark} "
            f"UNION ALL SELECT 2, max(number), NULL, NULL FROM {table} "
            f"UNION ALL SELECT 3, count(*), NULL, NULL FROM {table} "
            f"WHERE number >= (SELECT min(number) FROM {table} WHERE {spanning}) - 1",
            (after, upto) * 3,
        )
        found: dict[int, list[tuple[Any, ...]]] = {0: [], 1: [], 2: [], 3: []}
        for row in rows:
            found[row[0]].append(row[1:])
        last = found[2][0][0]
        cut = self._cut(saved, last)
        if cut or last is None:
            return cut
        seals = [Seal(int(n), bytes(e), bytes(m)) for n, e, m in sorted(found[0])]
        if seals:  # none deleted from the one before them on (with the rows they held)
            low = max(seals[0].number - 1, 0)
            if int(found[3][0][0]) != last - low + 1:
                return [f"the log has seals missing between {low:,} and {last:,}"]
        return self.sealer.check_positions(seals, [p for p, _, _ in found[1]], after, upto)

    def _add_spans(self, cursor: Any) -> None:
        """The columns of the seals' spans and their index, and the span of each seal
        already there (a log written before seals kept one): once, when the log's tables
        are made (the caller holds the log's write lock)."""
        table = self._seals_table()
        cursor.execute(f"ALTER TABLE {table} ADD COLUMN low BIGINT")
        cursor.execute(f"ALTER TABLE {table} ADD COLUMN high BIGINT")
        cursor.execute(f"SELECT number, entries FROM {table}")
        spans = [(*span(bytes(entries)), number) for number, entries in cursor.fetchall()]
        mark = self._mark
        cursor.executemany(
            f"UPDATE {table} SET low = {mark}, high = {mark} WHERE number = {mark}", spans
        )
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {SPANS_INDEX} ON {table} (high)")

    def _all_rows(self, cursor: Any) -> Iterator[tuple[int, Any, int, str, bytes]]:
        position = 0
        while True:
            cursor.execute(
                f"SELECT {self._position}, originator_id, originator_version, topic, state "
                f"FROM {self._events_table()} WHERE {self._position} > {self._mark} "
                f"ORDER BY {self._position} LIMIT {PAGE_ROWS}",
                (position,),
            )
            rows = cursor.fetchall()
            if not rows:
                return
            for found, originator_id, version, topic, state in rows:
                yield found, originator_id, version, topic, bytes(state)
            position = rows[-1][0]

    def _seal(self, cursor: Any, entries: dict[int, bytes], number: int | None = None) -> None:
        """Write the seal of ``entries`` (the rows written and deleted in this transaction),
        numbered after the last one (``number``, if the writer read it already under the
        lock). A log written before seals were gets its first seal now, of its rows as
        they are. (What a transaction that failed left pending goes.)"""
        self._pending = None
        if self.sealer is None or not entries:
            return
        table, mark = self._seals_table(), self._mark
        if number is None:
            cursor.execute(f"SELECT coalesce(max(number), -1) + 1 FROM {table}")
            number = int(cursor.fetchone()[0])
        cut = self._cut(self._saved_head(), number - 1 if number else None)
        if cut:
            raise StoreError(cut[0])
        if number == 0:
            for position, originator_id, version, topic, state in self._all_rows(cursor):
                hashed = row_hash(position, originator_id, version, topic, state)
                entries.setdefault(position, hashed)
        seal = self.sealer.seal(number, entries.items())
        cursor.execute(
            f"INSERT INTO {table} (number, entries, mac, low, high) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            (seal.number, seal.entries, seal.mac, min(entries), max(entries)),
        )
        self._pending = seal
