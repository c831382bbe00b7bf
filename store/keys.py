"""Keys: random data keys, kept only wrapped by a passphrase-derived key.

The key file (mode 0600) holds the scrypt parameters and salt, and each data key
wrapped with AES-256-GCM under the key derived from the passphrase. Data keys
have numeric ids so they can rotate (``eventpile rekey``); ciphertexts name the key
that made them. Purpose keys (the message-id key, the sync folder's key) are derived
with HKDF from the first data key; the views' key from the current one. When the data
keys rotate, the purpose keys that must not change (:data:`KEPT`: message ids are
identities) are kept wrapped in the key file (each is one-way: it opens no event nor
view), and the others rotate with the keys.

The people's tree, from which each person's key derives (:mod:`eventpile.store.people`),
is kept sealed by a people's key, itself wrapped by the passphrase: a process that holds
the keys can puncture the tree (forget a person) without asking for the passphrase, as
a sync that brings a forgetting does. A home made before people had keys derives its
tree from the first data key; it cannot forget anyone.
"""

from __future__ import annotations

import hmac
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from eventpile.store.errors import StoreError, WrongPassphrase
from eventpile.store.files import sync_directory
from eventpile.store.passphrase import (
    DAMAGED,
    KEY_FILE_FORMAT,
    b64,
    document_of,
    read,
    scrypt,
    unb64,
    wrapping_key,
)

SCRYPT_N = 2**14  # ~40 ms here: interactive use, one derivation per process
SCRYPT_R = 8
VIEWS = "views"
KEPT = ("message-id", "person", "log-seal", "event-type")
"""The purpose keys a rotation of the data keys keeps: message ids and people's ids are
made with them, the log's seals (:mod:`eventpile.store.seals`) and the stored topics
(:class:`eventpile.store.mapper.StoredTopics`) too."""
PEOPLE = "people"


def _wrap_aad(key_id: int) -> bytes:
    return f"eventpile data key {key_id}".encode()


def _purpose_aad(purpose: str) -> bytes:
    return f"eventpile purpose key {purpose}".encode()


@dataclass(frozen=True)
class Keyring:
    """The unlocked data keys of one home."""

    installation_id: uuid.UUID
    keys: dict[int, bytes]
    current: int
    kept: dict[str, bytes] | None = None
    """The purpose keys of :data:`KEPT`, once the data keys have rotated (None: derived
    from the first data key, as every other purpose key)."""
    people_key: bytes | None = None
    """The key that seals the people's tree in the key file (None: a home made before)."""
    people_cover: bytes | None = None
    """The people's tree (:class:`eventpile.store.people.Tree`, as bytes)."""

    def purpose_key(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (those of :data:`KEPT` stable across rotation)."""
        if self.kept is not None and purpose in self.kept:
            return self.kept[purpose]
        return _hkdf(self.keys[min(self.keys)], purpose)

    def kept_keys(self) -> dict[str, bytes]:
        return {purpose: self.purpose_key(purpose) for purpose in KEPT}

    def people_tree(self) -> bytes:
        """The people's tree as bytes: the key file's, or of a home made before people had
        keys, a root derived from the first data key."""
        if self.people_cover is not None:
            return self.people_cover
        return _root(_hkdf(self.keys[min(self.keys)], PEOPLE))

    def views_key(self) -> bytes:
        """The views' key: from the current data key, so that it rotates with it."""
        return _hkdf(self.keys[self.current], VIEWS)

    def rotated(self) -> Keyring:
        """These keys and a new current one (the purpose keys of :data:`KEPT` kept)."""
        new = max(self.keys) + 1
        keys = {**self.keys, new: os.urandom(32)}
        return replace(self, keys=keys, current=new, kept=self.kept_keys())


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
        people_key=keys.people_key if keys else os.urandom(32),
        people_cover=keys.people_cover if keys else _root(os.urandom(32)),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    _write(fd, _wrapped(ring, passphrase))
    return ring


def change_passphrase(path: Path, old: str, new: str) -> Keyring:
    """Wrap the data keys of ``path`` under ``new`` instead of ``old`` (a new salt too):
    the keys themselves, and so every event and view, stay as they are, whatever the
    log's size. The file is replaced whole, so a crash leaves the old one or the new."""
    with _locked(path):
        ring = open_key_file(path, old)
        if new == old:
            raise StoreError("the new passphrase is the one the home has")
        _replace(path, _wrapped(ring, new))
    return open_key_file(path, new)


def rotate_keys(path: Path, passphrase: str) -> Keyring:
    """A new current data key in the key file of ``path`` (the purpose keys kept beside
    it), unless a rotation is under way already (the file holds more than one key): the
    keys after it. The file is replaced whole."""
    with _locked(path):
        ring = open_key_file(path, passphrase)
        if len(ring.keys) > 1:  # under way: keep what a newer version keeps, before the
            # old keys it derives from are retired (the log's seals' key, say)
            if ring.kept is not None and set(KEPT) - set(ring.kept):
                _replace(path, _wrapped(replace(ring, kept=ring.kept_keys()), passphrase))
                return open_key_file(path, passphrase)
            return ring
        _replace(path, _wrapped(ring.rotated(), passphrase))
    return open_key_file(path, passphrase)


def _root(key: bytes) -> bytes:
    """A people's tree of its root alone (see :class:`eventpile.store.people.Tree`)."""
    return bytes(9) + key


def puncture_people(path: Path, ring: Keyring, puncture: Callable[[bytes], bytes]) -> Keyring:
    """Replace the people's tree of the key file of ``path`` by ``puncture`` of it (read
    and written under a lock, so that two processes forgetting at once lose neither);
    ``ring`` with the new tree. Needs no passphrase: the tree is sealed by the people's key."""
    if ring.people_key is None:
        raise StoreError(
            "this home was made before people had keys of their own (its people's keys "
            "derive from its data key): it cannot forget anyone"
        )
    with _locked(path):
        document = json.loads(path.read_bytes())
        if repuncture(document, ring.people_key, puncture):
            _replace(path, document)
    return replace(ring, people_cover=_open_tree(ring.people_key, document[PEOPLE]["tree"]))


def repuncture(document: dict[str, Any], key: bytes, puncture: Callable[[bytes], bytes]) -> bool:
    """Replace the people's tree of a key file's ``document`` (sealed by ``key``) by
    ``puncture`` of it; whether that changed it."""
    old = _open_tree(key, document[PEOPLE]["tree"])
    new = puncture(old)
    if new != old:
        document[PEOPLE]["tree"] = _seal_tree(key, new)
    return new != old


def people_now(path: Path, ring: Keyring) -> Keyring:
    """``ring`` with the people's tree the key file of ``path`` holds now (a process that
    read it earlier may hold one since punctured)."""
    if ring.people_key is None:
        return ring
    document = json.loads(path.read_bytes())
    return replace(ring, people_cover=_open_tree(ring.people_key, document[PEOPLE]["tree"]))


def _seal_tree(key: bytes, tree: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return b64(nonce + AESGCM(key).encrypt(nonce, tree, b"eventpile people tree"))


def _open_tree(key: bytes, text: str) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = unb64(text)
    return AESGCM(key).decrypt(blob[:12], blob[12:], b"eventpile people tree")


def retire_keys(path: Path, ring: Keyring) -> None:
    """Destroy every data key of the key file of ``path`` but ``ring``'s current one: their
    entries leave the file (no passphrase is needed: each key is wrapped apart)."""
    with _locked(path):
        document = json.loads(path.read_bytes())
        if int(document["current"]) != ring.current or "purposes" not in document:
            raise StoreError(f"the key file {path} changed during the rekey: run it again")
        if set(KEPT) - set(document["purposes"]):  # begun by an older version: what this
            # one keeps derives from the old keys still (see rotate_keys)
            raise StoreError(
                "the rekey was begun by an older version: run `eventpile rekey` again to "
                "finish it (the old keys stay until then)"
            )
        document["keys"] = [e for e in document["keys"] if int(e["id"]) == ring.current]
        _replace(path, document)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Inside, no other process changes the key file ``path`` (each writer reads it,
    changes it and writes it whole: without the lock, one could undo another's change,
    a person forgotten say)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _replace(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as the file ``path`` whole: a crash leaves the old or the new."""
    fresh = path.with_name(path.name + ".new")
    try:
        _write(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), document)
        os.replace(fresh, path)
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def _wrapped(ring: Keyring, passphrase: str) -> dict[str, Any]:
    """The key file's document: ``ring``'s data keys wrapped by ``passphrase``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise StoreError("the passphrase must not be empty")
    salt = os.urandom(16)
    kek = AESGCM(scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, 1))
    keys = []
    for key_id, key in sorted(ring.keys.items()):
        nonce = os.urandom(12)
        wrapped = nonce + kek.encrypt(nonce, key, _wrap_aad(key_id))
        keys.append({"id": key_id, "wrapped": b64(wrapped)})
    document: dict[str, Any] = {
        "format": KEY_FILE_FORMAT,
        "installation_id": str(ring.installation_id),
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": 1, "salt": b64(salt)},
        "keys": keys,
        "current": ring.current,
    }
    if ring.kept is not None:
        purposes: dict[str, str] = {}
        for purpose, key in sorted(ring.kept.items()):
            nonce = os.urandom(12)
            purposes[purpose] = b64(nonce + kek.encrypt(nonce, key, _purpose_aad(purpose)))
        document["purposes"] = purposes
    if ring.people_key is not None and ring.people_cover is not None:
        nonce = os.urandom(12)
        wrapped = nonce + kek.encrypt(nonce, ring.people_key, _purpose_aad(PEOPLE))
        document[PEOPLE] = {
            "key": b64(wrapped),
            "tree": _seal_tree(ring.people_key, ring.people_cover),
        }
    return document


def _write(fd: int, document: dict[str, Any]) -> None:
    with os.fdopen(fd, "w") as f:
        json.dump(document, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def open_key_file(path: Path, passphrase: str) -> Keyring:
    """Unwrap the data keys; a clear error for a wrong passphrase or a damaged file."""
    return unwrap_keys(read(path), passphrase, path)


def unwrap_keys(data: bytes, passphrase: str, path: Path | str) -> Keyring:
    """The data keys of a key file's content (from ``path``, a file or an address)."""
    document = document_of(data, path)
    return unwrapped(document, wrapping_key(document, passphrase, path), path)


def unwrapped(document: dict[str, Any], key: bytes, path: Path | str) -> Keyring:
    """The keyring of the key file's ``document``, unwrapped by the passphrase's ``key``
    (:func:`eventpile.store.passphrase.wrapping_key`)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kek = AESGCM(key)
    try:
        keys = {}
        for entry in document["keys"]:
            blob = unb64(entry["wrapped"])
            keys[int(entry["id"])] = kek.decrypt(blob[:12], blob[12:], _wrap_aad(entry["id"]))
        kept = None
        if "purposes" in document:
            kept = {}
            for purpose, text in document["purposes"].items():
                blob = unb64(text)
                kept[purpose] = kek.decrypt(blob[:12], blob[12:], _purpose_aad(purpose))
        people_key = people_cover = None
        if PEOPLE in document:
            blob = unb64(document[PEOPLE]["key"])
            people_key = kek.decrypt(blob[:12], blob[12:], _purpose_aad(PEOPLE))
            people_cover = _open_tree(people_key, document[PEOPLE]["tree"])
        ring = Keyring(
            uuid.UUID(document["installation_id"]),
            keys,
            int(document["current"]),
            kept,
            people_key,
            people_cover,
        )
        if ring.current not in keys:
            raise StoreError(f"the key file {path} is damaged: no current key {ring.current}")
        return ring
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase (or a damaged key file)") from None
    except DAMAGED as e:
        raise StoreError(f"the key file {path} is damaged: {e!r}") from None
