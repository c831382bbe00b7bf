"""The shortcuts taken for speed give the same answers as the plain paths: batched
aggregate loads, parsing a mailbox in a second process, imports that use both, and
the garbage collector pause of bulk folds."""

from __future__ import annotations

import gc
import multiprocessing
import uuid
from pathlib import Path

import pytest

from commands import mail
from commands.app import Eventpile
from commands.mail import ImportMailbox
from commands.mailparse import MailboxError, read_mailbox, read_mailbox_aside
from commands.synthetic import write_mbox
from domain.events import DomainEvent, operation_scope, uuid7
from domain.message import Message, MessageContent, MessageTagged
from projections.base import gc_paused
from store.sqlite import STREAMS_PER_QUERY

MALFORMED = b"From a@b Mon Jan  1 00:00:00 2024\njust text, no header\n\n"


@pytest.fixture(scope="module")
def mbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_mbox(tmp_path_factory.mktemp("mail") / "box.mbox", 60, seed=3)
    with path.open("ab") as f:
        f.write(MALFORMED)
    return path


def test_load_many_equals_one_load_each(app: Eventpile) -> None:
    ids = [uuid.uuid4() for _ in range(STREAMS_PER_QUERY + 7)]
    tag_id = uuid.uuid4()
    with operation_scope(uuid7(), None):
        events: list[DomainEvent] = [
            Message.index(i, MessageContent(header_id=f"<{i}>")) for i in ids[::2]
        ]
        events += [
            MessageTagged(originator_id=i, originator_version=2, tag_id=tag_id) for i in ids[::4]
        ]
    app.append(events)
    asked = [*ids, uuid.uuid4()]  # and one that was never written
    loaded = app.load_many(Message, asked)
    assert loaded == {i: app.load(Message, i) for i in asked}
    assert sum(state is not None for state in loaded.values()) == len(ids[::2])
    assert all(loaded[i].has_tag(tag_id) for i in ids[::4])  # type: ignore[union-attr]


def test_reading_aside_yields_what_reading_here_does(mbox: Path) -> None:
    here = list(read_mailbox(mbox))
    aside = list(read_mailbox_aside(mbox, batch=7))
    assert [str(m) for m in aside] == [str(m) for m in here]
    assert [m for m in aside if not isinstance(m, Exception)] == [
        m for m in here if not isinstance(m, Exception)
    ]
    assert len(here) == 61 and isinstance(aside[-1], ValueError)
    assert not multiprocessing.active_children()


def test_reading_aside_raises_the_readers_error_and_stops_early(mbox: Path, tmp_path: Path) -> None:
    not_mail = tmp_path / "notes.txt"
    not_mail.write_text("no mail here\n")
    with pytest.raises(MailboxError, match="not an mbox"):
        list(read_mailbox_aside(not_mail))
    items = read_mailbox_aside(mbox, batch=5)
    next(items)
    items.close()
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("aside_from", [1, 10**9], ids=["aside", "here"])
def test_import_parsing_aside_or_here(
    app: Eventpile, mbox: Path, monkeypatch: pytest.MonkeyPatch, aside_from: int
) -> None:
    monkeypatch.setattr(mail, "PARSE_ASIDE_FROM", aside_from)
    monkeypatch.setattr(mail, "FLUSH_EVERY", 25)  # several batches of preloaded states
    first = app.execute(ImportMailbox(path=mbox)).result
    again = app.execute(ImportMailbox(path=mbox)).result
    assert (first["indexed"], first["skipped"], first["failed"]) == (60, 0, 1)
    assert (again["indexed"], again["skipped"], again["failed"]) == (0, 60, 1)


def test_gc_paused_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyError), gc_paused():
        assert not gc.isenabled()
        raise KeyError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
