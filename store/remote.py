"""Another installation's sync folder over HTTP (``eventpile serve --sync`` answers).

Every request names its installation and proves it holds the user's keys: an HMAC,
under a key derived from the data keys, of the method, the path, the time and the
body's digest (``Authorization: Eventpile ORIGIN TIME MAC``). A server refuses a
request without one, one more than :data:`SKEW_S` seconds off its clock, or one
whose MAC is wrong. What is sent is sealed segments and heads (see
:mod:`eventpile.store.segments`): HTTP carries no plaintext of the user's, so plain
HTTP over a trusted network or an SSH tunnel is enough; the server binds 127.0.0.1
unless told otherwise. The only request without a MAC is ``join``'s fetch of the
key file, which needs the one-time token the server printed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Final

from eventpile.store.segments import FolderError

SKEW_S: Final = 300
TIMEOUT_S: Final = 60
PREFIX: Final = "/sync"


class Unreachable(Exception):
    """The server did not answer (network down, not running): worth trying again later."""


def mac(key: bytes, method: str, path: str, stamp: int, body: bytes) -> str:
    """The MAC of a request, as the client sends it and the server checks it."""
    message = f"{method}\n{path}\n{stamp}\n".encode() + hashlib.sha256(body).digest()
    return hmac.new(key, message, "sha256").hexdigest()


def check_form(header: str | None, now: float) -> tuple[uuid.UUID, int, str]:
    """``(origin, time, MAC)`` of a request's proof, checked for its form and time only
    (before its body is read); ``PermissionError`` if it has none."""
    try:
        scheme, origin, stamp, given = (header or "").split()
        who, when = uuid.UUID(hex=origin), int(stamp)
    except ValueError:
        raise PermissionError("no proof of the keys (Authorization: Eventpile ...)") from None
    if scheme != "Eventpile" or abs(now - when) > SKEW_S:
        raise PermissionError("no proof of the keys, or a clock more than 5 minutes off")
    return who, when, given


def check(
    key: bytes, header: str | None, method: str, path: str, body: bytes, now: float
) -> uuid.UUID:
    """The installation a request comes from; ``PermissionError`` if it cannot prove it
    holds the keys."""
    who, when, given = check_form(header, now)
    if not hmac.compare_digest(given, mac(key, method, path, when, body)):
        raise PermissionError("the request does not prove it holds this user's keys")
    return who


class RemoteFiles:
    """The sync folder of the installation at ``url`` (see
    :class:`eventpile.store.segments.Files`)."""

    def __init__(self, url: str, key: bytes, origin: uuid.UUID):
        self.base = url.rstrip("/")
        self.where = self.base
        self._key = key
        self._origin = origin

    def origins(self) -> list[str]:
        return list(json.loads(self._request("GET", "/origins")))

    def names(self, origin: str) -> list[str]:
        return list(json.loads(self._request("GET", f"/names/{origin}")))

    def get(self, name: str) -> bytes | None:
        try:
            return self._request("GET", f"/files/{name}")
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        self._request("PUT", f"/files/{name}", data)

    def run(self) -> dict[str, Any]:
        """Have the server sync its own log with its folder; what its sync did."""
        return dict(json.loads(self._request("POST", "/run")))

    def _request(self, method: str, path: str, body: bytes = b"") -> bytes:
        full = PREFIX + path
        stamp = int(time.time())
        proof = mac(self._key, method, full, stamp, body)
        request = urllib.request.Request(
            self.base + full,
            data=body if method != "GET" else None,
            method=method,
            headers={"Authorization": f"Eventpile {self._origin.hex} {stamp} {proof}"},
        )
        return fetch(request, self.base)


def fetch_key_file(url: str) -> bytes:
    """The key file an installation serves to ``join`` (``url`` with its ``?token=``)."""
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    if not token:
        raise FolderError(
            f"{url}: give the address `eventpile serve --sync` printed, with its token"
        )
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/")
    query = urllib.parse.urlencode({"token": token})
    return fetch(urllib.request.Request(f"{base}{PREFIX}/keys?{query}"), base)


def fetch(request: urllib.request.Request, where: str) -> bytes:
    """The body of the answer; :class:`Unreachable` if there was none, ``FileNotFoundError``
    for a 404, :class:`FolderError` (the server's one line) for another refusal."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as refused:
        if refused.code == 404:
            raise FileNotFoundError(request.full_url) from None
        reason = refused.read().decode(errors="replace").strip() or refused.reason
        raise FolderError(f"{where} refused: {reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or str(error)
        raise Unreachable(f"{where} does not answer: {reason}") from None
