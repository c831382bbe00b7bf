"""People's keys: the values ``Of`` a person sealed under that person's own key.

Each person (an email address, or an aggregate: see
:class:`~eventpile.domain.events.Of`) has a 64-bit id, a keyed hash of who they are,
and a key derived from the home's people's tree: a GGM tree of HMAC-SHA256, whose
leaf for an id is reached from the root by the id's bits, so the keys are never stored
and every installation that shares the root derives the same ones. Forgetting a person
*punctures* the tree (:meth:`Tree.punctured`): the root gives way to the siblings of
the path to their leaf (at most 64 keys), from which every other leaf is still derived,
and theirs no longer is, by anyone who holds the key file from then on.

The mapper seals an event's values of one person together, as one ciphertext after
the payload's JSON (which says ``[owner field, person id, length]`` of each), bound to
the event's id; a ciphertext whose person's leaf is gone opens as forgotten.

A person forgotten who appears again (new mail from the same address) gets the id of
the next generation (the person's hash with a count): their old values stay forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import from_json, to_json

from eventpile.domain.events import DomainEvent
from eventpile.store.errors import StoreError, TamperedData
from eventpile.store.keys import Keyring

FORGETTING: Final = "eventpile.domain.people:PersonForgotten"
"""The stored topic of the record of a forgetting, which the recorders index apart (every
process reads them all when it starts: see ``EventLog.heed_forgettings``)."""
SEALED: Final = "§people"
"""The payload's key of the entries sealed per person (no field can have this name)."""
PEOPLE_FRAME: Final = b"\x01"
"""The first byte of a payload with values sealed per person (a JSON payload's is ``{``)."""
DEPTH: Final = 64
GENERATIONS: Final = 256
"""How many times one person may be forgotten and come back."""
_NODE: Final = 1 + 8 + 32  # depth, prefix, key


def _child(key: bytes, bit: int) -> bytes:
    return hmac.digest(key, b"eventpile people tree\0" + bytes([bit]), "sha256")


class Tree:
    """The nodes from which the people's keys derive, each ``(depth, prefix): key``:
    the root, or what is left of it after punctures (no node is another's ancestor)."""

    def __init__(self, nodes: dict[tuple[int, int], bytes]):
        self.nodes = nodes

    @classmethod
    def from_bytes(cls, data: bytes) -> Tree:
        if len(data) % _NODE:
            raise StoreError("the key file's people's tree is damaged")
        nodes = {}
        for start in range(0, len(data), _NODE):
            node = data[start : start + _NODE]
            nodes[(node[0], int.from_bytes(node[1:9], "big"))] = node[9:]
        return cls(nodes)

    def to_bytes(self) -> bytes:
        return b"".join(
            bytes([depth]) + prefix.to_bytes(8, "big") + key
            for (depth, prefix), key in sorted(self.nodes.items())
        )

    def _cover(self, leaf: int) -> tuple[int, int, bytes] | None:
        """The node the leaf derives from: ``(depth, prefix, key)``, None if punctured."""
        for depth in range(DEPTH + 1):
            key = self.nodes.get((depth, leaf >> (DEPTH - depth)))
            if key is not None:
                return depth, leaf >> (DEPTH - depth), key
        return None

    def key(self, leaf: int) -> bytes | None:
        """The key of a 64-bit id; None if it was punctured."""
        found = self._cover(leaf)
        if found is None:
            return None
        depth, _, key = found
        for d in range(depth, DEPTH):
            key = _child(key, leaf >> (DEPTH - 1 - d) & 1)
        return key

    def punctured(self, leaves: Iterable[int]) -> Tree:
        """This tree without the keys of ``leaves`` (those punctured already stay so)."""
        nodes = dict(self.nodes)
        for leaf in leaves:
            found = Tree(nodes)._cover(leaf)
            if found is None:
                continue
            depth, prefix, key = found
            del nodes[(depth, prefix)]
            for d in range(depth, DEPTH):
                bit = leaf >> (DEPTH - 1 - d) & 1
                nodes[(d + 1, (prefix << 1) | (1 - bit))] = _child(key, 1 - bit)
                key, prefix = _child(key, bit), (prefix << 1) | bit
        return Tree(nodes)

    def common(self, other: Tree) -> Tree:
        """The tree of the keys both derive (two punctured copies of one root: what a
        sync folder keeps of the trees of installations that forgot people apart)."""

        def within(trees: Tree, depth: int, prefix: int) -> bool:
            return any((d, prefix >> (depth - d)) in trees.nodes for d in range(depth + 1))

        mine = {n: k for n, k in self.nodes.items() if within(other, *n)}
        theirs = {n: k for n, k in other.nodes.items() if within(self, *n)}
        return Tree({**mine, **theirs})


class PersonKeys:
    """The people's keys of one process: derived from the key file's tree, punctured
    in memory too as soon as this process reads that someone was forgotten."""

    def __init__(self, keyring: Keyring) -> None:
        self._id_key = keyring.purpose_key("person")
        self.tree = Tree.from_bytes(keyring.people_tree())
        self._aeads: dict[int, AESGCM | None] = {}
        self._current: dict[str, int] = {}

    def ids_of(self, person: str) -> Iterable[int]:
        """The ids a person may have had, one per generation, oldest first."""
        for generation in range(GENERATIONS):
            message = f"person\0{person}\0{generation}".encode()
            yield int.from_bytes(hmac.digest(self._id_key, message, hashlib.sha256)[:8], "big")

    def current_id(self, person: str) -> int:
        """The id a person's values are sealed under now: of their first generation that
        was not forgotten."""
        found = self._current.get(person)
        if found is None:
            found = next((i for i in self.ids_of(person) if self._aead(i) is not None), None)
            if found is None:
                raise StoreError(f"a person was forgotten {GENERATIONS} times: no key is left")
            self._current[person] = found
        return found

    def forget(self, ids: Iterable[int]) -> None:
        """No longer derive the keys of ``ids`` (in this process)."""
        ids = list(ids)
        self.tree = self.tree.punctured(ids)
        self._aeads.clear()
        self._current.clear()

    def _aead(self, person_id: int) -> AESGCM | None:
        if person_id not in self._aeads:
            key = self.tree.key(person_id)
            self._aeads[person_id] = None if key is None else AESGCM(key)
        return self._aeads[person_id]

    def seal(self, event: DomainEvent, exclude: AbstractSet[str]) -> bytes:
        """The payload of ``event`` (without the fields ``exclude``): its JSON, and after
        it, if it holds values ``Of`` a person, those sealed under their key, one
        ciphertext per person (``[owner, person id, length]`` in the JSON says which)."""
        sealed: list[bytes] = []
        entries = []
        taken: set[str] = set()
        event_id = str(event.event_id)
        for owner, fields in type(event).owned_fields().items():
            person = event.person(owner)
            if person is None:
                continue
            person_id = self.current_id(person)
            aead = self._aead(person_id)
            assert aead is not None, "current_id gives an id whose key derives"
            plaintext = event.model_dump_json(include=set(fields)).encode()
            nonce = os.urandom(12)
            blob = nonce + aead.encrypt(nonce, plaintext, _aad(event_id, owner, person_id))
            sealed.append(blob)
            entries.append([owner, f"{person_id:016x}", len(blob)])
            taken.update(fields)
        rest = event.model_dump_json(exclude={*exclude, *taken}).encode()
        if not entries:
            return rest
        head = rest[:-1] + b',"' + SEALED.encode() + b'":' + to_json(entries) + b"}"
        return PEOPLE_FRAME + len(head).to_bytes(4, "big") + head + b"".join(sealed)

    def open(
        self, payload: bytes, owned: dict[str, tuple[str, ...]]
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """The fields of a payload :meth:`seal` made, and the names of those (of ``owned``,
        by owner) whose person was forgotten."""
        data, offset = head_of(payload)
        forgotten: set[str] = set()
        for owner, person_hex, length in data.pop(SEALED):
            blob, offset = payload[offset : offset + length], offset + length
            person_id = int(person_hex, 16)
            aead = self._aead(person_id)
            if aead is None:
                forgotten.update(owned.get(owner, ()))
                continue
            try:
                plaintext = aead.decrypt(
                    blob[:12], blob[12:], _aad(str(data["event_id"]), owner, person_id)
                )
            except InvalidTag:
                raise TamperedData(
                    f"event {data.get('originator_id', '?')}: its values of one person fail "
                    "authentication (tampered or moved)"
                ) from None
            data.update(from_json(plaintext))
        return data, frozenset(forgotten)


def head_of(payload: bytes) -> tuple[dict[str, Any], int]:
    """The JSON part of a payload :meth:`PersonKeys.seal` made (its values of people still
    sealed after it), and where they start."""
    size = int.from_bytes(payload[1:5], "big")
    return from_json(payload[5 : 5 + size]), 5 + size


def born_at(payload: bytes, version: int) -> bytes:
    """``payload`` saying that its event was written at ``version`` (unless it says so
    already): for an event a sync places at another version of its stream."""
    if payload[:1] != PEOPLE_FRAME:
        data = from_json(payload)
        data.setdefault("born", version)
        return to_json(data)
    head, offset = head_of(payload)
    head.setdefault("born", version)
    text = to_json(head)
    return PEOPLE_FRAME + len(text).to_bytes(4, "big") + text + payload[offset:]


def _aad(event_id: str, owner: str, person_id: int) -> bytes:
    return f"eventpile person\0{event_id}\0{owner}\0{person_id:016x}".encode()
