"""The agent's protocol, as a client speaks it (the standard library only, so that a
command that asks the agent loads nothing else; the agent is :mod:`eventpile.store.agent`).

A client connects to the home's socket, checks that the agent is a process of its own
user, sends ``keys``, ``stop``, ``run`` and a JSON document, or ``plain`` and bytes,
shuts its side, and reads the answer: one JSON document, or to a ``plain`` run, its
length (8 bytes, big-endian) and its bytes.

A plain run is for a client that is a whole process and must start fast: it loads
neither :mod:`json` (and with it :mod:`re` and :mod:`enum`) nor :mod:`socket` (it
speaks through ``_socket``, the module :mod:`socket` wraps) nor :mod:`pathlib`.
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False  # as typing's: a plain run imports no typing
if TYPE_CHECKING:
    from typing import Any

SOCKET = "agent.sock"
"""The agent's socket, in the home."""
ASK_TIMEOUT_S = 2.0
"""How long a command waits for the agent's answer before it does without."""
MAX_MESSAGE = 1 << 20
RUN = b"run "
PLAIN = b"plain "
LENGTH_BYTES = 8
"""The length of a plain run's answer comes first, in so many bytes (big-endian): an
answer cut short (its agent killed while it sent) is no answer."""

Identity = tuple[int, int]
"""A file's device and inode: which socket is at a path."""


class Unanswered(Exception):
    """The agent was given a command that writes, and did not answer: whether it ran
    it, its operation says (running it again here could run it twice)."""


def run(
    home: str | os.PathLike[str],
    document: dict[str, Any],
    timeout: float = ASK_TIMEOUT_S,
    *,
    once: bool = False,
) -> Any:
    """The answer of the agent of the home at ``home`` to a ``run`` of ``document`` (what
    the command line that started it serves: see :func:`eventpile.store.agent.start`);
    None if no agent of this user answers (within ``timeout`` seconds). With ``once``
    (a command that writes), :class:`Unanswered` once the agent has the document."""
    import json

    socket = os.path.join(home, SOCKET)
    return ask(socket, RUN + json.dumps(document).encode(), timeout, once=once)


def run_plain(home: str | os.PathLike[str], request: bytes) -> bytes | None:
    """The answer of the agent of the home at ``home`` to a plain run of ``request`` (the
    service of :func:`run` is given the bytes, and answers bytes); None if no agent of
    this user answers, if it answers nothing, or is of a version that has no plain runs."""
    data = exchange(os.path.join(home, SOCKET), PLAIN + request)
    if data is None or len(data) <= LENGTH_BYTES:
        return None
    answer = data[LENGTH_BYTES:]
    return answer if int.from_bytes(data[:LENGTH_BYTES], "big") == len(answer) else None


def plain_answer(answer: bytes) -> bytes:
    """What the agent sends for a plain run's ``answer`` (see :func:`run_plain`)."""
    return len(answer).to_bytes(LENGTH_BYTES, "big") + answer


def ask(
    path: str | os.PathLike[str],
    request: bytes,
    timeout: float = ASK_TIMEOUT_S,
    *,
    once: bool = False,
) -> Any:
    """The answer of the agent at ``path`` to ``request``; None if none of this user's
    answers (with ``once``: :class:`Unanswered` if it had the request)."""
    data = exchange(path, request, timeout, once=once)
    if data is None:
        return None
    document = _document(data)
    if document is None and once:
        raise Unanswered  # it had the request: what it said is no answer
    return document


def exchange(
    path: str | os.PathLike[str],
    request: bytes,
    timeout: float = ASK_TIMEOUT_S,
    *,
    once: bool = False,
) -> bytes | None:
    """The bytes the agent at ``path`` answers ``request`` with; None if none of this
    user's answers (with ``once``: :class:`Unanswered` if it had the request)."""
    known = identity_of(path)
    if known is None:
        return None
    sent = False
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        client.settimeout(timeout)
        _connect(client, os.fspath(path))
        if peer_uid(client) != os.getuid():
            return None
        client.sendall(request)
        client.shutdown(_socket.SHUT_WR)
        sent = True
        answer = received(client)
        if answer is not None or not once:
            return answer
    except ConnectionRefusedError:  # its agent was killed
        remove_if(path, known)
    except OSError:
        pass
    finally:
        client.close()
    if once and sent:
        raise Unanswered
    return None


def _connect(client: _socket.socket, path: str) -> None:
    """Connect to ``path`` by a name short enough for a socket address (at most 107
    bytes on Linux)."""
    if len(os.fsencode(path)) < 100:
        client.connect(path)
        return
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        client.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
    finally:
        os.close(folder)


def peer_uid(connection: _socket.socket) -> int:
    """The user of the process at the other end (``struct ucred``: pid, uid, gid)."""
    ucred = connection.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(ucred[4:8], sys.byteorder)


def send(connection: _socket.socket, document: dict[str, Any]) -> None:
    import json

    connection.sendall(json.dumps(document).encode())
    connection.shutdown(_socket.SHUT_WR)


def receive(connection: _socket.socket) -> Any:
    """The JSON document the other side sent before it shut its side; None if none."""
    data = received(connection)
    return None if data is None else _document(data)


def received(connection: _socket.socket) -> bytes | None:
    """What the other side sent before it shut its side; None if nothing, or more than
    :data:`MAX_MESSAGE` bytes."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
        if len(data) > MAX_MESSAGE:
            return None
    return data or None


def _document(data: bytes) -> Any:
    """The JSON document of ``data``; None if it is not one."""
    import json

    try:
        return json.loads(data)
    except ValueError:
        return None


def identity_of(path: str | os.PathLike[str]) -> Identity | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def remove_if(path: str | os.PathLike[str], which: Identity) -> None:
    """Remove ``path`` if it is still that file (not the socket of a newer agent)."""
    if identity_of(path) == which:
        try:  # noqa: SIM105 (contextlib is one more module to load)
            os.unlink(path)
        except FileNotFoundError:
            pass
