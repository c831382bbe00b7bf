"""The tech-support bundle: what the program did, without anything private.

A JSON Lines file: a header, then every operation (its state), then every event
(its envelope and fields), oldest first. Every private value, at any depth, is
replaced by a keyed pseudonym: an HMAC-SHA256 under a random key made for this
bundle and then forgotten, of the value's canonical JSON. The same value gets
the same pseudonym throughout one bundle, so support can see that two operations
touched the same thing without seeing what it was; JSON objects and arrays keep
their shape, their keys and items pseudonymised one by one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from eventpile.domain.events import DomainEvent, redact
from eventpile.domain.operation import Operation
from eventpile.projections.feed import states
from eventpile.store.errors import StoreError

if TYPE_CHECKING:
    from eventpile.commands.app import Application

BUNDLE_FORMAT = 1


class Pseudonyms:
    """Replaces JSON values by keyed pseudonyms, stable within one instance."""

    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else os.urandom(32)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.scalar(k): self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return self.scalar(value)

    def scalar(self, value: Any) -> str:
        canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "~" + hmac.new(self._key, canonical.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class BundleReport:
    operations: int
    events: int
    size: int


def write_bundle(app: Application, path: Path) -> BundleReport:
    """Write the bundle to ``path`` (a new file, mode 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise StoreError(f"{path} exists already: choose a new file name") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            operations, events = _write(app, out, Pseudonyms())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return BundleReport(operations, events, path.stat().st_size)


def _write(app: Application, out: TextIO, pseudonyms: Pseudonyms) -> tuple[int, int]:
    app.catch_up()
    header = {
        "format": BUNDLE_FORMAT,
        "installation": str(app.keyring.installation_id),
        "log_position": app.max_position(),
        "views": {name: view.position for name, view in app.views.items()},
    }
    operations = states(app.view("feed").db)
    return write_records(out, header, operations, app.all_events(), pseudonyms)


def write_records(
    out: TextIO,
    header: dict[str, Any],
    operations: Iterable[Operation],
    events: Iterable[tuple[int, DomainEvent]],
    pseudonyms: Pseudonyms,
) -> tuple[int, int]:
    """Write the header, the operations and the events, redacted; how many of each."""
    _line(out, {"bundle": header})
    written_operations = written_events = 0
    for operation in operations:
        _line(out, {"operation": redact(operation, pseudonyms)})
        written_operations += 1
    for position, event in events:
        record = {"position": position, "type": event.type_name(), **redact(event, pseudonyms)}
        _line(out, {"event": record})
        written_events += 1
    return written_operations, written_events


def _line(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":")) + "\n")  # ASCII: one record a line
