"""The public API: every name is documented, loads on first use, and the import is cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import eventpile


def test_all_lists_exactly_what_can_be_loaded() -> None:
    assert sorted(eventpile.__all__) == sorted(eventpile._WHERE)
    assert set(eventpile.__all__) <= set(dir(eventpile))


@pytest.mark.parametrize("name", eventpile.__all__)
def test_every_public_name_has_its_own_docstring(name: str) -> None:
    value = getattr(eventpile, name)
    doc = (value.__doc__ or "").strip()
    assert doc, name
    assert not doc.startswith(f"{getattr(value, '__name__', name)}("), f"{name}: generated doc"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = eventpile.Nothing


def test_importing_eventpile_loads_nothing_heavy() -> None:
    code = "import sys, eventpile; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    for heavy in ("pydantic", "eventsourcing", "domain", "commands", "cryptography"):
        assert f"'{heavy}'" not in loaded
