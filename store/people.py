"""People's keys: the values ``Of`` a person sealed under that person's own key.

Each person (an email address, or an aggregate: see
:class:`~eventpile.domain.events.Of`) has a stream of keys in the log, its id a keyed
hash of the person (:meth:`PersonKeys.stream_of`). Its :class:`PersonKeyIssued` events
are sealed with the people's key of the key file (:mod:`eventpile.store.keys`), not the
data key. The mapper seals an event's values of one person together, as one entry of
its payload, ``[owner field, key stream, key id, nonce + ciphertext]``, bound to the
event's id; an entry whose key is gone opens as forgotten.

Why a key per person, in the log: sync and several machines on one database get the
keys as they get any event; a copy of the log made before a person was forgotten opens
for everyone else (their keys are in the log) but not for them (their key is gone from
the log, and the people's key that sealed its copy from the key file). A message is its
sender's: what they wrote (subject, text, the people it went to) is sealed under the
sender's key, so forgetting one recipient leaves it readable for the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import from_json, to_json

from eventpile.domain.events import DomainEvent, hashed_uuid
from eventpile.domain.people import PersonKeyIssued
from eventpile.store.errors import TamperedData

SEALED: Final = "§people"
"""The payload's key of the entries sealed per person (no field can have this name)."""
PURPOSE: Final = "person"
"""The purpose key that makes a person's key stream id (kept across rekeys)."""

Loader = Callable[[uuid.UUID], None]
"""Reads a key stream from the log (whose events the mapper passes to :meth:`PersonKeys.learn`)."""


class PersonKeys:
    """The people's keys this process has read or issued."""

    def __init__(self, id_key: bytes, load: Loader) -> None:
        self._id_key = id_key
        self._load = load
        self._keys: dict[uuid.UUID, dict[uuid.UUID, AESGCM]] = {}

    def stream_of(self, person: str) -> uuid.UUID:
        """The id of a person's key stream: a keyed hash, which does not name them."""
        digest = hmac.new(self._id_key, b"person\0" + person.encode(), hashlib.sha256).digest()
        return hashed_uuid(digest)

    def learn(self, event: PersonKeyIssued) -> None:
        self._keys.setdefault(event.originator_id, {})[event.event_id] = AESGCM(
            bytes.fromhex(event.key)
        )

    def drop(self, streams: Iterable[uuid.UUID]) -> None:
        """Forget what this process knows of these streams (they were deleted, or the
        keys issued for them were not written)."""
        for stream in streams:
            self._keys.pop(stream, None)

    def known(self, stream: uuid.UUID) -> int:
        """How many keys of ``stream`` this process holds."""
        return len(self._keys.get(stream, ()))

    def issue(self, stream: uuid.UUID, version: int) -> PersonKeyIssued:
        """A new key for ``stream``, as its event ``version`` (known here at once)."""
        event = PersonKeyIssued(
            originator_id=stream, originator_version=version, key=os.urandom(32).hex()
        )
        self.learn(event)
        return event

    def seal(self, event: DomainEvent, data: dict[str, Any]) -> None:
        """Move the values of ``data`` (``event`` as JSON values) that are ``Of`` a person
        into sealed entries, one per person, under their key (which must be known)."""
        entries = []
        for owner, fields in type(event).owned_fields().items():
            person = event.person(owner)
            if person is None:
                continue
            stream = self.stream_of(person)
            key_id, aead = min(self._keys[stream].items())
            plaintext = to_json({name: data.pop(name) for name in fields})
            nonce = os.urandom(12)
            sealed = aead.encrypt(nonce, plaintext, _aad(event.event_id, owner, key_id))
            entries.append(
                [owner, stream.hex, key_id.hex, base64.b64encode(nonce + sealed).decode()]
            )
        if entries:
            data[SEALED] = entries

    def open(self, data: dict[str, Any], owned: dict[str, tuple[str, ...]]) -> frozenset[str]:
        """Put the values of the sealed entries of ``data`` back; the names of the fields
        (of ``owned``, by owner) whose key is gone: their person was forgotten."""
        forgotten: set[str] = set()
        event_id = uuid.UUID(data["event_id"])
        for owner, stream_hex, key_hex, blob in data.pop(SEALED):
            stream, key_id = uuid.UUID(stream_hex), uuid.UUID(key_hex)
            if key_id not in self._keys.get(stream, {}):
                self._load(stream)
            aead = self._keys.get(stream, {}).get(key_id)
            if aead is None:
                forgotten.update(owned.get(owner, ()))
                continue
            raw = base64.b64decode(blob)
            try:
                plaintext = aead.decrypt(raw[:12], raw[12:], _aad(event_id, owner, key_id))
            except InvalidTag:
                raise TamperedData(
                    f"event {data['originator_id']}: its values of one person fail "
                    "authentication (tampered or moved)"
                ) from None
            data.update(from_json(plaintext))
        return frozenset(forgotten)

    def needed(self, events: Sequence[DomainEvent]) -> set[uuid.UUID]:
        """The key streams of the people whose values ``events`` hold."""
        return {
            self.stream_of(person)
            for event in events
            for owner in type(event).owned_fields()
            if (person := event.person(owner)) is not None
        }


def _aad(event_id: uuid.UUID, owner: str, key_id: uuid.UUID) -> bytes:
    return b"eventpile person\0" + event_id.bytes + key_id.bytes + owner.encode()
