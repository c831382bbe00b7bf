"""The store: the key file, the per-event cipher and the pydantic mapper (round trip of
every event type, compression, upcasting of old stored versions)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import stat
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

import eventpile.mail
import eventpile.store
from eventpile.commands.eventlog import registry_of
from eventpile.domain.events import DomainEvent
from eventpile.domain.people import PersonForgotten
from eventpile.mail.app import MailApplication
from eventpile.mail.message import MessageContent, MessageIndexed
from eventpile.store.cipher import COMPRESSED, HEADER, EventCipher
from eventpile.store.errors import (
    NotInitialised,
    StoreError,
    TamperedData,
    UnknownEvent,
    WrongPassphrase,
)
from eventpile.store.home import Home
from eventpile.store.keys import Keyring, create_key_file, open_key_file
from eventpile.store.mapper import COMPRESS_OVER, PydanticMapper
from eventpile.store.people import FORGETTING
from eventpile.store.topics import StoredTopics, topic_of
from tests.strategies import event_classes, json_values, model_strategy

PASSPHRASE = "a passphrase"


def new_keyring() -> Keyring:
    return Keyring(installation_id=uuid.uuid4(), keys={1: os.urandom(32)}, current=1)


@pytest.fixture(scope="module")
def quick_kdf() -> Iterator[None]:
    """Key files made with a cheap scrypt cost (the cost is stored in the file)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eventpile.store.keys, "SCRYPT_N", 2**8)
        yield


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory, quick_kdf: None) -> tuple[Path, Keyring]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    return path, create_key_file(path, PASSPHRASE)


# the key file -------------------------------------------------------------------------


def test_init_writes_a_private_key_file_and_unlock_reads_it_back(home: Home) -> None:
    ring = home.init(PASSPHRASE)
    assert stat.S_IMODE(home.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.path.stat().st_mode) == 0o700
    again = home.unlock(PASSPHRASE)
    assert (again.installation_id, again.keys, again.current) == (
        ring.installation_id,
        ring.keys,
        ring.current,
    )
    assert len(ring.keys[ring.current]) == 32


def test_the_data_key_is_never_in_the_key_file(key_file: tuple[Path, Keyring]) -> None:
    path, ring = key_file
    text = path.read_bytes()
    for key in ring.keys.values():
        for shown in (
            key,
            key.hex().encode(),
            key.hex().upper().encode(),
            base64.b64encode(key),
            base64.urlsafe_b64encode(key),
            base64.b64encode(key).rstrip(b"="),
        ):
            assert shown not in text


def test_a_wrong_passphrase_is_refused(key_file: tuple[Path, Keyring]) -> None:
    with pytest.raises(WrongPassphrase):
        open_key_file(key_file[0], PASSPHRASE + "!")


def test_an_empty_passphrase_is_refused_at_init(home: Home) -> None:
    with pytest.raises(StoreError, match="empty"):
        home.init("")
    assert not home.path.exists()


@pytest.mark.parametrize("left", ["events.sqlite3", "views/messages.db"])
def test_init_refuses_a_home_whose_key_file_is_missing(
    home: Home, quick_kdf: None, left: str
) -> None:
    """A new key would write events the old ones cannot be read beside (and back)."""
    home.init(PASSPHRASE)
    (home.path / left).write_bytes(b"what a home holds")
    home.key_file.unlink()
    with pytest.raises(StoreError, match="restore its keys"):
        home.init(PASSPHRASE)
    assert not home.key_file.exists()


def test_init_refuses_an_existing_home(home: Home, quick_kdf: None) -> None:
    home.init(PASSPHRASE)
    before = home.key_file.read_bytes()
    with pytest.raises(StoreError, match="already"):
        home.init(PASSPHRASE)
    assert home.key_file.read_bytes() == before


def test_a_missing_home_or_key_file_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(NotInitialised, match="eventpile init"):
        Home(tmp_path / "nowhere").unlock(PASSPHRASE)
    with pytest.raises(NotInitialised, match="eventpile init"):
        Home(tmp_path).unlock(PASSPHRASE)


def test_purpose_keys_are_distinct_stable_and_not_the_data_key(
    key_file: tuple[Path, Keyring],
) -> None:
    path, ring = key_file
    again = open_key_file(path, PASSPHRASE)
    purposes = ("views", "message-id")
    assert [ring.purpose_key(p) for p in purposes] == [again.purpose_key(p) for p in purposes]
    derived = {ring.purpose_key(p) for p in purposes}
    assert len(derived) == 2 and not derived & set(ring.keys.values())
    assert all(len(k) == 32 for k in derived)
    assert new_keyring().purpose_key("views") != ring.purpose_key("views")


def _damage(document: dict[str, Any], how: str) -> Any:
    out = copy.deepcopy(document)
    where, _, value = how.partition("=")
    *parents, last = where.split(".")
    target: Any = out
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value == "<del>":
        del target[key]
    else:
        target[key] = json.loads(value)
    return out


DAMAGES = [
    "format=2",
    "format=<del>",
    "kdf=<del>",
    'kdf="scrypt"',
    "kdf.name=[]",
    'kdf.name="argon2"',
    "kdf.salt=5",
    'kdf.salt="!!"',
    "kdf.n=-2",
    "kdf.n=0",
    "kdf.n=3",
    'kdf.n="16384"',
    "kdf.n=1.5",
    "kdf.r=0",
    "kdf.p=1099511627776",
    "kdf.n=1048576",  # with r=8: 1 GiB of memory asked, refused before it is allocated
    "kdf.r=4096",
    "kdf.n=true",
    "keys=[]",
    'keys={"a": 1}',
    "keys.0=7",
    "keys.0.wrapped=3",
    'keys.0.wrapped=""',
    'keys.0.wrapped="AAAA"',
    "keys.0.wrapped=<del>",
    "keys.0.id=2",
    "keys.0.id=null",
    "current=7",
    'current="one"',
    "current=<del>",
    "installation_id=5",
    'installation_id="zz"',
    "installation_id=<del>",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_key_file_is_a_store_error(
    key_file: tuple[Path, Keyring], tmp_path: Path, how: str
) -> None:
    document = json.loads(key_file[0].read_text())
    damaged = tmp_path / "keys.json"
    damaged.write_text(json.dumps(_damage(document, how)))
    with pytest.raises(StoreError):
        open_key_file(damaged, PASSPHRASE)


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe\x00garbage", b"[]", b'"x"', b"null", b"{", b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "binary", "list", "string", "null", "truncated", "deeply-nested"],
)
def test_a_garbled_key_file_is_a_store_error(tmp_path: Path, content: bytes) -> None:
    garbled = tmp_path / "keys.json"
    garbled.write_bytes(content)
    with pytest.raises(StoreError):
        open_key_file(garbled, PASSPHRASE)


@given(data=st.data())
def test_any_change_to_the_key_file_is_refused_or_harmless(
    key_file: tuple[Path, Keyring], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Bytes flipped, cut or a value replaced: a StoreError, or the very same keys."""
    path, ring = key_file
    original = path.read_bytes()
    kind = data.draw(st.sampled_from(["flip", "cut", "value"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(original) - 1))
        changed = original[:at] + bytes([original[at] ^ data.draw(st.integers(1, 255))])
        changed += original[at + 1 :]
    elif kind == "cut":
        changed = original[: data.draw(st.integers(0, len(original) - 1))]
    else:
        document = json.loads(original)
        paths = _leaf_paths(document)
        where = data.draw(st.sampled_from(paths))
        value = data.draw(json_values)
        changed = json.dumps(_damage(document, f"{where}={json.dumps(value)}")).encode()
    damaged = tmp_path_factory.mktemp("damaged") / "keys.json"
    damaged.write_bytes(changed)
    try:
        opened = open_key_file(damaged, PASSPHRASE)
    except StoreError:
        return
    assert opened.keys == ring.keys and opened.current in opened.keys


def _leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return [prefix]
    return [p for k, v in items for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))]


# the cipher ---------------------------------------------------------------------------

rows = st.tuples(st.uuids(), st.integers(1, 2**63 - 1), st.text(min_size=1, max_size=80))


@pytest.fixture(scope="module")
def cipher() -> EventCipher:
    return EventCipher(new_keyring())


@given(
    st.binary(max_size=4096),
    rows,
    st.integers(0, 255),
    st.integers(1, 2**16 - 1),
)
def test_seal_then_open_gives_back_the_plaintext_flags_and_class_version(
    cipher: EventCipher,
    plaintext: bytes,
    row: tuple[uuid.UUID, int, str],
    flags: int,
    class_version: int,
) -> None:
    blob = cipher.seal(plaintext, *row, flags, class_version)
    assert cipher.open(blob, *row) == (flags, class_version, plaintext)
    assert len(blob) == HEADER.size + 12 + len(plaintext) + 16
    if len(plaintext) >= 16:
        assert plaintext not in blob


@given(st.binary(max_size=512), rows, st.data())
def test_a_flipped_bit_anywhere_is_tampering(
    cipher: EventCipher, plaintext: bytes, row: tuple[uuid.UUID, int, str], data: st.DataObject
) -> None:
    blob = bytearray(cipher.seal(plaintext, *row))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << bit % 8
    with pytest.raises(TamperedData):
        cipher.open(bytes(blob), *row)


@given(st.binary(max_size=512), rows, rows, st.data())
def test_a_ciphertext_under_another_row_is_tampering(
    cipher: EventCipher,
    plaintext: bytes,
    row: tuple[uuid.UUID, int, str],
    other: tuple[uuid.UUID, int, str],
    data: st.DataObject,
) -> None:
    """Moved to another stream, version or event type: any one of them differing is enough."""
    blob = cipher.seal(plaintext, *row)
    which = data.draw(st.sets(st.integers(0, 2), min_size=1))
    moved = tuple(other[i] if i in which else row[i] for i in range(3))
    if moved != row:
        with pytest.raises(TamperedData, match="tampered or moved"):
            cipher.open(blob, *moved)  # type: ignore[arg-type]


@given(st.binary(max_size=256), rows, st.data())
def test_a_cut_ciphertext_is_tampering(
    cipher: EventCipher, plaintext: bytes, row: tuple[uuid.UUID, int, str], data: st.DataObject
) -> None:
    blob = cipher.seal(plaintext, *row)
    with pytest.raises(TamperedData):
        cipher.open(blob[: data.draw(st.integers(0, len(blob) - 1))], *row)


def test_another_keyring_cannot_open_a_ciphertext(cipher: EventCipher) -> None:
    row = (uuid.uuid4(), 1, "topic")
    blob = cipher.seal(b"secret", *row)
    with pytest.raises(TamperedData):
        EventCipher(new_keyring()).open(blob, *row)
    unknown_key = Keyring(uuid.uuid4(), {2: os.urandom(32)}, 2)
    with pytest.raises(TamperedData, match="key 1"):
        EventCipher(unknown_key).open(blob, *row)


# the mapper ---------------------------------------------------------------------------


class Known:
    """The event classes the mappers of these tests know: the mail application's, and
    ``Note`` (below)."""

    mail = registry_of(MailApplication)

    def event_class(self, topic: str) -> type[DomainEvent]:
        return Note if topic == topic_of(Note) else self.mail.event_class(topic)

    def stored_topics(self, cls: type[DomainEvent]) -> list[str]:
        return [topic_of(Note)] if cls is Note else self.mail.stored_topics(cls)

    def all_topics(self) -> list[str]:
        return [topic_of(Note), *self.mail.all_topics()]


def sealing_mapper() -> PydanticMapper:
    return PydanticMapper(StoredTopics(Known(), os.urandom(32)), EventCipher(new_keyring()))


@pytest.fixture(scope="module", params=["encrypted", "plain"])
def mapper(request: pytest.FixtureRequest) -> PydanticMapper:
    if request.param == "encrypted":
        return sealing_mapper()
    return PydanticMapper(StoredTopics(Known(), None))


def test_every_event_module_is_covered() -> None:
    modules = {cls.__module__ for cls in event_classes()}
    assert {"eventpile.mail.message", "eventpile.mail.tag", "eventpile.domain.operation"} <= modules


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_event_type_round_trips_through_the_mapper(
    mapper: PydanticMapper, cls: type[DomainEvent], data: st.DataObject
) -> None:
    event = data.draw(model_strategy(cls))
    stored = mapper.to_stored_event(event)
    assert (stored.originator_id, stored.originator_version, stored.topic) == (
        event.originator_id,
        event.originator_version,
        mapper.topics.stored(cls),
    )
    back = mapper.to_domain_event(stored)
    assert type(back) is cls
    assert back == event
    assert back.model_dump(mode="json") == event.model_dump(mode="json")


def _indexed(text: str) -> MessageIndexed:
    return MessageIndexed(
        originator_id=uuid.uuid4(),
        originator_version=1,
        **MessageContent(header_id="<x@y>", text=text, size=len(text)).model_dump(),
    )


def _flags(mapper: PydanticMapper, stored: StoredEvent) -> tuple[int, bytes]:
    """The envelope flags and the payload as stored (after compression)."""
    if mapper.event_cipher is None:
        state = stored.state
        return (state[1], state[4:]) if state[:1] == b"\xff" else (0, state)
    assert isinstance(stored.originator_id, uuid.UUID)
    flags, _, payload = mapper.event_cipher.open(
        stored.state, stored.originator_id, stored.originator_version, stored.topic
    )
    return flags, payload


def test_only_big_payloads_are_compressed(mapper: PydanticMapper) -> None:
    small, big = _indexed("a few words"), _indexed("the same words " * (COMPRESS_OVER // 7))
    small_flags, small_payload = _flags(mapper, mapper.to_stored_event(small))
    assert small_flags & COMPRESSED == 0
    assert json.loads(small_payload)["text"] == "a few words"
    big_flags, big_payload = _flags(mapper, mapper.to_stored_event(big))
    assert big_flags & COMPRESSED
    plain = big.model_dump_json().encode()
    assert len(plain) > COMPRESS_OVER and len(big_payload) < len(plain) // 10
    assert json.loads(zlib.decompress(big_payload))["text"] == big.text
    assert mapper.to_domain_event(mapper.to_stored_event(big)) == big


def test_an_encrypted_stored_event_shows_no_private_value() -> None:
    mapper = sealing_mapper()
    event = _indexed("a private text of a private message")
    stored = mapper.to_stored_event(event)
    assert b"private" not in stored.state and b"<x@y>" not in stored.state


def test_a_stored_topic_names_no_type_without_the_keys() -> None:
    """Sealed rows keep their type's topic encrypted, the same for each event of a type
    (and key); a forgetting keeps its own (the store finds them); rows of before are still
    read, and a topic that these keys did not write is refused."""
    mapper, other = sealing_mapper(), sealing_mapper()
    event = _indexed("x")
    stored = mapper.to_stored_event(event)
    assert ":" not in stored.topic and "Message" not in stored.topic
    assert stored.topic != other.to_stored_event(event).topic
    assert mapper.to_stored_event(_indexed("y")).topic == stored.topic
    assert mapper.to_domain_event(stored) == event
    topics = mapper.topics
    assert topics.reveal(stored.topic) == topic_of(MessageIndexed)
    assert {topic_of(MessageIndexed), stored.topic} <= set(topics.matching([MessageIndexed]))
    assert topics.knows(stored.topic) and topics.knows(topic_of(MessageIndexed))
    assert topics.stored(PersonForgotten) == FORGETTING
    for foreign in (stored.topic, stored.topic[:-2] + "AA", "not base64!"):
        with pytest.raises(TamperedData, match="not one this home's keys wrote"):
            other.topics.reveal(foreign)


# upcasting ----------------------------------------------------------------------------


class Note(DomainEvent):
    """A test event at version 3: v1 had ``text``, v2 renamed it ``title``, v3 added ``words``."""

    class_version = 3
    title: str
    words: int

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["title"] = state.pop("text")

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state["words"] = len(state["title"].split())


class NoteV1(DomainEvent):
    """What ``Note`` was at version 1 (stored under ``Note``'s topic)."""

    text: str


class NoteV2(DomainEvent):
    title: str


def _stored_as(old: DomainEvent, class_version: int, mapper: PydanticMapper) -> StoredEvent:
    """``old`` stored as the mapper stored it when ``Note`` was at ``class_version``."""
    topic = topic_of(Note)
    payload = old.model_dump_json(exclude={"originator_id", "originator_version"}).encode()
    if mapper.event_cipher is not None:
        payload = mapper.event_cipher.seal(
            payload, old.originator_id, old.originator_version, topic, 0, class_version
        )
    elif class_version > 1:
        payload = bytes([0xFF, 0]) + class_version.to_bytes(2, "big") + payload
    return StoredEvent(
        originator_id=old.originator_id,
        originator_version=old.originator_version,
        topic=topic,
        state=payload,
    )


@given(st.text(max_size=60), st.uuids(), st.integers(1, 1000))
def test_old_versions_are_upcast_when_loaded(
    mapper: PydanticMapper, text: str, stream: uuid.UUID, version: int
) -> None:
    v1 = NoteV1(originator_id=stream, originator_version=version, text=text)
    loaded = mapper.to_domain_event(_stored_as(v1, 1, mapper))
    assert isinstance(loaded, Note)
    assert (loaded.title, loaded.words) == (text, len(text.split()))
    assert (loaded.event_id, loaded.timestamp, loaded.originator_id) == (
        v1.event_id,
        v1.timestamp,
        stream,
    )
    v2 = NoteV2(originator_id=stream, originator_version=version, title=text)
    assert mapper.to_domain_event(_stored_as(v2, 2, mapper)) == loaded.model_copy(
        update={"event_id": v2.event_id, "timestamp": v2.timestamp}
    )
    current = mapper.to_stored_event(loaded)
    assert mapper.to_domain_event(current) == loaded


def test_a_stored_topic_that_is_not_an_event_class_is_refused(mapper: PydanticMapper) -> None:
    """Sealed, the row fails to authenticate; plain, the topic names no event class the
    application knows (nothing is imported by its name)."""
    stored = mapper.to_stored_event(_indexed("x"))
    refused = TamperedData if mapper.event_cipher is not None else UnknownEvent
    for topic in ("eventpile.store.home:Home", "eventpile.mail.message:Message"):
        moved = StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=topic,
            state=stored.state,
        )
        with pytest.raises(refused):
            mapper.to_domain_event(moved)


def test_a_stored_topic_is_trusted_only_once_its_row_is_authentic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic changed to name some module does not get that module imported (its
    ciphertext fails first); an authentic event of a class unknown here says so."""
    mapper = sealing_mapper()
    (tmp_path / "planted_topic_module.py").write_text("class X:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    stored = mapper.to_stored_event(_indexed("x"))
    renamed = dataclasses.replace(stored, topic="planted_topic_module:X")
    with pytest.raises(TamperedData):
        mapper.to_domain_event(renamed)
    assert "planted_topic_module" not in sys.modules
    assert mapper.event_cipher is not None
    unknown = dataclasses.replace(
        stored,
        topic="no_such_module_here:Event",
        state=mapper.event_cipher.seal(
            b"{}", stored.originator_id, stored.originator_version, "no_such_module_here:Event"
        ),
    )
    with pytest.raises(UnknownEvent, match="unknown here"):
        mapper.to_domain_event(unknown)


def test_a_rotation_under_way_keeps_the_purpose_keys_a_newer_version_keeps(
    tmp_path: Path, quick_kdf: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rekey begun by a version that kept fewer purpose keys, and finished by this one:
    the ones this version keeps (the log's seals' key, the topics') are the same before
    and after; the old keys are not retired before they are kept."""
    from eventpile.store import keys

    path = tmp_path / "keys.json"
    create_key_file(path, PASSPHRASE)
    kept = ("log-seal", "event-type")
    before = [open_key_file(path, PASSPHRASE).purpose_key(p) for p in kept]
    monkeypatch.setattr(keys, "KEPT", ("message-id", "person"))  # the older version's
    begun = keys.rotate_keys(path, PASSPHRASE)
    monkeypatch.undo()
    with pytest.raises(StoreError, match="begun by an older version"):
        keys.retire_keys(path, begun)  # (a worker finishing it: the keys stay)
    assert [open_key_file(path, PASSPHRASE).purpose_key(p) for p in kept] == before
    ring = keys.rotate_keys(path, PASSPHRASE)  # this version goes on with the rotation
    keys.retire_keys(path, ring)
    after = open_key_file(path, PASSPHRASE)
    assert list(after.keys) == [ring.current]
    assert [after.purpose_key(p) for p in kept] == before
