"""Hypothesis strategies for the domain: every event class, built from its field types.

``event_classes()`` finds every concrete ``DomainEvent`` subclass of the ``domain``
package, so a new event type is covered by the property tests without being named.
``model_strategy(cls)`` builds valid instances of a pydantic model from its field
annotations; a constrained type it does not know fails loudly (hypothesis health
check), which is the cue to add it here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from hypothesis import strategies as st
from pydantic import AfterValidator, AwareDatetime, BaseModel

import eventpile.domain
import eventpile.mail
from eventpile.domain.events import DomainEvent, ForeignEvent
from eventpile.mail.tag import check_tag_name

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
tag_names = st.from_regex(r"\A[A-Za-z0-9_.+/-]{1,64}\Z")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def aware_datetimes() -> st.SearchStrategy[datetime]:
    return st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1), timezones=ZONES)


def event_classes() -> list[type[DomainEvent]]:
    """Every concrete event class of the framework and the mail application."""
    for package in (eventpile.domain, eventpile.mail):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    found: list[type[DomainEvent]] = []
    todo = list(DomainEvent.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        ours = cls.__module__.startswith(("eventpile.domain.", "eventpile.mail."))
        if ours and not inspect.isabstract(cls) and cls is not ForeignEvent:  # never stored
            found.append(cls)
    return sorted(set(found), key=lambda c: (c.__module__, c.__qualname__))


@cache
def model_strategy(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    """Valid instances of ``cls``, every field (envelope included) drawn at random."""
    fields = {
        name: field_strategy(info.annotation, info.metadata)
        for name, info in cls.model_fields.items()
    }
    if issubclass(cls, DomainEvent):  # a stream position is a 64-bit database integer
        fields["originator_version"] = st.integers(1, 2**63 - 1)
    return st.builds(cls, **fields)


def field_strategy(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> Any:
    if any(isinstance(m, AfterValidator) and m.func is check_tag_name for m in metadata):
        return tag_names
    bounds: dict[str, int] = {}
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            bounds["min_value"] = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Gt):
            bounds["min_value"] = int(m.gt) + 1  # type: ignore[call-overload]
    if bounds and annotation is int:
        return st.integers(**bounds)
    return type_strategy(annotation)


def type_strategy(tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return field_strategy(args[0], args[1:])
    if origin in (Union, types.UnionType):
        return st.one_of(*(type_strategy(a) for a in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(type_strategy(args[0]), max_size=4).map(tuple)
        return st.tuples(*(type_strategy(a) for a in args))
    if origin in (list, frozenset, set):
        return st.lists(type_strategy(args[0]), max_size=4).map(origin)
    if origin is dict:
        return st.dictionaries(type_strategy(args[0]), type_strategy(args[1]), max_size=4)
    if tp is type(None):
        return st.none()
    if tp is Any:
        return json_values
    if tp is AwareDatetime:
        return aware_datetimes()
    if tp is datetime:
        return st.datetimes(
            datetime(1970, 1, 2), datetime(2100, 1, 1), timezones=st.one_of(st.none(), ZONES)
        )
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is uuid.UUID:
        return st.uuids()
    if isinstance(tp, type) and issubclass(tp, Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_strategy(tp)
    return st.from_type(tp)


def events() -> st.SearchStrategy[DomainEvent]:
    """An instance of any domain event class."""
    return st.sampled_from(event_classes()).flatmap(model_strategy)
