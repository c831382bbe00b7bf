"""eventpile's public API: what application code imports.

An application defines its own events (:class:`DomainEvent`, with fields marked
:data:`Private`, and :class:`Of` the person they belong to, so that :class:`Forget`
makes them unreadable; :class:`Invertible` when undo can revert them), aggregates
(:class:`Aggregate`: state folded from events, decisions that return new events
or raise :class:`DomainError`, and what of a past event is still in effect),
commands (:class:`Command` models with a handler registered by :func:`handles`)
and projections (:class:`Projection` over a :class:`ViewDB`), and lists them in
an :class:`Application` subclass. It gets the encrypted store, operation records,
:class:`Undo` and :class:`Redo`, rebuild, :class:`Purge` of old operation history,
sync between installations (with :mod:`registers` for views, and
:meth:`Aggregate.write`, to settle what two installations changed at once), a
command line
(:mod:`eventpile.cli`) and the testing kit (:mod:`eventpile.testing`) from the
framework. Everything outside this module, :mod:`eventpile.cli` and
:mod:`eventpile.testing` is internal; the mail application (:mod:`eventpile.mail`)
is built on them alone.

Importing this module is cheap: each name is loaded when first used.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # as typing's (importing typing is a tenth of a search's process)
if TYPE_CHECKING:
    from typing import Any

    from eventpile import cli, testing
    from eventpile.commands.app import Application
    from eventpile.commands.base import Command, Handler, Outcome, Retryable, explain, handles
    from eventpile.commands.context import Context
    from eventpile.commands.dispatcher import CommandFailed
    from eventpile.commands.eventlog import Conflict
    from eventpile.commands.forget import Forget
    from eventpile.commands.operations import RetryPolicy
    from eventpile.commands.retention import Purge
    from eventpile.commands.undo import Redo, Undo
    from eventpile.domain.aggregate import Aggregate, DomainError, Invertible, first_event, fold
    from eventpile.domain.events import (
        FORGOTTEN,
        STREAM,
        DomainEvent,
        Of,
        Private,
        hashed_uuid,
        person_of,
        utcnow,
        uuid7,
    )
    from eventpile.domain.operation import Operation
    from eventpile.domain.undoing import Undoing
    from eventpile.projections import registers
    from eventpile.projections.base import Projection
    from eventpile.projections.feed import Renderer
    from eventpile.store.agent import holds as agent_holds
    from eventpile.store.agent import keyring as agent_keyring
    from eventpile.store.agent_protocol import Unanswered as AgentUnanswered
    from eventpile.store.agent_protocol import run as agent_run
    from eventpile.store.agent_protocol import run_plain as agent_run_plain
    from eventpile.store.errors import DamagedView, StoreError
    from eventpile.store.home import Home, default_home
    from eventpile.store.keys import Keyring
    from eventpile.store.passphrase import unlocking
    from eventpile.store.views import ViewDB, read_position

_WHERE = {
    "DomainEvent": ("eventpile.domain.events", "DomainEvent"),
    "Private": ("eventpile.domain.events", "Private"),
    "Of": ("eventpile.domain.events", "Of"),
    "STREAM": ("eventpile.domain.events", "STREAM"),
    "FORGOTTEN": ("eventpile.domain.events", "FORGOTTEN"),
    "Forget": ("eventpile.commands.forget", "Forget"),
    "uuid7": ("eventpile.domain.events", "uuid7"),
    "hashed_uuid": ("eventpile.domain.events", "hashed_uuid"),
    "person_of": ("eventpile.domain.events", "person_of"),
    "utcnow": ("eventpile.domain.events", "utcnow"),
    "Aggregate": ("eventpile.domain.aggregate", "Aggregate"),
    "DomainError": ("eventpile.domain.aggregate", "DomainError"),
    "Invertible": ("eventpile.domain.aggregate", "Invertible"),
    "first_event": ("eventpile.domain.aggregate", "first_event"),
    "fold": ("eventpile.domain.aggregate", "fold"),
    "Undoing": ("eventpile.domain.undoing", "Undoing"),
    "Operation": ("eventpile.domain.operation", "Operation"),
    "Command": ("eventpile.commands.base", "Command"),
    "Outcome": ("eventpile.commands.base", "Outcome"),
    "Handler": ("eventpile.commands.base", "Handler"),
    "handles": ("eventpile.commands.base", "handles"),
    "explain": ("eventpile.commands.base", "explain"),
    "Retryable": ("eventpile.commands.base", "Retryable"),
    "RetryPolicy": ("eventpile.commands.operations", "RetryPolicy"),
    "Context": ("eventpile.commands.context", "Context"),
    "Undo": ("eventpile.commands.undo", "Undo"),
    "Redo": ("eventpile.commands.undo", "Redo"),
    "Purge": ("eventpile.commands.retention", "Purge"),
    "Projection": ("eventpile.projections.base", "Projection"),
    "ViewDB": ("eventpile.store.views", "ViewDB"),
    "read_position": ("eventpile.store.views", "read_position"),
    "Renderer": ("eventpile.projections.feed", "Renderer"),
    "Application": ("eventpile.commands.app", "Application"),
    "CommandFailed": ("eventpile.commands.dispatcher", "CommandFailed"),
    "Conflict": ("eventpile.commands.eventlog", "Conflict"),
    "Home": ("eventpile.store.home", "Home"),
    "default_home": ("eventpile.store.home", "default_home"),
    "Keyring": ("eventpile.store.keys", "Keyring"),
    "agent_holds": ("eventpile.store.agent", "holds"),
    "agent_keyring": ("eventpile.store.agent", "keyring"),
    "AgentUnanswered": ("eventpile.store.agent_protocol", "Unanswered"),
    "agent_run": ("eventpile.store.agent_protocol", "run"),
    "agent_run_plain": ("eventpile.store.agent_protocol", "run_plain"),
    "unlocking": ("eventpile.store.passphrase", "unlocking"),
    "StoreError": ("eventpile.store.errors", "StoreError"),
    "DamagedView": ("eventpile.store.errors", "DamagedView"),
    # latest-wins registers for views, the testing kit and the command-line kit (modules)
    "registers": ("eventpile.projections.registers", ""),
    "testing": ("eventpile.testing", ""),
    "cli": ("eventpile.cli", ""),
}

__all__ = [
    "FORGOTTEN",
    "STREAM",
    "AgentUnanswered",
    "Aggregate",
    "Application",
    "Command",
    "CommandFailed",
    "Conflict",
    "Context",
    "DamagedView",
    "DomainError",
    "DomainEvent",
    "Forget",
    "Handler",
    "Home",
    "Invertible",
    "Keyring",
    "Of",
    "Operation",
    "Outcome",
    "Private",
    "Projection",
    "Purge",
    "Redo",
    "Renderer",
    "RetryPolicy",
    "Retryable",
    "StoreError",
    "Undo",
    "Undoing",
    "ViewDB",
    "agent_holds",
    "agent_keyring",
    "agent_run",
    "agent_run_plain",
    "cli",
    "default_home",
    "explain",
    "first_event",
    "fold",
    "handles",
    "hashed_uuid",
    "person_of",
    "read_position",
    "registers",
    "testing",
    "unlocking",
    "utcnow",
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
