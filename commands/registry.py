"""What one application class knows by name, wired from its class attributes.

An :class:`~eventpile.commands.app.Application` subclass lists its ``aggregates``,
``handlers`` and ``projections`` (and, for event classes that moved to another
module, ``topic_aliases``); each adds to what its bases list. The registry built
from them is the application's alone: two applications in one process do not see
each other's commands, and a stored event resolves only to an event class of one
of the application's aggregates (a topic never imports a module).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from eventpile.commands.base import Command, Handler
from eventpile.domain.aggregate import Aggregate, DomainError
from eventpile.domain.events import DomainEvent
from eventpile.projections.feed import DEFAULT_RENDERER, Renderer
from eventpile.store.errors import UnknownEvent
from eventpile.store.topics import topic_of

if TYPE_CHECKING:
    from eventpile.projections.base import Projection

T = TypeVar("T")


class Registry:
    """The commands, aggregates, event classes and projections of one application class."""

    def __init__(self, app_class: type) -> None:
        bases = [c.__dict__ for c in reversed(app_class.__mro__)]
        self.aggregates: tuple[type[Aggregate], ...] = _unique(bases, "aggregates")
        self.projections: tuple[type[Projection], ...] = _unique(bases, "projections")
        self.aliases: dict[str, str] = {}
        for attributes in bases:
            self.aliases.update(attributes.get("topic_aliases", {}))
        self.handlers: dict[str, Handler[Any]] = {}
        for handler in _unique(bases, "handlers"):
            name = handler.command.__name__
            if name in self.handlers and self.handlers[name].command is not handler.command:
                raise TypeError(f"two command classes are named {name}")
            self.handlers[name] = handler

    # commands ---------------------------------------------------------------

    def handler(self, command: Command) -> Handler[Any]:
        handler = self.handlers.get(type(command).__name__)
        if handler is None or handler.command is not type(command):
            raise TypeError(f"no handler is registered for {type(command).__name__}")
        return handler

    def command_class(self, name: str) -> type[Command] | None:
        """The command class of that type name, if this application handles it."""
        handler = self.handlers.get(name)
        return None if handler is None else handler.command

    def renderer(self, source: str) -> Renderer:
        """How the feed shows the operations of command type ``source``."""
        command_class = self.command_class(source)
        return DEFAULT_RENDERER if command_class is None else command_class.renderer

    def command_from_record(self, name: str, args: Mapping[str, Any]) -> Command:
        """Rebuild a command from an operation record (type name and arguments)."""
        command_class = self.command_class(name)
        if command_class is None:
            raise TypeError(f"unknown command type {name!r}")
        return command_class.model_validate(args)

    # events -----------------------------------------------------------------

    def aggregate_of(self, event_type: type[DomainEvent]) -> type[Aggregate]:
        """The aggregate whose ``event_types`` hold ``event_type`` or one of its bases."""
        for base in event_type.__mro__:
            if base in self._declared:
                return self._declared[base]
        raise DomainError(f"no aggregate of this application declares {event_type.__name__}")

    def event_class(self, topic: str) -> type[DomainEvent]:
        """The event class of a stored topic (``module:Class``, the module maybe an alias)."""
        found = self._classes.get(self._current(topic))
        if found is None:
            raise UnknownEvent(
                f"stored events of type {topic!r} are unknown here (written by another "
                "application or a newer version)"
            )
        return found

    def _current(self, topic: str) -> str:
        """The topic under its module's current name."""
        module, _, name = topic.partition(":")
        return f"{self.aliases.get(module, module)}:{name}"

    def stored_topics(self, cls: type[DomainEvent]) -> list[str]:
        """Every topic the events of ``cls`` may be stored under (its own, and its
        module's old names)."""
        module, _, name = topic_of(cls).partition(":")
        return [f"{m}:{name}" for m in (module, *self._old_names.get(module, ()))]

    def all_topics(self) -> list[str]:
        return [t for cls in self._classes.values() for t in self.stored_topics(cls)]

    @cached_property
    def _old_names(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for old, new in self.aliases.items():
            found.setdefault(new, []).append(old)
        return found

    @cached_property
    def _declared(self) -> dict[type[DomainEvent], type[Aggregate]]:
        found: dict[type[DomainEvent], type[Aggregate]] = {}
        for aggregate in self.aggregates:
            for declared in aggregate.event_types:
                if found.setdefault(declared, aggregate) is not aggregate:
                    raise TypeError(
                        f"{declared.__name__} is declared by {found[declared].__name__} "
                        f"and {aggregate.__name__}"
                    )
        return found

    @cached_property
    def _classes(self) -> dict[str, type[DomainEvent]]:
        return {topic_of(c): c for declared in self._declared for c in _with_subclasses(declared)}


def _unique(bases: Iterable[Mapping[str, Any]], attribute: str) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(item for a in bases for item in a.get(attribute, ())))


def _with_subclasses(cls: type[T]) -> Iterator[type[T]]:
    yield cls
    for subclass in cls.__subclasses__():
        if not getattr(subclass, "forgotten", None):  # an event read forgotten is its base's
            yield from _with_subclasses(subclass)
