"""Commands are pydantic models, each run by its handler (see :func:`handles`).

A command is validated when it is built, so bad input is refused before anything
is written. Its fields are public or private like event fields
(``Annotated[str, Private]``); the operation record keeps the two apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from eventpile.domain.events import private_fields_of
from eventpile.projections.feed import DEFAULT_RENDERER, Renderer

if TYPE_CHECKING:
    from eventpile.commands.context import Context
    from eventpile.commands.operations import RetryPolicy


class Command(BaseModel):
    """Base class of commands. ``describe`` must use public fields only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    undoable: ClassVar[bool] = True
    retry: ClassVar[RetryPolicy | None] = None
    """Back-off for :class:`Retryable` failures (None: the default policy)."""
    renderer: ClassVar[Renderer] = DEFAULT_RENDERER
    """How the feed shows this command's operations."""
    outside_effects: ClassVar[bool] = False
    """Does it act beyond the log (deliver a mail)? Then its operation is recorded as
    started before its handler runs."""

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


@dataclass(frozen=True)
class Handler(Generic[C]):
    """A command class and the function that runs its commands (made by :func:`handles`).

    An application lists its handlers in its ``handlers`` class attribute: that is
    what it can run, and nothing else is.
    """

    command: type[C]
    run: Callable[[C, Context], Outcome]

    def __call__(self, command: C, ctx: Context) -> Outcome:
        return self.run(command, ctx)


def handles(command_class: type[C]) -> Callable[[Callable[[C, Context], Outcome]], Handler[C]]:
    """Make the decorated function the :class:`Handler` of ``command_class``."""

    def wrap(run: Callable[[C, Context], Outcome]) -> Handler[C]:
        return Handler(command_class, run)

    return wrap


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
