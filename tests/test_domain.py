"""The domain: aggregates as deciders (given events, when a decision, then events or a
refusal), their folds, OR-set tag semantics across installations, the event envelope,
public and private data, and keyed message ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from eventpile.domain.aggregate import Aggregate, DomainError, first_event, fold
from eventpile.domain.events import (
    ENVELOPE,
    DomainEvent,
    operation_scope,
    private_fields_of,
    redact,
    uuid7,
)
from eventpile.domain.operation import (
    Operation,
    OperationCompleted,
    OperationFailed,
    OperationProgressed,
    OperationRequested,
    OperationStarted,
    Status,
)
from eventpile.mail.message import (
    TRASH_TAG_ID,
    Message,
    MessageContent,
    MessageIndexed,
    MessageRemoved,
    MessageTagged,
    MessageUntagged,
    message_uuid,
)
from eventpile.mail.tag import Tag, TagCreated, TagRemoved, TagRenamed
from tests.strategies import aware_datetimes, event_classes, model_strategy

A = TypeVar("A", bound=Aggregate)
Decision = Callable[[Any], DomainEvent | Sequence[DomainEvent]]

# given / when / then -------------------------------------------------------------


def when(cls: type[A], history: Iterable[DomainEvent], decide: Decision) -> list[DomainEvent]:
    """The events ``decide`` returns for the state folded from ``history``.

    The decided events must follow the history (the fold accepts them): a decision
    never returns events that cannot be applied.
    """
    state = fold(cls, history)
    decided = decide(state)
    new = [decided] if isinstance(decided, DomainEvent) else list(decided)
    fold(cls, new, state)
    return new


def facts(events: Iterable[DomainEvent]) -> list[tuple[str, int, dict[str, Any]]]:
    """Events without the parts chosen at random (ids, time): what a test can expect."""
    return [
        (type(e).__name__, e.originator_version, e.model_dump(exclude=set(ENVELOPE)))
        for e in events
    ]


def refused(cls: type[A], history: Iterable[DomainEvent], decide: Decision) -> str:
    with pytest.raises(DomainError) as caught:
        when(cls, history, decide)
    return str(caught.value)


MESSAGE = uuid.UUID("01234567-89ab-8def-8123-456789abcdef")
TAG_A, TAG_B, TAG_C = (uuid.UUID(int=n) for n in (0xA, 0xB, 0xC))
CONTENT = MessageContent(
    header_id="<1@example.org>",
    subject="Hello",
    sender="Alice <alice@example.org>",
    sent=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    references=("<0@example.org>",),
    text="some words",
    size=1234,
)
indexed = Message.index(MESSAGE, CONTENT)


def tagged(version: int, tag: uuid.UUID) -> MessageTagged:
    return MessageTagged(originator_id=MESSAGE, originator_version=version, tag_id=tag)


# Message ----------------------------------------------------------------------------


def test_index_starts_a_message_stream_with_its_content() -> None:
    assert facts([indexed]) == [("MessageIndexed", 1, CONTENT.model_dump())]
    message = fold(Message, [indexed])
    assert message is not None
    assert (message.id, message.version, message.indexed) == (MESSAGE, 1, True)
    assert message.content() == CONTENT
    assert message.tags == {}


def test_remove_carries_the_content_so_it_can_be_undone() -> None:
    removed = when(Message, [indexed], lambda m: m.remove())
    assert facts(removed) == [("MessageRemoved", 2, CONTENT.model_dump())]
    state = fold(Message, [indexed, *removed])
    assert state is not None and not state.indexed


def test_removing_a_removed_message_is_refused() -> None:
    removed = MessageRemoved(originator_id=MESSAGE, originator_version=2, **CONTENT.model_dump())
    assert "not in the index" in refused(Message, [indexed, removed], lambda m: m.remove())


def test_reindex_brings_a_removed_message_back_and_keeps_its_tags() -> None:
    removed = MessageRemoved(originator_id=MESSAGE, originator_version=3, **CONTENT.model_dump())
    history = [indexed, tagged(2, TAG_A), removed]
    back = when(Message, history, lambda m: m.reindex(CONTENT))
    assert facts(back) == [("MessageIndexed", 4, CONTENT.model_dump())]
    state = fold(Message, [*history, *back])
    assert state is not None and state.indexed and state.has_tag(TAG_A)


def test_reindex_of_the_same_content_changes_nothing_and_new_content_replaces() -> None:
    assert when(Message, [indexed], lambda m: m.reindex(CONTENT)) == []
    changed = CONTENT.model_copy(update={"subject": "Hello again"})
    assert facts(when(Message, [indexed], lambda m: m.reindex(changed))) == [
        ("MessageRemoved", 2, CONTENT.model_dump()),
        ("MessageIndexed", 3, changed.model_dump()),
    ]


def test_tag_adds_a_dot_and_tagging_again_changes_nothing() -> None:
    added = when(Message, [indexed], lambda m: m.tag(TAG_A))
    assert facts(added) == [("MessageTagged", 2, {"tag_id": TAG_A})]
    assert when(Message, [indexed, *added], lambda m: m.tag(TAG_A)) == []
    state = fold(Message, [indexed, *added])
    assert state is not None and state.tags == {TAG_A: frozenset({added[0].event_id})}


def test_untag_removes_every_observed_dot_and_untagging_again_changes_nothing() -> None:
    history = [indexed, tagged(2, TAG_A), tagged(3, TAG_B)]
    removed = when(Message, history, lambda m: m.untag(TAG_A))
    assert facts(removed) == [
        ("MessageUntagged", 4, {"tag_id": TAG_A, "dots": (history[1].event_id,)})
    ]
    state = fold(Message, [*history, *removed])
    assert state is not None and not state.has_tag(TAG_A) and state.has_tag(TAG_B)
    assert when(Message, [*history, *removed], lambda m: m.untag(TAG_A)) == []


def test_trash_is_a_tag_like_any_other() -> None:
    trashed = when(Message, [indexed], lambda m: m.tag(TRASH_TAG_ID))
    restored = when(Message, [indexed, *trashed], lambda m: m.untag(TRASH_TAG_ID))
    state = fold(Message, [indexed, *trashed, *restored])
    assert state is not None and not state.has_tag(TRASH_TAG_ID)


def test_a_stream_cannot_start_with_anything_but_its_first_event() -> None:
    with pytest.raises(DomainError, match="cannot start"):
        fold(Message, [tagged(1, TAG_A)])
    with pytest.raises(DomainError, match="cannot start"):
        fold(Tag, [indexed])


def test_an_event_out_of_sequence_is_refused() -> None:
    with pytest.raises(DomainError, match="does not follow"):
        fold(Message, [indexed, tagged(3, TAG_A)])
    with pytest.raises(DomainError, match="does not follow"):
        fold(Message, [indexed, tagged(1, TAG_A)])


def test_an_empty_stream_folds_to_nothing() -> None:
    assert fold(Message, []) is None


tag_ops = st.lists(st.tuples(st.booleans(), st.sampled_from([TAG_A, TAG_B, TAG_C])), max_size=12)


@given(tag_ops)
def test_on_one_installation_tags_behave_as_a_set(ops: list[tuple[bool, uuid.UUID]]) -> None:
    """Folding the decided events gives the set that adds and removes describe."""
    state = fold(Message, [indexed])
    assert state is not None
    history: list[DomainEvent] = [indexed]
    expected: set[uuid.UUID] = set()
    for add, tag in ops:
        new = state.tag(tag) if add else state.untag(tag)
        assert bool(new) == ((tag not in expected) if add else (tag in expected))
        (expected.add if add else expected.discard)(tag)
        for event in new:
            state = state.apply(event)
        history.extend(new)
    assert set(state.tags) == expected
    assert fold(Message, history) == state


# OR-set: two installations ------------------------------------------------------------

ORIGIN_A, ORIGIN_B = uuid.UUID(int=1), uuid.UUID(int=2)


def _local(base: Message, origin: uuid.UUID, ops: list[tuple[bool, uuid.UUID]]) -> list[Any]:
    """The events one installation decides on its own copy of the message."""
    state, out = base, []
    with operation_scope(uuid7(), origin):
        for add, tag in ops:
            for event in state.tag(tag) if add else state.untag(tag):
                state = state.apply(event)
                out.append(event)
    return out


def _merge(base: Message, events: Iterable[DomainEvent]) -> dict[uuid.UUID, frozenset[uuid.UUID]]:
    """Apply events from several installations (their stream versions clash: evolve only)."""
    state = base
    for event in events:
        state = state.evolve(event)
    return state.tags


@given(
    shared=tag_ops,
    ops_a=tag_ops,
    ops_b=tag_ops,
    order=st.lists(st.booleans(), min_size=24, max_size=24),
    other=st.lists(st.booleans(), min_size=24, max_size=24),
)
def test_concurrent_tag_changes_converge_in_any_order_and_adds_win(
    shared: list[tuple[bool, uuid.UUID]],
    ops_a: list[tuple[bool, uuid.UUID]],
    ops_b: list[tuple[bool, uuid.UUID]],
    order: list[bool],
    other: list[bool],
) -> None:
    """Two installations change the tags of one message from a common past; their
    events meet in any interleaving (each keeps its own order) with the same result."""
    start = fold(Message, [indexed])
    assert start is not None
    common = start
    for event in _local(start, ORIGIN_A, shared):
        common = common.apply(event)
    from_a, from_b = _local(common, ORIGIN_A, ops_a), _local(common, ORIGIN_B, ops_b)
    assert {e.origin for e in from_a} <= {ORIGIN_A} and {e.origin for e in from_b} <= {ORIGIN_B}

    def interleave(choices: list[bool]) -> list[DomainEvent]:
        a, b, out = list(from_a), list(from_b), []
        for pick_a in choices:
            source = a if (pick_a and a) or not b else b
            if source:
                out.append(source.pop(0))
        return [*out, *a, *b]

    merged = _merge(common, interleave(order))
    assert merged == _merge(common, interleave(other)) == _merge(common, [*from_b, *from_a])
    # the merge is the set of all dots added minus all dots observed-removed
    added = {e.event_id for e in (*from_a, *from_b) if isinstance(e, MessageTagged)}
    gone = {d for e in (*from_a, *from_b) if isinstance(e, MessageUntagged) for d in e.dots}
    dots = {d for ds in common.tags.values() for d in ds} | added
    assert {d for ds in merged.values() for d in ds} == dots - gone
    # add wins: a dot an installation added and still holds survives the other's removals
    for mine in (from_a, from_b):
        kept = _merge(common, mine)
        for event in mine:
            if isinstance(event, MessageTagged) and event.event_id in kept.get(event.tag_id, ()):
                assert event.event_id in merged[event.tag_id]


# Tag ----------------------------------------------------------------------------------

created = Tag.create("inbox")


def test_create_starts_a_tag_with_a_new_time_ordered_id() -> None:
    again = Tag.create("inbox")
    assert created.originator_id != again.originator_id
    assert created.originator_id.version == 7
    assert facts([created]) == [("TagCreated", 1, {"name": "inbox"})]


def test_rename_records_the_old_and_new_name() -> None:
    renamed = when(Tag, [created], lambda t: t.rename("todo"))
    assert facts(renamed) == [("TagRenamed", 2, {"old_name": "inbox", "new_name": "todo"})]
    state = fold(Tag, [created, *renamed])
    assert state is not None and state.name == "todo"
    assert when(Tag, [created, *renamed], lambda t: t.rename("todo")) == []


def test_remove_and_what_a_removed_tag_refuses() -> None:
    removed = when(Tag, [created], lambda t: t.remove())
    assert facts(removed) == [("TagRemoved", 2, {"name": "inbox"})]
    gone = [created, *removed]
    assert "was removed" in refused(Tag, gone, lambda t: t.rename("other"))
    assert "already removed" in refused(Tag, gone, lambda t: t.remove())


@pytest.mark.parametrize("name", ["", "two words", "x" * 65, "tab\tbed", "new\nline"])
def test_a_bad_tag_name_is_a_validation_error(name: str) -> None:
    with pytest.raises(ValidationError, match="not a tag name"):
        Tag.create(name)
    with pytest.raises(ValidationError):
        fold(Tag, [created]).rename(name)  # type: ignore[union-attr]


def test_a_tag_name_in_decomposed_unicode_is_the_same_name_composed() -> None:
    """Typed as "cafe" and a combining accent (NFD), a name is "café" (NFC): one name,
    whichever a keyboard or file system gives."""
    decomposed, composed = "cafe\u0301", "caf\u00e9"
    assert Tag.create(decomposed).name == composed
    state = fold(Tag, [created])
    assert state is not None
    [renamed] = state.rename(decomposed)
    assert isinstance(renamed, TagRenamed) and renamed.new_name == composed


@given(st.lists(st.one_of(st.just(None), st.from_regex(r"\A[a-z]{1,8}\Z")), max_size=8))
def test_tag_state_is_the_fold_of_its_decisions(steps: list[str | None]) -> None:
    """Rename to each name (None: remove); the state is the fold of what was decided."""
    state = fold(Tag, [created])
    assert state is not None
    history: list[DomainEvent] = [created]
    for step in steps:
        try:
            new = state.remove() if step is None else state.rename(step)
        except DomainError:
            assert state.removed
            continue
        for event in new:
            state = state.apply(event)
        history.extend(new)
        assert state.removed == (step is None)
        assert step is None or state.name == step
    assert fold(Tag, history) == state


# Operation --------------------------------------------------------------------------

OP = uuid.UUID("01900000-0000-7000-8000-000000000001")
requested = Operation.request(OP, "TagMessages", {"action": "add"}, {"tag": "x"}, "Tag add")


def test_a_requested_operation_is_pending_and_one_with_run_after_is_scheduled() -> None:
    state = fold(Operation, [requested])
    assert state is not None
    assert (state.status, state.command, state.args, state.private_args) == (
        Status.PENDING,
        "TagMessages",
        {"action": "add"},
        {"tag": "x"},
    )
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = fold(Operation, [Operation.request(OP, "X", {}, {}, "later", run_after=later)])
    assert scheduled is not None and scheduled.status is Status.SCHEDULED


def test_an_operation_runs_reports_progress_and_completes() -> None:
    started = when(Operation, [requested], lambda o: o.begin("me"))
    assert facts(started)[0][:2] == ("OperationStarted", 2)
    assert started[0].attempt == 1  # type: ignore[attr-defined]
    progressed = when(Operation, [requested, *started], lambda o: o.report(5, 10, "half way"))
    history = [requested, *started, *progressed]
    state = fold(Operation, history)
    assert state is not None
    assert (state.status, state.progress, state.message) == (Status.RUNNING, (5, 10), "half way")
    done = when(Operation, history, lambda o: o.complete("Tagged 7", {"changed": 7}, {}, 0.5))
    finished = fold(Operation, [*history, *done])
    assert finished is not None
    assert (finished.status, finished.result, finished.message, finished.elapsed_s) == (
        Status.COMPLETE,
        {"changed": 7},
        "Tagged 7",
        0.5,
    )
    assert finished.finished_at == done[0].timestamp
    assert "already complete" in refused(Operation, [*history, *done], lambda o: o.begin())
    assert "already complete" in refused(
        Operation, [*history, *done], lambda o: o.fail(RuntimeError("x"), 1.0)
    )


def test_a_failed_operation_records_the_error_and_refuses_to_complete() -> None:
    started = when(Operation, [requested], lambda o: o.begin())
    failed = when(Operation, [requested, *started], lambda o: o.fail(KeyError("gone"), 0.25))
    assert isinstance(failed[0], OperationFailed)
    assert (failed[0].error_type, failed[0].error) == ("KeyError", "'gone'")
    history = [requested, *started, *failed]
    state = fold(Operation, history)
    assert state is not None and state.status is Status.FAILED and state.error_type == "KeyError"
    assert "already failed" in refused(Operation, history, lambda o: o.complete("x", {}, {}, 1.0))


# the envelope ---------------------------------------------------------------------


def test_timestamp_is_aware_utc_with_rfc_2822_date_and_unix_ts() -> None:
    before = datetime.now(UTC)
    event = first_event(TagCreated, uuid7(), name="x")
    assert before <= event.timestamp <= datetime.now(UTC)
    assert event.timestamp.tzinfo is UTC
    assert event.date.endswith(" GMT")
    assert parsedate_to_datetime(event.date) == event.timestamp.replace(microsecond=0)
    assert event.ts == event.timestamp.timestamp()


@given(aware_datetimes())
def test_any_aware_timestamp_is_kept_as_the_same_instant_in_utc(when_: datetime) -> None:
    event = TagCreated(originator_id=uuid7(), originator_version=1, name="x", timestamp=when_)
    assert event.timestamp == when_ and event.timestamp.utcoffset() == timedelta(0)
    assert parsedate_to_datetime(event.date) == when_.replace(microsecond=0)
    assert event.ts == when_.timestamp()


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError):
        TagCreated(
            originator_id=uuid7(), originator_version=1, name="x", timestamp=datetime(2024, 1, 1)
        )


def test_versions_start_at_one() -> None:
    with pytest.raises(ValidationError):
        TagCreated(originator_id=uuid7(), originator_version=0, name="x")


def test_events_are_immutable() -> None:
    with pytest.raises(ValidationError):
        created.name = "changed"  # type: ignore[misc]


def test_uuid7_is_version_7_unique_and_ordered_by_creation() -> None:
    ms_before = datetime.now(UTC).timestamp() * 1000 // 1
    ids = [uuid7() for _ in range(2000)]
    ms_after = datetime.now(UTC).timestamp() * 1000 // 1 + 1
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "ids made one after another sort in the order they were made"
    assert all(ms_before <= i.int >> 80 <= ms_after for i in ids)


def test_operation_scope_stamps_the_events_made_inside_it() -> None:
    op, origin, inner_op = uuid7(), uuid.uuid4(), uuid7()
    outside = first_event(TagCreated, uuid7(), name="x")
    assert (outside.operation_id, outside.origin) == (None, None)
    with operation_scope(op, origin):
        first = first_event(TagCreated, uuid7(), name="x")
        with operation_scope(inner_op, origin):
            nested = first_event(TagCreated, uuid7(), name="x")
        after = first_event(TagCreated, uuid7(), name="x")
        explicit = first_event(TagCreated, uuid7(), name="x", operation_id=inner_op)
    assert (first.operation_id, first.origin) == (op, origin)
    assert nested.operation_id == inner_op
    assert after.operation_id == op
    assert explicit.operation_id == inner_op
    assert first_event(TagCreated, uuid7(), name="x").operation_id is None


def test_operation_scope_is_left_even_when_its_body_raises() -> None:
    with pytest.raises(RuntimeError), operation_scope(uuid7(), uuid.uuid4()):
        raise RuntimeError
    assert first_event(TagCreated, uuid7(), name="x").operation_id is None


# public and private data ----------------------------------------------------------


def test_private_fields_are_declared_per_event_class() -> None:
    content = {"header_id", "subject", "sender", "to", "cc", "sent", "references"}
    kept = {"text", "attachments", "mimetypes", "location", "fingerprint"}
    assert content | kept == MessageIndexed.private_fields()
    assert MessageRemoved.private_fields() == MessageIndexed.private_fields()
    assert TagCreated.private_fields() == {"name"}
    assert TagRenamed.private_fields() == {"old_name", "new_name"}
    assert TagRemoved.private_fields() == {"name"}
    assert "private_args" in OperationRequested.private_fields()
    assert "error" in OperationFailed.private_fields()
    assert MessageTagged.private_fields() == frozenset()
    assert not any(cls.private_fields() & ENVELOPE for cls in event_classes())


def _leaves(model: BaseModel) -> tuple[list[str], list[str]]:
    """``(private, public)``: the text of every leaf value, at any depth of nested models."""
    out: tuple[list[str], list[str]] = ([], [])

    def walk(value: Any, private: bool) -> None:
        if isinstance(value, BaseModel):
            hidden = private_fields_of(type(value))
            for name in type(value).model_fields:
                out[1].append(name)  # field names are not private
                walk(getattr(value, name), private or name in hidden)
        elif isinstance(value, dict):
            for key, item in value.items():
                out[not private].append(str(key))
                walk(item, private)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item, private)
        else:
            out[not private].append(str(value))

    walk(model, False)
    return out


def _hidden(event: DomainEvent, shown: str) -> list[str]:
    """Private values (long enough to tell apart) that ``shown`` holds but no public value does."""
    private, public = _leaves(event)
    return [v for v in private if len(v) >= 6 and v in shown and not any(v in p for p in public)]


every_event_class = pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)


@every_event_class
@given(data=st.data())
def test_redacted_data_holds_no_private_value_at_any_depth(
    cls: type[DomainEvent], data: st.DataObject
) -> None:
    event = data.draw(model_strategy(cls))
    redacted = redact(event)
    assert not redacted.keys() & event.private_fields()
    assert set(redacted) == set(type(event).model_fields) - event.private_fields()
    public = {k: v for k, v in redacted.items() if k not in ENVELOPE}
    assert not _hidden(event, json.dumps(public, ensure_ascii=False))


@every_event_class
@given(data=st.data())
def test_describe_depends_on_public_fields_only(
    cls: type[DomainEvent], data: st.DataObject
) -> None:
    event, other = data.draw(model_strategy(cls)), data.draw(model_strategy(cls))
    private = {name: getattr(other, name) for name in cls.private_fields()}
    assert isinstance(event.describe(), str)
    assert event.model_copy(update=private).describe() == event.describe()


# keyed message ids ------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32)
header_ids = st.from_regex(r"\A<?[a-z0-9.$-]{4,30}@[a-z0-9.-]{3,20}>?\Z")


@given(keys, keys, header_ids)
def test_message_ids_are_keyed_hashes_of_the_header(
    key: bytes, other_key: bytes, header: str
) -> None:
    mid = message_uuid(key, header)
    assert mid == message_uuid(key, header)
    assert mid.version == 8 and mid.variant == uuid.RFC_4122
    if other_key != key:
        assert message_uuid(other_key, header) != mid
    assert mid not in (
        uuid.uuid5(uuid.NAMESPACE_URL, header),
        uuid.uuid5(uuid.NAMESPACE_DNS, header),
    )
    for shown in (str(mid), mid.hex, mid.bytes.decode("latin-1")):
        assert header not in shown and header.strip("<>") not in shown


@given(keys, header_ids, header_ids)
def test_different_headers_get_different_ids(key: bytes, one: str, two: str) -> None:
    assert (message_uuid(key, one) == message_uuid(key, two)) == (one == two)


def test_an_aware_timestamp_in_another_zone_is_stored_in_utc() -> None:
    zone = timezone(timedelta(hours=2))
    event = TagCreated(
        originator_id=uuid7(),
        originator_version=1,
        name="x",
        timestamp=datetime(2024, 1, 1, 12, tzinfo=zone),
    )
    assert event.timestamp == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC
    assert event.date == "Mon, 01 Jan 2024 10:00:00 GMT"


def test_progress_events_replace_the_operation_message() -> None:
    history: list[DomainEvent] = [requested, *when(Operation, [requested], lambda o: o.begin())]
    history += when(Operation, history, lambda o: o.report(1, 2, "step 1"))
    history += when(Operation, history, lambda o: o.report(2, 2, "step 2"))
    state = fold(Operation, history)
    assert state is not None and state.message == "step 2" and state.progress == (2, 2)
    assert [type(e) for e in history] == [
        OperationRequested,
        OperationStarted,
        OperationProgressed,
        OperationProgressed,
    ]
    assert OperationCompleted.private_fields() == {"private_result"}


def test_elapsed_time_counts_every_attempt_that_ended() -> None:
    state = fold(Operation, [requested])
    assert state is not None
    history: list[DomainEvent] = [requested]
    for attempt in (
        lambda o: o.begin("me"),
        lambda o: o.retry_later(ConnectionError("down"), o.requested_at, 1.5),
        lambda o: o.claim("you", o.requested_at, o.requested_at, force=True),
        lambda o: o.complete("Sent", {}, {}, 2.0),
    ):
        history += when(Operation, history, attempt)
    finished = fold(Operation, history)
    assert finished is not None
    assert (finished.status, finished.attempts, finished.elapsed_s) == (Status.COMPLETE, 2, 3.5)
