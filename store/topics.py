"""The topic column of the log: which type each event is, for the keys' holders alone.

The library stores each event's topic (``module:Class``) in plaintext beside its
ciphertext. Here the column holds it encrypted deterministically (AES-SIV), so whoever
reads the store without the keys (a database server, a backup) learns which events are
of one type, not which type, while the rows of a type can still be selected.
:class:`PlainTopics` remembers where a log written before ends, so that reads past it
name no type in plaintext to the database either.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from functools import cache, cached_property
from typing import Any, ClassVar, Final, Protocol

from eventsourcing.utils import get_topic

from eventpile.domain.events import DomainEvent
from eventpile.store.errors import TamperedData
from eventpile.store.people import FORGETTING


@cache
def topic_of(cls: type[DomainEvent]) -> str:
    return get_topic(cls)


TOPIC_PURPOSE: Final = "event-type"
"""The purpose key of the stored topics (one that rotations keep: see
:data:`~eventpile.store.keys.KEPT`)."""


class EventTypes(Protocol):
    """An application's event classes by topic (``module:Class``): its registry."""

    def event_class(self, topic: str) -> type[DomainEvent]:
        """The class of a topic (raises :class:`UnknownEvent`)."""
        ...

    def stored_topics(self, cls: type[DomainEvent]) -> list[str]:
        """The topics the events of ``cls`` were ever written under (its module's old names)."""
        ...

    def all_topics(self) -> Iterable[str]:
        """The :meth:`stored_topics` of every event class."""
        ...


class StoredTopics:
    """What a row's topic column holds: its event's topic (``module:Class``) encrypted
    deterministically (AES-SIV, in base64), so that it names no type to whoever reads the
    store without the keys, while the rows of one type can still be selected, and any
    application with the keys reads the name of a type it does not know. Without a key,
    the topic itself. A log written before keeps its topics, and is read as it is.

    A person's forgetting keeps its topic: the store finds forgettings itself, before it
    decrypts anything (so the store learns when a person was forgotten, not who)."""

    def __init__(self, types: EventTypes, key: bytes | None):
        from cryptography.hazmat.primitives.ciphers.aead import AESSIV

        self.types = types
        self._siv = None if key is None else AESSIV(key)
        self._revealed: dict[str, str] = {}
        self._hidden: dict[str, str] = {}

    def hidden(self, topic: str) -> str:
        """The topic column of a topic (one hidden already, or a forgetting's, as it is)."""
        if self._siv is None or topic == FORGETTING or ":" not in topic:
            return topic
        found = self._hidden.get(topic)
        if found is None:
            sealed = self._siv.encrypt(topic.encode(), None)
            found = self._hidden[topic] = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
        return found

    def reveal(self, stored: str) -> str:
        """The topic a row's topic column holds (:class:`TamperedData` if it was changed)."""
        found = self._revealed.get(stored)
        if found is not None:
            return found
        if ":" in stored or self._siv is None:  # written before, or not hidden
            return stored
        from cryptography.exceptions import InvalidTag

        try:
            sealed = base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4))
            found = self._siv.decrypt(sealed, None).decode()
        except (ValueError, InvalidTag):
            raise TamperedData(
                f"a stored event's type {stored[:24]!r} is not one this home's keys wrote"
            ) from None
        self._revealed[stored] = found
        return found

    def stored(self, cls: type[DomainEvent]) -> str:
        """The topic column of the events of ``cls`` written now."""
        return self.hidden(topic_of(cls))

    def knows(self, stored: str) -> bool:
        return self.reveal(stored) in self._known

    def matching(self, classes: Iterable[type[DomainEvent]], *, plain: bool = True) -> list[str]:
        """Every topic column the events of ``classes`` may have: hidden, and unless not
        ``plain`` (no row of a log written before is wanted), in plaintext."""
        found = [t for cls in classes for t in self.types.stored_topics(cls)]
        return list(dict.fromkeys([*(found if plain else ()), *map(self.hidden, found)]))

    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.types.all_topics())


class PlainTopics:
    """What a recorder keeps of the rows with plaintext topics (written by a version
    before topics were hidden): the last position that has one, found once, when the
    log's tables are made. Later rows are all hidden (a sync hides those it receives
    from an older version), so a read past that position selects by hidden topics only."""

    PLAIN_TABLE: ClassVar[str] = "eventpile_plain_topics"
    _mark: ClassVar[str]
    _position: ClassVar[str]
    _plain_upto: int | None = None

    def _events_table(self) -> str:
        raise NotImplementedError

    def _plain_table(self) -> str:
        return self.PLAIN_TABLE

    def _mark_plain_topics(self, cursor: Any) -> None:
        """Once (the caller holds the log's write lock): where plaintext topics end."""
        table = self._plain_table()
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} (upto BIGINT NOT NULL)")
        cursor.execute(f"SELECT upto FROM {table}")
        if cursor.fetchone() is None:
            cursor.execute(
                f"SELECT coalesce(max({self._position}), 0) FROM {self._events_table()} "
                f"WHERE topic LIKE {self._mark} AND topic <> {self._mark}",
                ("%:%", FORGETTING),
            )
            upto = int(cursor.fetchone()[0])
            cursor.execute(f"INSERT INTO {table} VALUES ({self._mark})", (upto,))

    def plain_topics_upto(self) -> int:
        """The last position with a plaintext topic (0: none)."""
        if self._plain_upto is None:
            rows = self._select_plain_upto()
            self._plain_upto = int(rows[0][0]) if rows else 0
        return self._plain_upto

    def _select_plain_upto(self) -> list[Any]:
        raise NotImplementedError
