"""The passphrase's key: scrypt of the passphrase, with the key file's parameters, that
unwraps the data keys (:mod:`eventpile.store.keys`).

Lean on purpose (the standard library's json, hashlib and binascii): a command that
unlocks a home with its passphrase begins scrypt in a thread (:func:`unlocking`) before
it loads anything else, and loads what it needs the keys for meanwhile, on the other
core (scrypt holds no GIL).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os

from eventpile.store.errors import NotInitialised, StoreError

TYPE_CHECKING = False  # as typing's: this module loads nothing it can do without
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from eventpile.store.keys import Keyring

KEY_FILE = "keys.json"
"""The key file, in the home."""
KEY_FILE_FORMAT = 1
MAX_KDF_MEMORY = 256 << 20  # bytes
"""The most memory a key file's scrypt parameters may ask (this version's ask 16 MiB): a
key file that asks more is taken as damaged, not as a reason to allocate it."""
DAMAGED = (KeyError, TypeError, ValueError, AttributeError, OverflowError, MemoryError)
"""What a value of the wrong type or range in a key file raises (scrypt's own limits
raise MemoryError, OverflowError, ValueError; a bad base64 binascii.Error, a ValueError)."""


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def unb64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode(), strict_mode=True)


def read(path: str | os.PathLike[str]) -> bytes:
    """The key file at ``path``; a clear error if there is none, or it is unreadable."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        raise NotInitialised(f"no key file at {path}: run `eventpile init` first") from None
    except OSError as e:
        raise StoreError(f"the key file {path} is unreadable: {e}") from None


def document_of(data: bytes, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON object of a key file's content (from ``path``, a file or an address)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise StoreError(f"the key file {path} is unreadable: {e}") from None
    if not isinstance(document, dict):
        raise StoreError(f"the key file {path} is damaged: not a JSON object")
    return document


def wrapping_key(document: dict[str, Any], passphrase: str, path: str | os.PathLike[str]) -> bytes:
    """The key that wraps the data keys of the key file's ``document``: scrypt of
    ``passphrase`` with the file's parameters."""
    try:
        if document["format"] != KEY_FILE_FORMAT or document["kdf"]["name"] != "scrypt":
            raise StoreError(f"the key file {path} has an unknown format")
        kdf = document["kdf"]
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        if not all(type(value) is int and value > 0 for value in (n, r, p)):
            raise ValueError(f"scrypt's n, r and p are {n!r}, {r!r}, {p!r}")
        if _memory(n, r, p) > MAX_KDF_MEMORY:
            limit = MAX_KDF_MEMORY >> 20
            raise ValueError(f"scrypt's n={n}, r={r}, p={p} ask more than {limit} MiB")
        return scrypt(passphrase, unb64(kdf["salt"]), n, r, p)
    except DAMAGED as e:
        raise StoreError(f"the key file {path} is damaged: {e!r}") from None


def scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """scrypt (RFC 7914), 32 bytes: the standard library's (OpenSSL's), allowed the
    memory its parameters need."""
    return hashlib.scrypt(
        passphrase.encode(), salt=salt, n=n, r=r, p=p, maxmem=_memory(n, r, p), dklen=32
    )


def _memory(n: int, r: int, p: int) -> int:
    """The bytes scrypt of these parameters works in (as OpenSSL counts them)."""
    return 128 * r * (n + p + 2)


def unlocking(home: str | os.PathLike[str], passphrase: str) -> Callable[[], Keyring]:
    """The keys of the home at ``home``, begun: its key file is read here, and scrypt
    runs in a thread while the caller goes on; the function returned waits for it and
    gives the keyring, or raises what :meth:`eventpile.store.home.Home.unlock` would."""
    import threading

    path = os.path.join(home, KEY_FILE)
    document = document_of(read(path), path)
    derived: list[bytes | BaseException] = []

    def derive() -> None:
        try:
            derived.append(wrapping_key(document, passphrase, path))
        except BaseException as e:  # raised in the caller's thread
            derived.append(e)

    thread = threading.Thread(target=derive, daemon=True)
    thread.start()
    import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401  (unwrapping's, loaded meanwhile)

    def keyring() -> Keyring:
        from eventpile.store.keys import unwrapped

        thread.join()
        if isinstance(derived[0], BaseException):
            raise derived[0]
        return unwrapped(document, derived[0], path)

    return keyring
