"""The agent: a home's unlocked keys held in memory for a while by a process of their
own, so that commands need not ask the passphrase (and run scrypt) each time.

:func:`start` (``eventpile unlock``) hands it the keyring over a socket pair; it
serves the keyring on the home's ``agent.sock`` (mode 0600) to processes of its own
user, and exits when its time is up, when :func:`stop` asks, or when its socket is
gone or taken over (the home deleted, another agent started). The keys never reach
the disk unwrapped, and the agent allows no core dump of itself. :func:`keyring`
asks it; a socket nobody answers on was left by a killed agent: it is removed.

The protocol (:mod:`eventpile.store.agent_protocol`): a client sends ``keys``, ``stop``,
or a run for the service the agent was started with, and shuts its side; the agent
answers and closes.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventpile.store.agent_protocol import (
    ASK_TIMEOUT_S,
    PLAIN,
    RUN,
    Identity,
    ask,
    identity_of,
    peer_uid,
    plain_answer,
    receive,
    received,
    remove_if,
    send,
)
from eventpile.store.errors import StoreError
from eventpile.store.home import Home
from eventpile.store.keys import Keyring, people_now

START_TIMEOUT_S = 30.0
"""How long ``unlock`` waits for a new agent to say it serves."""
CHECK_S = 1.0
"""How often the agent looks whether its socket is still its own."""
PR_SET_DUMPABLE = 4
"""prctl(2): the process may not be dumped, nor traced by its user (Linux)."""


@dataclass(frozen=True)
class Running:
    """An agent that answered."""

    pid: int
    expires_at: float
    """When it exits by itself (seconds since the epoch)."""


def keyring(home: Home) -> Keyring | None:
    """The keys of ``home`` from its agent; None if none answers, or with other keys."""
    try:
        ring = _decode(ask(home.agent_socket, b"keys"))
    except (TypeError, KeyError, ValueError, AttributeError):  # no answer, or not a keyring
        return None
    return ring if holds(home, ring) else None


def stop(home: Home) -> Running | None:
    """Stop the agent of ``home``: the one that was running, if one was."""
    answer = ask(home.agent_socket, b"stop")
    return None if answer is None else Running(answer["pid"], answer["expires_at"])


def start(home: Home, ring: Keyring, seconds: float, service: str | None = None) -> Running:
    """Start an agent that serves ``ring`` for ``seconds`` (it takes the socket over from
    one already running, which then exits); once this returns, it answers. ``service``
    (``module:function``) answers ``run`` requests in the agent, with the keys at hand
    (:func:`eventpile.store.agent_protocol.run`)."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise StoreError("the agent needs SO_PEERCRED (Linux) to know who asks for the keys")
    ours, theirs = socket.socketpair()
    ours.settimeout(START_TIMEOUT_S)
    with ours, theirs:
        first = subprocess.Popen(
            [sys.executable, "-m", "eventpile.store.agent", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            # it needs none of eventpile's settings, the passphrase least of all
            env={k: v for k, v in os.environ.items() if not k.startswith("EVENTPILE_")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        order = {"home": str(home.path), "seconds": seconds, "service": service, **_encode(ring)}
        send(ours, order)
        answer = receive(ours)
        first.wait()  # it leaves once the agent runs on its own
    if answer is None or "error" in answer:
        why = "it stopped" if answer is None else answer["error"]
        raise StoreError(f"the agent did not start: {why}")
    return Running(answer["pid"], answer["expires_at"])


def holds(home: Home, ring: Keyring) -> bool:
    """Does the key file of ``home`` hold the keys of ``ring`` (no more, no fewer)?"""
    try:
        document = json.loads(home.key_file.read_text())
        ids = {int(entry["id"]) for entry in document["keys"]}
        same = uuid.UUID(document["installation_id"]) == ring.installation_id
        return same and ids == set(ring.keys) and int(document["current"]) == ring.current
    except (OSError, ValueError, KeyError, TypeError):
        return False  # opening it with the passphrase says what is wrong


def _decode(document: Any) -> Keyring:
    kept, people = document.get("kept"), document.get("people")
    return Keyring(
        uuid.UUID(document["installation_id"]),
        {int(n): base64.b64decode(key) for n, key in document["keys"].items()},
        int(document["current"]),
        None if kept is None else {p: base64.b64decode(k) for p, k in kept.items()},
        None if people is None else base64.b64decode(people[0]),
        None if people is None else base64.b64decode(people[1]),
    )


_KEYRING = ("installation_id", "keys", "current", "kept", "people")
"""The names of a keyring's parts in the agent's orders and answers (see :func:`_encode`)."""


def _encode(ring: Keyring) -> dict[str, Any]:
    document: dict[str, Any] = {
        "installation_id": str(ring.installation_id),
        "keys": {str(n): base64.b64encode(key).decode() for n, key in ring.keys.items()},
        "current": ring.current,
    }
    if ring.kept is not None:
        document["kept"] = {p: base64.b64encode(k).decode() for p, k in ring.kept.items()}
    if ring.people_key is not None and ring.people_cover is not None:
        document["people"] = [
            base64.b64encode(ring.people_key).decode(),
            base64.b64encode(ring.people_cover).decode(),
        ]
    return document


# the agent's side -------------------------------------------------------------------


def _clock() -> float:
    """Seconds that go on while the machine sleeps (a closed laptop's time counts)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _no_core_dumps() -> None:
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with suppress(OSError, AttributeError):  # no prctl: the limit above still holds
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _listen(home: Path) -> tuple[socket.socket, Path, Identity]:
    """Listen on the home's socket, made 0600 under another name and renamed into place
    (over the socket of another agent, or one a killed agent left)."""
    os.chdir(home)  # names relative to the home: its path may be as long as it likes
    path, making = Path(Home(home).agent_socket.name), f".agent.{os.getpid()}.sock"
    Path(making).unlink(missing_ok=True)  # left by a process of that pid that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        listener.bind(making)
    finally:
        os.umask(previous)
    listener.listen(64)
    os.replace(making, path)
    identity = identity_of(path)
    assert identity is not None
    return listener, path, identity


def _serve(
    listener: socket.socket,
    path: Path,
    identity: Identity,
    until: float,
    running: dict[str, Any],
    keys: dict[str, Any],
    service: Callable[[Any], Any] | None = None,
) -> None:
    """Give ``keys`` until ``until`` (by :func:`_clock`), until a ``stop``, or until the
    socket at ``path`` is gone or another's; each answer says who is ``running``. A
    ``run`` request's document goes to ``service``, and its answer back."""
    stopped = json.dumps(running).encode()
    answer = _Answer(running, keys, Home(Path(path).parent).key_file)
    while (left := until - _clock()) > 0 and identity_of(path) == identity:
        listener.settimeout(min(left, CHECK_S))
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        connection.settimeout(ASK_TIMEOUT_S)
        try:
            if peer_uid(connection) != os.getuid():
                connection.close()
                continue
            request = received(connection) or b""  # nothing, or too much: no request
            if request == b"stop":
                remove_if(path, identity)
                connection.sendall(stopped)
                connection.close()
                return
            if request == b"keys":
                connection.sendall(answer.now())
            elif request.startswith((RUN, PLAIN)) and service is not None:
                # in a thread: a run may take a while, and the keys are asked for meanwhile
                plain = request.startswith(PLAIN)
                document = request[len(PLAIN) :] if plain else json.loads(request[len(RUN) :])
                threading.Thread(target=_answer, args=(connection, service, document)).start()
                continue
        except (OSError, ValueError):
            pass
        connection.close()


class _Answer:
    """The answer to ``keys``: with the people's tree as the key file has it now (a
    forget, or a sync that brought one, punctures it while the agent runs)."""

    def __init__(self, running: dict[str, Any], keys: dict[str, Any], key_file: Path) -> None:
        self.running, self.keys, self.key_file = running, keys, key_file
        self.read: tuple[int, int, int] | None = None
        self.text = json.dumps({**running, **keys}).encode()

    def now(self) -> bytes:
        if "people" not in self.keys:
            return self.text
        key_file = self.key_file
        try:
            found = key_file.stat()  # a new file each write: its inode tells
        except OSError:
            return self.text
        changed = (found.st_ino, found.st_mtime_ns, found.st_size)
        if changed != self.read:
            ring = people_now(key_file, _decode(self.keys))
            self.keys = _encode(ring)
            self.text = json.dumps({**self.running, **self.keys}).encode()
            self.read = changed
        return self.text


def _answer(connection: socket.socket, service: Callable[[Any], Any], document: Any) -> None:
    """Send the answer of ``service`` to ``document``: to the bytes of a plain run, its
    bytes (any other answer, an error say, is none: the client does without)."""
    with connection, suppress(OSError):  # OSError: the client gave up waiting
        connection.settimeout(None)
        answer = service(document)
        if isinstance(document, bytes):
            connection.sendall(plain_answer(answer if isinstance(answer, bytes) else b""))
        else:
            connection.sendall(json.dumps(answer).encode())


def _service(spec: str, home: Path, ring: Keyring) -> Callable[[Any], Any]:
    """The function named ``module:function`` that answers ``run`` requests:
    ``function(home, keyring, document)``, imported when the agent starts (``document``
    is the bytes of a plain run, answered by bytes); its failure, or its import's, is an
    answer too (a plain run's client takes it for none)."""
    try:
        module, _, name = spec.partition(":")
        function = getattr(importlib.import_module(module), name)
    except Exception as e:  # the agent still serves the keys
        failed = {"error": f"{spec}: {type(e).__name__}: {e}"}
        return lambda document: failed

    def serve(document: Any) -> Any:
        try:
            return function(home, ring, document)
        except Exception as e:  # the client does without the agent
            return {"error": f"{type(e).__name__}: {e}"}

    return serve


def _main(fd: int) -> None:
    """The agent: read what to serve from the socket ``fd``; answer there once it serves."""
    _no_core_dumps()
    with socket.socket(fileno=fd) as starter:
        try:
            order = receive(starter)
            home = Path(order["home"]).resolve()
            listener, path, identity = _listen(home)
        except Exception as e:
            send(starter, {"error": f"{type(e).__name__}: {e}"})
            return
        if os.fork():  # the first process leaves: the agent is nobody's child
            os._exit(0)
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        try:
            seconds = float(order["seconds"])
            running = {"pid": os.getpid(), "expires_at": time.time() + seconds}
            keys = {name: order[name] for name in _KEYRING if name in order}
            spec = order.get("service")
            service = None if spec is None else _service(spec, home, _decode(keys))
            send(starter, running)
            starter.close()
            with listener:
                _serve(listener, path, identity, _clock() + seconds, running, keys, service)
        finally:
            remove_if(path, identity)


if __name__ == "__main__":
    _main(int(sys.argv[1]))
