"""Threads: as messages come and go, each message's thread is the set of present
messages linked to it by Message-IDs (their own or referred to), named by its least
message id, caught up a page at a time or rebuilt from scratch alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventpile.domain.events import DomainEvent
from eventpile.mail.index import MessageIndex
from eventpile.mail.message import MessageContent, MessageIndexed, MessageRemoved
from eventpile.projections.base import View
from eventpile.store.views import SQLCipherViewStore
from tests.test_fast_paths import Log

LONG = settings.default.max_examples > 100  # the ``long`` profile
IDS = [uuid.UUID(int=n + 1) for n in range(6)]
LINKS = [f"m{n}@x" for n in range(6)] + ["lost@x"]


def expected_threads(links: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Each message's thread as a plain reading of ``links`` (each message's Message-IDs:
    its own and those it refers to) sees it: the least of the messages linked to it."""
    parent = {message: message for message in links}

    def root(node: str) -> str:
        while parent[node] != node:
            node = parent[node]
        return node

    holder: dict[str, str] = {}
    for message, found in links.items():
        for link in found:
            first = holder.setdefault(link, message)
            a, b = root(message), root(first)
            parent[max(a, b)] = min(a, b)
    return {m: root(m) for m in parent}


def threads_in(view: View) -> dict[str, str]:
    return dict(view.db.execute("SELECT message, thread FROM message_threads").fetchall())


@settings(max_examples=1000 if LONG else 60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),
            st.booleans(),
            st.lists(st.sampled_from(LINKS), max_size=3),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_threads_join_and_fall_apart_as_messages_come_and_go(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[int, bool, list[str], bool]],
) -> None:
    versions = dict.fromkeys(IDS, 0)
    present: dict[uuid.UUID, tuple[str, ...]] = {}
    events: list[DomainEvent] = []
    pages: list[int] = []
    for n, remove, references, page_ends in steps:
        message = IDS[n]
        versions[message] += 1
        header_id = f"m{n}@x"
        content = MessageContent(header_id=header_id, references=tuple(references)).model_dump()
        if remove and message in present:
            events.append(
                MessageRemoved(
                    originator_id=message, originator_version=versions[message], **content
                )
            )
            del present[message]
        else:
            events.append(
                MessageIndexed(
                    originator_id=message, originator_version=versions[message], **content
                )
            )
            present[message] = (header_id, *references)
        if page_ends:
            pages.append(len(events))
    where: Path = tmp_path_factory.mktemp("views")
    caught_up = View(MessageIndex(), SQLCipherViewStore(where / "a", bytes(32)))
    rebuilt = View(MessageIndex(), SQLCipherViewStore(where / "b", bytes(32)))
    try:
        for end in [*pages, len(events)]:
            caught_up.catch_up(Log(events[:end]))
        rebuilt.catch_up(Log(events))
        expected = expected_threads({m.hex: links for m, links in present.items()})
        assert threads_in(caught_up) == expected == threads_in(rebuilt)
    finally:
        caught_up.close()
        rebuilt.close()
