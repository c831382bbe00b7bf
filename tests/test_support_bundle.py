"""The tech-support bundle: no private value of any event or operation reaches it (a
property over every event class), private fields hold only pseudonyms, pseudonyms
correlate within a bundle and not across, and ``support-bundle`` on a real home."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from eventpile.commands.support import Pseudonyms, write_records
from eventpile.domain.events import DomainEvent, private_fields_of
from eventpile.domain.operation import Operation
from eventpile.mail.cli import main
from eventpile.store.home import Home
from tests.strategies import event_classes, model_strategy
from tests.test_operations import _mbox

PSEUDONYM = re.compile(r"~[0-9a-f]{16}")
secrets = st.uuids().map(lambda u: f"zq{u.hex[:20]}")


def with_secrets(model: BaseModel, data: st.DataObject, drawn: list[str]) -> Any:
    """``model`` as Python values, every string in its private fields (dict keys too, at
    any depth) replaced by a distinctive secret drawn now."""

    def walk(value: Any, private: bool) -> Any:
        if isinstance(value, BaseModel):
            hidden = private_fields_of(type(value))
            return {
                name: walk(getattr(value, name), private or name in hidden)
                for name in type(value).model_fields
            }
        if isinstance(value, dict):
            return {walk(k, private): walk(v, private) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(walk(v, private) for v in value)
        if private and isinstance(value, str):
            drawn.append(data.draw(secrets))
            return drawn[-1]
        return value

    return walk(model, False)


def all_pseudonyms(value: Any) -> bool:
    """Is ``value`` made of pseudonyms only (keys and leaves of its objects and arrays)?"""
    if isinstance(value, dict):
        return all(all_pseudonyms(k) and all_pseudonyms(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_pseudonyms(v) for v in value)
    return isinstance(value, str) and PSEUDONYM.fullmatch(value) is not None


def check_redacted(model: BaseModel, record: Any) -> None:
    """Every private field of ``model`` (and of the models in it) is pseudonyms in ``record``."""
    hidden = private_fields_of(type(model))
    for name in type(model).model_fields:
        value, shown = getattr(model, name), record[name]
        if name in hidden:
            assert all_pseudonyms(shown), (type(model).__name__, name, shown)
        elif isinstance(value, BaseModel):
            check_redacted(value, shown)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    check_redacted(item, shown[str(key)])


def event_with_secrets(cls: type[DomainEvent], data: st.DataObject, drawn: list[str]) -> Any:
    return cls.model_validate(with_secrets(data.draw(model_strategy(cls)), data, drawn))


def bundle_of(operations: list[Operation], events: list[DomainEvent]) -> str:
    out = io.StringIO()
    write_records(out, {"format": 1}, operations, enumerate(events, 1), Pseudonyms())
    return out.getvalue()


def records(bundle: str, kind: str) -> list[Any]:
    lines = [json.loads(line) for line in bundle.split("\n")[:-1]]  # one record a line
    return [line[kind] for line in lines if kind in line]


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)
@given(data=st.data())
def test_no_private_value_of_any_event_reaches_the_bundle(
    cls: type[DomainEvent], data: st.DataObject
) -> None:
    drawn: list[str] = []
    events = [event_with_secrets(cls, data, drawn) for _ in range(2)]
    bundle = bundle_of([], events)
    assert [secret for secret in drawn if secret in bundle] == []
    for event, record in zip(events, records(bundle, "event"), strict=True):
        check_redacted(event, record)
        assert record["type"] == cls.__name__


@given(data=st.data())
def test_no_private_value_of_an_operation_reaches_the_bundle(data: st.DataObject) -> None:
    drawn: list[str] = []
    operation = Operation.model_validate(
        with_secrets(data.draw(model_strategy(Operation)), data, drawn)
    )
    bundle = bundle_of([operation], [])
    assert [secret for secret in drawn if secret in bundle] == []
    [record] = records(bundle, "operation")
    check_redacted(operation, record)


@given(st.lists(st.text() | st.integers(), min_size=2, max_size=5, unique=True))
def test_pseudonyms_correlate_within_a_bundle_and_not_across(values: list[Any]) -> None:
    one, other = Pseudonyms(), Pseudonyms()
    names = [one(v) for v in values]
    assert names == [one(v) for v in values]
    assert len(set(names)) == len(values)
    assert all(PSEUDONYM.fullmatch(n) for n in names)
    assert set(names).isdisjoint(other(v) for v in values)


def test_objects_and_arrays_keep_their_shape() -> None:
    p = Pseudonyms(b"k" * 32)
    shown = p({"to": ["a@x", "b@x"], "n": 3})
    assert list(shown) == [p.scalar("to"), p.scalar("n")]
    assert shown[p.scalar("to")] == [p.scalar("a@x"), p.scalar("b@x")]


# on a real home -----------------------------------------------------------------


def test_support_bundle_of_a_real_home(
    cli_env: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mbox = _mbox(tmp_path / "private.mbox", [("secret-id@x", "confidential body text")])
    for argv in (
        ["init"],
        ["import", str(mbox)],
        ["tag", "add", "confidential-tag", "confidential"],
        ["tag", "remove", "confidential-tag", "confidential"],
    ):
        assert main(argv) == 0, capsys.readouterr()
    capsys.readouterr()
    bundle = tmp_path / "bundle.jsonl"
    assert main(["--json", "support-bundle", str(bundle)]) == 0
    report = json.loads(capsys.readouterr().out)
    text = bundle.read_text()
    for private in ("secret-id@x", "confidential", "sender@example.org", "private.mbox"):
        assert private not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert "bundle" in lines[0] and report["operations"] == 3
    assert report["events"] == sum("event" in line for line in lines) > 3
    tag_args = [
        line["operation"]["private_args"]
        for line in lines
        if "operation" in line and line["operation"]["command"] == "TagMessages"
    ]
    assert len(tag_args) == 2 and tag_args[0] == tag_args[1]  # the same tag and query
    assert oct(bundle.stat().st_mode)[-3:] == "600"
    before = bundle.read_bytes()
    assert main(["support-bundle", str(bundle)]) == 1
    assert "exists already" in capsys.readouterr().err and bundle.read_bytes() == before
