"""AES-256-GCM per stored event, bound to its row.

Envelope: ``format (1 B) | flags (1 B) | class_version (2 B) | key_id (4 B) |
nonce (12 B) | ciphertext+tag``. The associated data is the header plus the
row's originator id, version and topic, so a ciphertext copied under another
row, a changed header or a flipped bit fails authentication.
"""

from __future__ import annotations

import os
import struct
import uuid
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventpile.store.errors import TamperedData
from eventpile.store.keys import Keyring

HEADER: Final = struct.Struct(">BBHI")
ENVELOPE_FORMAT: Final = 1
COMPRESSED: Final = 0x01
RETIRED_KEY: Final = "sealed with a retired data key"
"""What the database says of an event sealed with a key a rekey replaced (bytes 5 to 8 of
a sealed event are its key's id: the database checks them, see ``require_key``)."""


def row_aad(header: bytes, originator_id: uuid.UUID | str, version: int, topic: str) -> bytes:
    raw = (
        originator_id.bytes
        if isinstance(originator_id, uuid.UUID)
        else bytes.fromhex(originator_id.replace("-", ""))
    )
    return header + raw + version.to_bytes(8, "big") + topic.encode()


class EventCipher:
    """Seals and opens event payloads with the keyring's keys."""

    def __init__(self, keyring: Keyring):
        self._aeads = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._current = keyring.current

    def seal(
        self,
        plaintext: bytes,
        originator_id: uuid.UUID,
        version: int,
        topic: str,
        flags: int = 0,
        class_version: int = 1,
    ) -> bytes:
        header = HEADER.pack(ENVELOPE_FORMAT, flags, class_version, self._current)
        nonce = os.urandom(12)
        aad = row_aad(header, originator_id, version, topic)
        return header + nonce + self._aeads[self._current].encrypt(nonce, plaintext, aad)

    @property
    def current(self) -> int:
        return self._current

    @staticmethod
    def key_of(blob: bytes) -> int:
        """The id of the data key that sealed ``blob`` (0 if it is too short to say)."""
        return HEADER.unpack(blob[: HEADER.size])[3] if len(blob) >= HEADER.size else 0

    def reseal(
        self, blob: bytes, originator_id: uuid.UUID | str, version: int, topic: str
    ) -> bytes:
        """``blob``, authenticated, sealed anew with the current key for the same row."""
        flags, class_version, plaintext = self.open(blob, originator_id, version, topic)
        return self.seal(plaintext, _uuid(originator_id), version, topic, flags, class_version)

    def open(
        self, blob: bytes, originator_id: uuid.UUID | str, version: int, topic: str
    ) -> tuple[int, int, bytes]:
        """``(flags, class_version, plaintext)``; :class:`TamperedData` if inauthentic."""
        if len(blob) < HEADER.size + 12 + 16:
            raise _tampered(originator_id, version, "ciphertext truncated")
        header = blob[: HEADER.size]
        fmt, flags, class_version, key_id = HEADER.unpack(header)
        aead = self._aeads.get(key_id)
        if fmt != ENVELOPE_FORMAT:
            raise _tampered(originator_id, version, f"unknown envelope format {fmt}")
        if aead is None:
            raise _tampered(
                originator_id,
                version,
                f"sealed with data key {key_id}, which these keys lack (they hold "
                f"{', '.join(map(str, sorted(self._aeads)))}): if the home was rekeyed since "
                "this process started, run it again; another installation or machine needs "
                "the keys.json of the home that ran `eventpile rekey`",
            )
        nonce = blob[HEADER.size : HEADER.size + 12]
        try:
            plaintext = aead.decrypt(
                nonce, blob[HEADER.size + 12 :], row_aad(header, originator_id, version, topic)
            )
        except InvalidTag:
            raise _tampered(
                originator_id, version, "ciphertext fails authentication (tampered or moved)"
            ) from None
        return flags, class_version, plaintext


def _uuid(originator_id: uuid.UUID | str) -> uuid.UUID:
    return originator_id if isinstance(originator_id, uuid.UUID) else uuid.UUID(originator_id)


def _tampered(originator_id: uuid.UUID | str, version: int, problem: str) -> TamperedData:
    return TamperedData(f"event {originator_id} v{version}: {problem}")
