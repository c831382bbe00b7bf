"""The agent's protocol, as a client speaks it (the standard library only, so that a
command that asks the agent loads nothing else; the agent is :mod:`eventpile.store.agent`).

A client connects to the home's socket, checks that the agent is a process of its own
user, sends ``keys``, ``stop`` or ``run`` and a JSON document, shuts its side, and
reads one JSON document back.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SOCKET = "agent.sock"
"""The agent's socket, in the home."""
ASK_TIMEOUT_S = 2.0
"""How long a command waits for the agent's answer before it does without."""
MAX_MESSAGE = 1 << 20
RUN = b"run "

Identity = tuple[int, int]
"""A file's device and inode: which socket is at a path."""


class Unanswered(Exception):
    """The agent was given a command that writes, and did not answer: whether it ran
    it, its operation says (running it again here could run it twice)."""


def run(
    home: Path, document: dict[str, Any], timeout: float = ASK_TIMEOUT_S, *, once: bool = False
) -> Any:
    """The answer of the agent of the home at ``home`` to a ``run`` of ``document`` (what
    the command line that started it serves: see :func:`eventpile.store.agent.start`);
    None if no agent of this user answers (within ``timeout`` seconds). With ``once``
    (a command that writes), :class:`Unanswered` once the agent has the document."""
    return ask(home / SOCKET, RUN + json.dumps(document).encode(), timeout, once=once)


def ask(path: Path, request: bytes, timeout: float = ASK_TIMEOUT_S, *, once: bool = False) -> Any:
    """The answer of the agent at ``path`` to ``request``; None if none of this user's
    answers (with ``once``: :class:`Unanswered` if it had the request)."""
    known = identity_of(path)
    if known is None:
        return None
    sent = False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            with short_address(path) as address:
                client.connect(address)
            if peer_uid(client) != os.getuid():
                return None
            client.sendall(request)
            client.shutdown(socket.SHUT_WR)
            sent = True
            answer = receive(client)
            if answer is not None or not once:
                return answer
        except ConnectionRefusedError:  # its agent was killed
            remove_if(path, known)
        except (OSError, ValueError):
            pass
    if once and sent:
        raise Unanswered
    return None


@contextmanager
def short_address(path: Path) -> Iterator[str]:
    """A name of ``path`` short enough for a socket address (at most 107 bytes on Linux)."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def peer_uid(connection: socket.socket) -> int:
    """The user of the process at the other end (``struct ucred``: pid, uid, gid)."""
    ucred = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", ucred)[1])


def send(connection: socket.socket, document: dict[str, Any]) -> None:
    connection.sendall(json.dumps(document).encode())
    connection.shutdown(socket.SHUT_WR)


def receive(connection: socket.socket) -> Any:
    """The JSON document the other side sent before it shut its side; None if none."""
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
        if len(data) > MAX_MESSAGE:
            return None
    return json.loads(data) if data else None


def identity_of(path: Path) -> Identity | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def remove_if(path: Path, which: Identity) -> None:
    """Remove ``path`` if it is still that file (not the socket of a newer agent)."""
    if identity_of(path) == which:
        path.unlink(missing_ok=True)
