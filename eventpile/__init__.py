"""eventpile's public API: what application code imports.

An application defines its own events (:class:`DomainEvent`, with fields marked
:data:`Private`; :class:`Invertible` when undo can revert them), aggregates
(:class:`Aggregate`: state folded from events, decisions that return new events
or raise :class:`DomainError`, and what of a past event is still in effect),
commands (:class:`Command` models with a handler registered by :func:`handles`)
and projections (:class:`Projection` over a :class:`ViewDB`), and runs them in an
:class:`Application` configured with its projections. It gets the encrypted
store, operation records, :class:`Undo` and :class:`Redo`, rebuild and the
testing kit (:mod:`eventpile.testing`) from the framework. Everything outside
this module and :mod:`eventpile.testing` is internal.

Importing this module is cheap: each name is loaded when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commands.app import Application, CommandFailed, Conflict
    from commands.app import Eventpile as MailApplication
    from commands.base import Command, Outcome, explain, handles
    from commands.context import Context
    from commands.mail import message_senders
    from commands.undo import Redo, Undo
    from domain.aggregate import Aggregate, DomainError, Invertible, first_event, fold
    from domain.events import DomainEvent, Private, uuid7
    from eventpile import testing
    from projections.base import Projection
    from projections.db import ViewDB
    from store.errors import StoreError
    from store.home import Home, default_home
    from store.keys import Keyring

_WHERE = {
    # events
    "DomainEvent": ("domain.events", "DomainEvent"),
    "Private": ("domain.events", "Private"),
    "uuid7": ("domain.events", "uuid7"),
    # aggregates
    "Aggregate": ("domain.aggregate", "Aggregate"),
    "DomainError": ("domain.aggregate", "DomainError"),
    "Invertible": ("domain.aggregate", "Invertible"),
    "first_event": ("domain.aggregate", "first_event"),
    "fold": ("domain.aggregate", "fold"),
    # commands
    "Command": ("commands.base", "Command"),
    "Outcome": ("commands.base", "Outcome"),
    "handles": ("commands.base", "handles"),
    "explain": ("commands.base", "explain"),
    "Context": ("commands.context", "Context"),
    "Undo": ("commands.undo", "Undo"),
    "Redo": ("commands.undo", "Redo"),
    # projections
    "Projection": ("projections.base", "Projection"),
    "ViewDB": ("projections.db", "ViewDB"),
    # the application
    "Application": ("commands.app", "Application"),
    "MailApplication": ("commands.app", "Eventpile"),
    "CommandFailed": ("commands.app", "CommandFailed"),
    "Conflict": ("commands.app", "Conflict"),
    "Home": ("store.home", "Home"),
    "default_home": ("store.home", "default_home"),
    "Keyring": ("store.keys", "Keyring"),
    "StoreError": ("store.errors", "StoreError"),
    # reading the mail domain
    "message_senders": ("commands.mail", "message_senders"),
    # the testing kit (a module)
    "testing": ("eventpile.testing", ""),
}

__all__ = [
    "Aggregate",
    "Application",
    "Command",
    "CommandFailed",
    "Conflict",
    "Context",
    "DomainError",
    "DomainEvent",
    "Home",
    "Invertible",
    "Keyring",
    "MailApplication",
    "Outcome",
    "Private",
    "Projection",
    "Redo",
    "StoreError",
    "Undo",
    "ViewDB",
    "default_home",
    "explain",
    "first_event",
    "fold",
    "handles",
    "message_senders",
    "testing",
    "uuid7",
]

if not TYPE_CHECKING:  # type checkers see the imports above, and only those names

    def __getattr__(name: str) -> Any:
        try:
            module, attribute = _WHERE[name]
        except KeyError:
            raise AttributeError(f"module 'eventpile' has no attribute {name!r}") from None
        value = import_module(module)
        if attribute:
            value = getattr(value, attribute)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
