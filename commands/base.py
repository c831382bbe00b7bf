"""Commands are pydantic models; handlers are registered for them.

A command is validated when it is built, so bad input is refused before anything
is written. Its fields are public or private like event fields
(``Annotated[str, Private]``); the operation record keeps the two apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from domain.events import private_fields_of

if TYPE_CHECKING:
    from commands.context import Context
    from commands.operations import RetryPolicy


class Command(BaseModel):
    """Base class of commands. ``describe`` must use public fields only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    undoable: ClassVar[bool] = True
    retry: ClassVar[RetryPolicy | None] = None
    """Back-off for :class:`Retryable` failures (None: the default policy)."""

    def describe(self) -> str:
        return type(self).__name__

    def split_args(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(public, private)`` arguments as JSON values."""
        data = self.model_dump(mode="json")
        private = private_fields_of(type(self))
        return (
            {k: v for k, v in data.items() if k not in private},
            {k: v for k, v in data.items() if k in private},
        )


class Retryable(Exception):
    """Raised by a handler: the attempt failed in a way worth trying again later.

    The operation is rescheduled with back-off (the command's ``retry`` policy)
    and fails with this error after the last attempt.
    """


@dataclass(frozen=True)
class Outcome:
    """What a handler reports: a line for people, public and private result data."""

    message: str
    result: dict[str, Any] = field(default_factory=dict)
    private: dict[str, Any] = field(default_factory=dict)


C = TypeVar("C", bound=Command)
Handler = Callable[[Any, "Context"], Outcome]

_registry: dict[str, tuple[type[Command], Handler]] = {}


def handles(command_class: type[C]) -> Callable[[Callable[[C, Context], Outcome]], Handler]:
    """Register the decorated function as the handler of ``command_class``."""

    def register(handler: Callable[[C, Context], Outcome]) -> Handler:
        name = command_class.__name__
        if name in _registry and _registry[name][0] is not command_class:
            raise TypeError(f"two command classes are named {name}")
        _registry[name] = (command_class, handler)
        return handler

    return register


def handler_for(command: Command) -> Handler:
    try:
        return _registry[type(command).__name__][1]
    except KeyError:
        raise TypeError(f"no handler is registered for {type(command).__name__}") from None


def registered(name: str) -> type[Command] | None:
    """The command class of that type name, if a handler is registered for it here."""
    entry = _registry.get(name)
    return None if entry is None else entry[0]


def command_from_record(name: str, args: dict[str, Any]) -> Command:
    """Rebuild a command from an operation record (type name and arguments)."""
    command_class = registered(name)
    if command_class is None:
        raise TypeError(f"unknown command type {name!r}")
    return command_class.model_validate(args)


EXPLAIN_AT_MOST = 200
"""Characters of one problem in :func:`explain` (messages quote the bad value)."""


def explain(error: ValidationError) -> str:
    """One line a person can act on, from a pydantic validation error."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "input"
        message = item["msg"].removeprefix("Value error, ")
        if len(message) > EXPLAIN_AT_MOST:
            message = message[: EXPLAIN_AT_MOST - 1] + "…"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
