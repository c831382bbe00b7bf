"""Keys: random data keys, kept only wrapped by a passphrase-derived key.

The key file (mode 0600) holds the scrypt parameters and salt, and each data key
wrapped with AES-256-GCM under the key derived from the passphrase. Data keys
have numeric ids so they can rotate (``eventpile rekey``); ciphertexts name the key
that made them. Purpose keys (the message-id key, the sync folder's key) are derived
with HKDF from the first data key; the views' key from the current one. When the data
keys rotate, the purpose keys that must not change (:data:`KEPT`: message ids are
identities) are kept wrapped in the key file (each is one-way: it opens no event nor
view), and the others rotate with the keys.

The people's key (:data:`PEOPLE`) seals the keys of the people whose data the log
holds, one key each (:mod:`eventpile.store.people`): forgetting a person destroys
theirs, and replaces the people's key, so that a copy of the log from before opens
for everyone else but them. It rotates apart from the data keys; its ids start at
:data:`PEOPLE_BASE`, so that a ciphertext's key id says which series made it.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import uuid
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from eventpile.store.errors import NotInitialised, StoreError, WrongPassphrase

KEY_FILE_FORMAT = 1
SCRYPT_N = 2**14  # ~40 ms here: interactive use, one derivation per process
SCRYPT_R = 8
VIEWS = "views"
KEPT = ("message-id", "person")
"""The purpose keys a rotation of the data keys keeps: message ids and the ids of people's
key streams are made with them."""
PEOPLE = "people"
PEOPLE_BASE = 0x8000_0000
"""The id of a home's first people's key, derived from its first data key where the key
file holds none (a home made before people had keys); a new home's is random, the next."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _derive_kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _wrap_aad(key_id: int) -> bytes:
    return f"eventpile data key {key_id}".encode()


def _purpose_aad(purpose: str) -> bytes:
    return f"eventpile purpose key {purpose}".encode()


def _people_aad(key_id: int) -> bytes:
    return f"eventpile people key {key_id}".encode()


@dataclass(frozen=True)
class Keyring:
    """The unlocked data keys of one home."""

    installation_id: uuid.UUID
    keys: dict[int, bytes]
    current: int
    kept: dict[str, bytes] | None = None
    """The purpose keys of :data:`KEPT`, once the data keys have rotated (None: derived
    from the first data key, as every other purpose key)."""
    people: dict[int, bytes] | None = None
    """The people's keys by id (None: the one derived from the first data key)."""
    people_current: int = PEOPLE_BASE

    def purpose_key(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (those of :data:`KEPT` stable across rotation)."""
        if self.kept is not None and purpose in self.kept:
            return self.kept[purpose]
        return _hkdf(self.keys[min(self.keys)], purpose)

    def kept_keys(self) -> dict[str, bytes]:
        return {purpose: self.purpose_key(purpose) for purpose in KEPT}

    def people_keys(self) -> dict[int, bytes]:
        """The people's keys by id (the current one: :attr:`people_current`)."""
        if self.people is None:
            return {PEOPLE_BASE: _hkdf(self.keys[min(self.keys)], PEOPLE)}
        return self.people

    def views_key(self) -> bytes:
        """The views' key: from the current data key, so that it rotates with it."""
        return _hkdf(self.keys[self.current], VIEWS)

    def rotated(self) -> Keyring:
        """These keys and a new current one (the purpose keys of :data:`KEPT` kept)."""
        new = max(self.keys) + 1
        keys = {**self.keys, new: os.urandom(32)}
        return Keyring(
            self.installation_id, keys, new, self.kept_keys(), self.people, self.people_current
        )

    def people_rotated(self) -> Keyring:
        """These keys and a new current people's key (the old ones kept until retired)."""
        people = self.people_keys()
        new = max(people) + 1
        return replace(self, people={**people, new: os.urandom(32)}, people_current=new)


def view_keys(ring: Keyring) -> tuple[list[bytes], bytes]:
    """The views' keys of ``ring``'s retired data keys, and of its current one."""
    old = [_hkdf(key, VIEWS) for key_id, key in sorted(ring.keys.items()) if key_id != ring.current]
    return old, ring.views_key()


@cache
def _hkdf(key: bytes, purpose: str) -> bytes:
    """HKDF-SHA256 (RFC 5869) without salt, 32 bytes: one HMAC to extract, one to expand
    (the standard library's, so that a process that reads a view loads no cryptography)."""
    pseudorandom = hmac.digest(bytes(32), key, "sha256")
    return hmac.digest(pseudorandom, purpose.encode() + b"\x01", "sha256")


def create_key_file(path: Path, passphrase: str, keys: Keyring | None = None) -> Keyring:
    """A new installation id, with a new data key or the data keys of ``keys`` (another
    installation of the same user's); written to ``path`` (0600)."""
    ring = Keyring(
        installation_id=uuid.uuid4(),
        keys=dict(keys.keys) if keys else {1: os.urandom(32)},
        current=keys.current if keys else 1,
        kept=keys.kept if keys else None,
        people=keys.people if keys else {PEOPLE_BASE + 1: os.urandom(32)},
        people_current=keys.people_current if keys else PEOPLE_BASE + 1,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    _write(fd, _wrapped(ring, passphrase))
    return ring


def change_passphrase(path: Path, old: str, new: str) -> Keyring:
    """Wrap the data keys of ``path`` under ``new`` instead of ``old`` (a new salt too):
    the keys themselves, and so every event and view, stay as they are, whatever the
    log's size. The file is replaced whole, so a crash leaves the old one or the new."""
    ring = open_key_file(path, old)
    if new == old:
        raise StoreError("the new passphrase is the one the home has")
    _replace(path, _wrapped(ring, new))
    return open_key_file(path, new)


def rotate_keys(path: Path, passphrase: str) -> Keyring:
    """A new current data key in the key file of ``path`` (the purpose keys kept beside
    it), unless a rotation is under way already (the file holds more than one key): the
    keys after it. The file is replaced whole."""
    ring = open_key_file(path, passphrase)
    if len(ring.keys) > 1:
        return ring
    _replace(path, _wrapped(ring.rotated(), passphrase))
    return open_key_file(path, passphrase)


def rotate_people(path: Path, passphrase: str) -> Keyring:
    """A new current people's key in the key file of ``path``, unless a rotation is under
    way already (it holds more than one): the keys after it. The file is replaced whole."""
    ring = open_key_file(path, passphrase)
    if ring.people is not None and len(ring.people) > 1:
        return ring
    _replace(path, _wrapped(ring.people_rotated(), passphrase))
    return open_key_file(path, passphrase)


def retire_people(path: Path, ring: Keyring) -> None:
    """Destroy every people's key of the key file of ``path`` but ``ring``'s current one."""
    document = json.loads(path.read_bytes())
    people = document.get(PEOPLE)
    if people is None or int(people["current"]) != ring.people_current:
        raise StoreError(f"the key file {path} changed while a person was forgotten: run it again")
    people["keys"] = [e for e in people["keys"] if int(e["id"]) == ring.people_current]
    _replace(path, document)


def retire_keys(path: Path, ring: Keyring) -> None:
    """Destroy every data key of the key file of ``path`` but ``ring``'s current one: their
    entries leave the file (no passphrase is needed: each key is wrapped apart)."""
    document = json.loads(path.read_bytes())
    if int(document["current"]) != ring.current or "purposes" not in document:
        raise StoreError(f"the key file {path} changed during the rekey: run it again")
    document["keys"] = [e for e in document["keys"] if int(e["id"]) == ring.current]
    _replace(path, document)


def _replace(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as the file ``path`` whole: a crash leaves the old or the new."""
    fresh = path.with_name(path.name + ".new")
    try:
        _write(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), document)
        os.replace(fresh, path)
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _wrapped(ring: Keyring, passphrase: str) -> dict[str, Any]:
    """The key file's document: ``ring``'s data keys wrapped by ``passphrase``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise StoreError("the passphrase must not be empty")
    salt = os.urandom(16)
    kek = AESGCM(_derive_kek(passphrase, salt, SCRYPT_N, SCRYPT_R, 1))
    keys = []
    for key_id, key in sorted(ring.keys.items()):
        nonce = os.urandom(12)
        wrapped = nonce + kek.encrypt(nonce, key, _wrap_aad(key_id))
        keys.append({"id": key_id, "wrapped": _b64(wrapped)})
    document: dict[str, Any] = {
        "format": KEY_FILE_FORMAT,
        "installation_id": str(ring.installation_id),
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": 1, "salt": _b64(salt)},
        "keys": keys,
        "current": ring.current,
    }
    if ring.kept is not None:
        purposes: dict[str, str] = {}
        for purpose, key in sorted(ring.kept.items()):
            nonce = os.urandom(12)
            purposes[purpose] = _b64(nonce + kek.encrypt(nonce, key, _purpose_aad(purpose)))
        document["purposes"] = purposes
    if ring.people is not None:
        people = []
        for key_id, key in sorted(ring.people.items()):
            nonce = os.urandom(12)
            wrapped = nonce + kek.encrypt(nonce, key, _people_aad(key_id))
            people.append({"id": key_id, "wrapped": _b64(wrapped)})
        document[PEOPLE] = {"current": ring.people_current, "keys": people}
    return document


def _write(fd: int, document: dict[str, Any]) -> None:
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def open_key_file(path: Path, passphrase: str) -> Keyring:
    """Unwrap the data keys; a clear error for a wrong passphrase or a damaged file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotInitialised(f"no key file at {path}: run `eventpile init` first") from None
    except OSError as e:
        raise StoreError(f"the key file {path} is unreadable: {e}") from None
    return unwrap_keys(data, passphrase, path)


def unwrap_keys(data: bytes, passphrase: str, path: Path | str) -> Keyring:
    """The data keys of a key file's content (from ``path``, a file or an address)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        document: dict[str, Any] = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise StoreError(f"the key file {path} is unreadable: {e}") from None
    try:
        if document["format"] != KEY_FILE_FORMAT or document["kdf"]["name"] != "scrypt":
            raise StoreError(f"the key file {path} has an unknown format")
        kdf = document["kdf"]
        kek = AESGCM(_derive_kek(passphrase, _unb64(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"]))
        keys = {}
        for entry in document["keys"]:
            blob = _unb64(entry["wrapped"])
            keys[int(entry["id"])] = kek.decrypt(blob[:12], blob[12:], _wrap_aad(entry["id"]))
        kept = None
        if "purposes" in document:
            kept = {}
            for purpose, text in document["purposes"].items():
                blob = _unb64(text)
                kept[purpose] = kek.decrypt(blob[:12], blob[12:], _purpose_aad(purpose))
        people, people_current = None, PEOPLE_BASE
        if PEOPLE in document:
            people = {}
            for entry in document[PEOPLE]["keys"]:
                blob = _unb64(entry["wrapped"])
                people[int(entry["id"])] = kek.decrypt(
                    blob[:12], blob[12:], _people_aad(entry["id"])
                )
            people_current = int(document[PEOPLE]["current"])
        ring = Keyring(
            uuid.UUID(document["installation_id"]),
            keys,
            int(document["current"]),
            kept,
            people,
            people_current,
        )
        if ring.current not in keys:
            raise StoreError(f"the key file {path} is damaged: no current key {ring.current}")
        if people is not None and people_current not in people:
            raise StoreError(f"the key file {path} is damaged: no people's key {people_current}")
        return ring
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase (or a damaged key file)") from None
    # a value of the wrong type or range: scrypt's own limits raise MemoryError, OverflowError
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, MemoryError) as e:
        raise StoreError(f"the key file {path} is damaged: {e!r}") from None
