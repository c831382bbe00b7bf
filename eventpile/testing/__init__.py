"""eventpile's testing kit: prove with hypothesis that undo and replay are right for your domain.

- :func:`command_strategy` draws valid commands from a command's pydantic model.
- :func:`given` is a given/when/then helper for aggregates (decisions in, events or
  a refusal out), which also checks that each new event is undone by its inverse.
- :class:`ApplicationLaws` is a hypothesis ``RuleBasedStateMachine``: subclass it with
  your application, a strategy of your commands and a picture of your state
  (:meth:`~ApplicationLaws.observe`); it runs random commands, undos, redos, restarts
  and rebuilds, and checks the laws of an event-sourced application after each step.

The laws checked:

- a refused command writes nothing;
- do then undo leaves aggregates and projections as before (as ``observe`` sees them);
- undo then redo is the same as do;
- undoing operation k of n, when it commutes with those after it, is the same as
  replaying the log without it (in a second home sharing the keys);
- undoing an undone operation is refused and writes nothing;
- every projection rebuilt from scratch equals its incremental state;
- replaying the log twice gives the same state (determinism);
- a restart (a new application on the same files) loses nothing;
- a purge of old operation history changes nothing the user sees, every projection
  still rebuilds to its incremental state, and undo of a purged operation is refused.

- :class:`ModelLaws` is another: it drives your application and a plain model of
  what your user expects (their own statement of the rules, in plain Python) with the
  same random commands and undos, and checks after each step that the two agree.

The machines run on SQLite files by default; set ``database_server`` to run them on
PostgreSQL (:mod:`eventpile.testing.postgres` starts a throwaway server).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast, overload
from urllib.parse import urlsplit

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import ValidationError

from eventpile.commands.app import Application
from eventpile.commands.base import Command
from eventpile.commands.forget import Forget
from eventpile.commands.retention import Purge
from eventpile.commands.undo import Redo, Undo
from eventpile.domain.aggregate import Aggregate, DomainError, Invertible, fold
from eventpile.domain.events import ENVELOPE, DomainEvent
from eventpile.domain.operation import Operation, Status
from eventpile.projections.operations import events_of
from eventpile.store.home import Home
from eventpile.store.keys import Keyring
from eventpile.store.postgres import connect

__all__ = [
    "ApplicationLaws",
    "Given",
    "InAHome",
    "ModelLaws",
    "When",
    "all_aggregates",
    "command_strategy",
    "event_facts",
    "given",
]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C", bound=Command)

PASSPHRASE = "eventpile testing kit"
"""The passphrase of the homes the state machine makes (throwaway, in a temporary directory)."""


# strategies for commands --------------------------------------------------------------


def command_strategy(
    command_class: type[C], **fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[C]:
    """Valid commands of ``command_class``, each field drawn from its type or from ``fields``.

    A field with a default is sometimes left out. Give a strategy in ``fields`` for a
    field whose type says too little (a name with a validator, a path that must
    exist): drawn values the model refuses are filtered out, and hypothesis
    complains if that is most of them.
    """
    unknown = set(fields) - set(command_class.model_fields)
    if unknown:
        raise TypeError(f"{command_class.__name__} has no field {', '.join(sorted(unknown))}")
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in command_class.model_fields.items():
        strategy = fields[name] if name in fields else st.from_type(info.rebuild_annotation())
        (required if info.is_required() else optional)[name] = strategy

    def build(values: dict[str, Any]) -> C | None:
        try:
            return command_class.model_validate(values)
        except ValidationError:
            return None

    drawn = st.fixed_dictionaries(required, optional=optional).map(build)
    return cast(st.SearchStrategy[C], drawn.filter(lambda command: command is not None))


# given / when / then ------------------------------------------------------------------


def event_facts(events: Iterable[DomainEvent]) -> list[tuple[str, uuid.UUID, int, dict[str, Any]]]:
    """Events without what is chosen at random or by the clock (ids, times, origin):
    type, stream, version and fields."""
    return [
        (
            type(e).__name__,
            e.originator_id,
            e.originator_version,
            e.model_dump(exclude=set(ENVELOPE)),
        )
        for e in events
    ]


@dataclass
class Given(Generic[A]):
    """An aggregate's state folded from past events (None before its first event)."""

    aggregate: type[A]
    history: list[DomainEvent]
    state: A | None = field(init=False)

    def __post_init__(self) -> None:
        self.state = fold(self.aggregate, self.history)

    def event(self, event_class: type[DomainEvent], n: int = 1, **fields: Any) -> DomainEvent:
        """The ``n``-th next event of the stream (for the expected events of ``then``)."""
        if self.state is None:
            raise ValueError("no events were given: build the expected events yourself")
        return self.state.event(event_class, n, **fields)

    def when(self, decide: Callable[[A], DomainEvent | Iterable[DomainEvent]]) -> When[A]:
        """Run a decision on the state (None before the first event): what it returned, or
        what it raised."""
        try:
            decided = decide(cast(A, self.state))
        except Exception as error:
            return When(self, [], error)
        return When(self, [decided] if isinstance(decided, DomainEvent) else list(decided), None)


@dataclass
class When(Generic[A]):
    """What a decision did, to compare with what it should have done."""

    given: Given[A]
    events: list[DomainEvent]
    error: Exception | None

    def then(self, *expected: DomainEvent) -> list[DomainEvent]:
        """The decision returned ``expected`` (ids and times aside), events that apply to
        the state, each of which its aggregate reverts by its inverse right after it."""
        if self.error is not None:
            raise AssertionError(f"expected events, but the decision raised {self.error!r}")
        assert event_facts(self.events) == event_facts(expected)
        state = self.given.state
        for event in self.events:
            if state is not None and event.originator_id != state.id:
                continue  # another aggregate's (a decision over two, say): compared only
            state = fold(self.given.aggregate, [event], state)
            assert state is not None
            if isinstance(event, Invertible):
                reverted = state.compensate(event)
                inverse = event.inverse(event.originator_version + 1)
                assert not isinstance(reverted, str), f"{event!r} is not in effect right after it"
                assert event_facts(reverted) == event_facts([inverse])
                fold(self.given.aggregate, reverted, state)
        return self.events

    def then_nothing(self) -> None:
        """The decision changed nothing (it returned no events and raised nothing)."""
        self.then()

    def then_raises(self, error: type[Exception] = DomainError, match: str = "") -> Exception:
        """The decision raised ``error`` (with ``match`` in its message)."""
        if self.error is None:
            raise AssertionError(f"expected {error.__name__}, but it returned {self.events!r}")
        assert isinstance(self.error, error), f"{self.error!r} is not a {error.__name__}"
        assert match in str(self.error), f"{match!r} is not in {str(self.error)!r}"
        return self.error


@overload
def given(*history: DomainEvent) -> Given[Any]: ...
@overload
def given(*history: DomainEvent, aggregate: type[A]) -> Given[A]: ...
def given(*history: DomainEvent, aggregate: type[A] | None = None) -> Given[Any]:
    """A given/when/then scenario of the aggregate ``history`` belongs to.

    ``given(*events).when(lambda state: state.decide(...)).then(*expected)``, or
    ``.then_raises(DomainError)``. With no events, name the aggregate: the state is
    then None (a decision that starts a stream).
    """
    if aggregate is None:
        if not history:
            raise TypeError("given() without events needs aggregate=")
        aggregate = cast(type[A], _declaring(type(history[0])))
    return Given(aggregate, list(history))


def _declaring(event_type: type[DomainEvent]) -> type[Aggregate]:
    """The one aggregate class (of those defined) that declares ``event_type``."""
    found: list[type[Aggregate]] = []
    todo = list(Aggregate.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.declares(event_type):
            found.append(cls)
    if len(found) != 1:
        raise TypeError(
            f"{len(found)} aggregate classes declare {event_type.__name__}: name it with aggregate="
        )
    return found[0]


def all_aggregates(app: Application, aggregate: type[A]) -> dict[uuid.UUID, A]:
    """Every aggregate of one class in the log, by id (one pass over the log)."""
    streams: dict[uuid.UUID, list[DomainEvent]] = {}
    for _position, event in app.all_events():
        try:
            if app.registry.aggregate_of(type(event)) is aggregate:
                streams.setdefault(event.originator_id, []).append(event)
        except DomainError:  # an event no aggregate declares
            continue
    states = {key: fold(aggregate, events) for key, events in streams.items()}
    return {key: state for key, state in states.items() if state is not None}


# the state machine --------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """An operation in effect, with what ``observe`` saw before and after it."""

    operation_id: uuid.UUID
    command: Command
    before: Any
    after: Any


@dataclass(frozen=True)
class Step:
    """One thing the machine did, to replay in another home: a command, or an undo or
    redo of an earlier step's operation. ``operation_id`` is None for a refused one."""

    command: Command | None
    target: uuid.UUID | None
    redo: bool
    operation_id: uuid.UUID | None


def new_database(server: str) -> str:
    """A new empty database on the PostgreSQL ``server`` (a URL); its URL."""
    name = f"eventpile_laws_{uuid.uuid4().hex[:16]}"
    with connect(server) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return urlsplit(server)._replace(path=f"/{name}").geturl()


def drop_database(server: str, url: str) -> None:
    """Drop the database at ``url`` (made by :func:`new_database` on ``server``)."""
    name = urlsplit(url).path.lstrip("/")
    with connect(server) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Ticks:
    """A clock that moves a millisecond each time it is read, from a fixed start: the
    same steps give the same times, so hypothesis replays an example as it ran (a purge
    at a horizon between two operations purges the same ones)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


class InAHome(RuleBasedStateMachine):
    """A state machine working on an application in a home of its own, made for each
    example in a temporary directory (SQLite files, or a fresh database of
    :attr:`database_server`) and removed after it; with a restart and a rebuild that
    must lose nothing. :class:`ApplicationLaws` and :class:`ModelLaws` are two. Its
    applications run on :attr:`clock`, a :class:`Ticks`."""

    application: ClassVar[type[Application]] = Application
    database_server: ClassVar[str | None] = None
    """None: SQLite files in the temporary directory. Else the ``postgresql://`` URL of a
    server (any of its databases) whose role may create databases: each home of an
    example gets a fresh database there, dropped at the end of the example."""
    _keys: ClassVar[tuple[bytes, Keyring] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventpile-laws-"))
        self.files = self.directory / "files"
        self.files.mkdir()
        self.home, self.keyring = self._new_home(self.directory / "home")
        self.clock = Ticks()
        try:
            self.prepare(self.files)
            self.app = self.open_application(self.home)
        except BaseException:
            self._remove(self.home)
            raise

    # to give -----------------------------------------------------------------------------

    def observe(self, app: Application) -> Any:
        """The state as the laws compare it (equal for equivalent states)."""
        raise NotImplementedError("give a canonical picture of your state")

    def prepare(self, files: Path) -> None:
        """Make what the commands read, in ``files`` (nothing by default)."""

    def open_application(self, home: Home) -> Application:
        return self.application(home, self.keyring, clock=self.clock)

    # restarts and rebuilds -----------------------------------------------------------------

    def restart(self) -> None:
        """A new application on the same files loses nothing."""
        before, digests, end = self.observe(self.app), self._digests(), self.app.max_position()
        self.app.close()
        self.app = self.open_application(self.home)
        assert self.app.max_position() == end
        assert self.observe(self.app) == before, "the state changed across a restart"
        assert self._digests() == digests, "a projection changed across a restart"
        assert self.app.check_log() in ([], None), "the log is not whole"

    def rebuild(self) -> None:
        """Every projection rebuilt from scratch equals its incremental state (and the
        log is whole: every write sealed it)."""
        assert self.app.check_log() in ([], None), "the log is not whole"
        for name, digest in self._digests().items():
            self.app.view(name).rebuild(self.app)
            assert self.app.view(name).digest() == digest, f"rebuilt {name} differs"

    def teardown(self) -> None:
        try:
            self.rebuild()
        finally:
            self.app.close()
            self._remove(self.home)
            shutil.rmtree(self.directory, ignore_errors=True)

    # helpers -----------------------------------------------------------------------------

    def _new_home(self, path: Path) -> tuple[Home, Keyring]:
        """A new home with the same key file as every other (the key derivation is slow),
        in a fresh database of :attr:`database_server` if one is given."""
        server = self.database_server
        home = Home(path, new_database(server) if server else None)
        if InAHome._keys is None:
            keyring = home.init(PASSPHRASE)
            InAHome._keys = (home.key_file.read_bytes(), keyring)
            return home, keyring
        key_file, keyring = InAHome._keys
        home.path.mkdir(mode=0o700)
        home.views.mkdir(mode=0o700)
        home.key_file.write_bytes(key_file)
        return home, keyring

    def _remove(self, home: Home) -> None:
        """Delete a home the machine made: its files, and its database if it has one."""
        shutil.rmtree(home.path, ignore_errors=True)
        if home.database_url and self.database_server:
            drop_database(self.database_server, home.database_url)

    def _digests(self) -> dict[str, str]:
        return {name: view.digest() for name, view in self.app.views.items()}


class ApplicationLaws(InAHome):
    """Random commands, undos, redos, restarts and rebuilds, with the laws checked after each.

    Subclass it and give:

    - ``application``: the :class:`~eventpile.commands.app.Application` class to run (or
      override :meth:`open_application`);
    - :meth:`commands`: a hypothesis strategy of your commands;
    - :meth:`observe`: a canonical picture of your state (aggregates and projections)
      that two applications agree on when their states are equivalent: free of
      random ids and times, and without the history (the operation log, the feed).

    Then ``TestMyLaws = MyLaws.TestCase`` runs it under pytest. Each example works in a
    temporary directory: the application's home, plus :attr:`files` for what your
    commands read (mailboxes, say), made by :meth:`prepare`. To run on PostgreSQL,
    set :attr:`database_server` (in a subclass, to keep both).
    """

    def __init__(self) -> None:
        super().__init__()
        self.done: list[Done] = []
        self.undone: list[Done] = []
        self.history: list[Step] = []
        self._strategy: st.SearchStrategy[Command] | None = None

    # to give -----------------------------------------------------------------------------

    def commands(self) -> st.SearchStrategy[Command]:
        """The commands to run (see :func:`command_strategy`)."""
        raise NotImplementedError("give a strategy of your commands")

    def people(self) -> st.SearchStrategy[str] | None:
        """Email addresses of the people your commands write values ``Of`` (see
        :class:`~eventpile.domain.events.Of`), for the ``forget`` rule; None: it does not run."""
        return None

    # the rules ---------------------------------------------------------------------------

    @rule(data=st.data())
    def do(self, data: st.DataObject) -> None:
        """Run one to three commands: a refused one writes nothing; the others may be
        undone later."""
        if self._strategy is None:
            self._strategy = self.commands()
        for command in data.draw(st.lists(self._strategy, min_size=1, max_size=3), "commands"):
            self._do(command)

    def _do(self, command: Command) -> None:
        before, end = self.observe(self.app), self.app.max_position()
        try:
            operation = self.app.execute(command)
        except DomainError as refusal:
            hypothesis.note(f"refused: {refusal}")
            hypothesis.event(f"{type(command).__name__}: refused")
            assert self.app.max_position() == end, "a refused command wrote events"
            assert self.observe(self.app) == before
            self.history.append(Step(command, None, False, None))
            return
        self.history.append(Step(command, None, False, operation.id))
        hypothesis.event(f"{type(command).__name__}: done")
        if not self._wrote(self.app, operation.id):
            assert self.observe(self.app) == before, "a command without events changed the state"
        elif type(command).undoable:
            self.done.append(Done(operation.id, command, before, self.observe(self.app)))
            self.undone.clear()
        else:  # its changes stay: what was observed before earlier operations is stale
            self.done.clear()
            self.undone.clear()

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def undo(self, data: st.DataObject) -> None:
        """Undo the latest operations one by one: after each the state is as before it,
        and undoing it again is refused and writes nothing."""
        for _ in range(data.draw(st.integers(1, len(self.done)), "how many to undo")):
            self._undo()

    def _undo(self) -> None:
        latest = self.done.pop()
        operation = self.app.execute(Undo())
        assert operation.result["undid"] == str(latest.operation_id)
        hypothesis.event(f"undo of {type(latest.command).__name__}")
        assert self.observe(self.app) == latest.before, "do then undo differs from before"
        self.undone.append(latest)
        self.history.append(Step(None, latest.operation_id, False, operation.id))
        end = self.app.max_position()
        try:
            self.app.execute(Undo(operation_id=latest.operation_id))
        except DomainError:
            assert self.app.max_position() == end, "a refused undo wrote events"
        else:
            raise AssertionError("an undone operation was undone again")

    @precondition(lambda self: self.undone)
    @rule(data=st.data())
    def redo(self, data: st.DataObject) -> None:
        """Redo the latest undone operations one by one: after each the state is as after
        doing it."""
        for _ in range(data.draw(st.integers(1, len(self.undone)), "how many to redo")):
            self._redo()

    def _redo(self) -> None:
        latest = self.undone.pop()
        operation = self.app.execute(Redo())
        assert operation.result["redid"] == str(latest.operation_id)
        assert self.observe(self.app) == latest.after, "undo then redo differs from do"
        self.done.append(latest)
        self.history.append(Step(None, latest.operation_id, True, operation.id))

    @precondition(lambda self: len(self.done) >= 2)
    @rule(data=st.data())
    def undo_older(self, data: st.DataObject) -> None:
        """Undo operation k of n: if it commutes with the later ones, the state is as if it
        had never been done."""
        k = data.draw(st.integers(0, len(self.done) - 2), label="k")
        target = self.done[k]
        without = self._replay_without(target)
        operation = self.app.execute(Undo(operation_id=target.operation_id))
        hypothesis.event(
            f"undo k of n: {'compared' if without is not None else 'k does not commute'}"
        )
        if without is not None:
            assert self.observe(self.app) == without, "undo of k differs from a log without k"
        self.history.append(Step(None, target.operation_id, False, operation.id))
        self.done.clear()  # the states observed around the later operations included k
        self.undone.clear()

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        """Purge the history of the operations that finished before one of them did (or
        all that finished): what the user sees stays, every projection still rebuilds to
        its incremental state (checked by the rebuild and at the end), and an undo of a
        purged operation is refused and writes nothing."""
        log = self.app.current("operations")
        ended = sorted(t for (t,) in log.execute("SELECT finished_at FROM operations") if t)
        if not ended:
            return
        # half a tick after an operation finished (or before the first): never on one
        cut = data.draw(st.sampled_from([ended[0] - 5e-4, *(t + 5e-4 for t in ended)]), "cut")
        now = self.app.clock()
        older_than = max(timedelta(0), now - datetime.fromtimestamp(cut, UTC))
        before, ids = self.observe(self.app), {s.operation_id for s in self.history}
        operation = self.app.purge(Purge(older_than=older_than))
        hypothesis.event(f"purge: {'some' if operation.result['operations'] else 'none'}")
        assert self.observe(self.app) == before, "a purge changed what the user sees"
        kept = {uuid.UUID(hex=op) for (op,) in log.execute("SELECT id FROM operations")}
        gone = {op for op in ids if op is not None and op not in kept}
        for op in gone:
            assert self.app.load(Operation, op) is None, "a purged operation's stream stays"
            end = self.app.max_position()
            try:
                self.app.execute(Undo(operation_id=op))
            except DomainError as refusal:
                assert "purged" in str(refusal), f"refused, but not for its purge: {refusal}"
            else:
                raise AssertionError("a purged operation was undone")
            assert self.app.max_position() == end, "a refused undo wrote events"
        # a purged operation can no longer be undone, nor redone
        self.done = [d for d in self.done if d.operation_id not in gone]
        self.undone = [d for d in self.undone if d.operation_id not in gone]

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        """Forget one of :meth:`people`: refused, writing nothing, if the log holds none
        of their values; else every view still equals a fresh fold of the log (as the
        rebuilds and the end check it too), and no undo brings their values back."""
        people = self.people()
        if people is None:
            return
        who = data.draw(people, "who")
        end = self.app.max_position()
        try:
            operation = self.app.forget(who)
        except DomainError as refusal:
            assert "nothing to forget" in str(refusal), f"refused: {refusal}"
            assert self.app.max_position() == end, "a refused forget wrote events"
            return
        hypothesis.event("forget: done")
        assert operation.status is Status.COMPLETE
        for name, view in self.app.views.items():
            assert view.verify(self.app), f"after a forget, a fresh fold of {name} differs"
        forgot = Forget.model_validate(operation.args)
        self.history.append(Step(forgot, None, False, operation.id))
        # what was observed around earlier operations held their values
        self.done.clear()
        self.undone.clear()

    @rule(check=st.sampled_from(("restart", "rebuild", "replay twice")))
    def replay(self, check: str) -> None:
        """A restart, a rebuild or replaying the log twice: nothing changes."""
        {"restart": self.restart, "rebuild": self.rebuild, "replay twice": self.replay_twice}[
            check
        ]()

    def replay_twice(self) -> None:
        """Replaying the log twice gives the same state: fresh folds of every projection
        both equal the live one, and the aggregates fold the same."""
        for _ in range(2):
            for name, view in self.app.views.items():
                assert view.verify(self.app), f"a fresh fold of {name} differs"
        assert self.observe(self.app) == self.observe(self.app)

    @invariant()
    def views_are_current(self) -> None:
        """Read-your-writes: every view has caught up with the log after each step."""
        end = self.app.max_position()
        for name, view in self.app.views.items():
            assert view.position == end, f"{name} is at {view.position}, the log at {end}"

    # helpers -----------------------------------------------------------------------------

    @staticmethod
    def _wrote(app: Application, operation_id: uuid.UUID) -> Counter[str]:
        """How many events of each type the operation wrote."""
        return Counter(
            row["type"] for row in events_of(app.view("operations").db, operation_id.hex)
        )

    def _replay_without(self, target: Done) -> Any:
        """What ``observe`` sees after replaying the history without ``target`` in a second
        home (same keys: ids derived from keys agree), or None if ``target`` does not
        commute with what came after it: then the others do not write the same (types
        of) events, or doing it last ends elsewhere than here."""
        home, _ = self._new_home(self.directory / f"replay-{uuid.uuid4().hex[:8]}")
        try:
            other = self.open_application(home)
        except BaseException:
            self._remove(home)
            raise
        try:
            ids: dict[uuid.UUID, uuid.UUID] = {}
            for step in self.history:
                if target.operation_id in (step.target, step.operation_id):
                    continue
                if not self._same_step(step, other, ids):
                    hypothesis.note("k does not commute with what came after it")
                    return None
            without = self.observe(other)
            try:
                other.execute(target.command)
            except DomainError:
                hypothesis.note("k is refused when done last: it does not commute")
                return None
            if self.observe(other) != self.observe(self.app):
                hypothesis.note("k done last ends elsewhere: it does not commute")
                return None
            return without
        finally:
            other.close()
            self._remove(home)

    def _same_step(self, step: Step, other: Application, ids: dict[uuid.UUID, uuid.UUID]) -> bool:
        """Replay ``step`` in ``other``: did it write the same types of events as here?"""
        if step.command is not None:
            command = step.command
        elif step.target in ids:
            target = ids[step.target]
            command = Redo(operation_id=target) if step.redo else Undo(operation_id=target)
        else:
            return False
        try:
            replayed = other.execute(command)
        except DomainError:
            return step.operation_id is None
        if step.operation_id is None:
            return False
        ids[step.operation_id] = replayed.id
        return self._wrote(other, replayed.id) == self._wrote(self.app, step.operation_id)


# the application against a model --------------------------------------------------------


class ModelLaws(InAHome):
    """Random commands, undos of any earlier operation (an undo's undo is a redo),
    restarts and rebuilds; after every step the application, as a user sees it, equals
    a plain model of what the user expects.

    The laws of :class:`ApplicationLaws` compare the application with itself; these
    compare it with an independent statement of the rules. Subclass it and give:

    - :meth:`commands`: a strategy of your commands;
    - :meth:`model_run`: do a command in the model; the model's key for the operation,
      or None where the model says the application must refuse it;
    - :meth:`model_undo`: undo an operation in the model (by its key, following redos
      as the application does); the key of the undo and what its result must say
      (``{"reverted": ..., "skipped": ..., "reasons": ...}``, or any part of the
      result), or None where the application must refuse it;
    - :meth:`observe` (the application) and :meth:`model_observe` (the model): what
      the user sees, in one form.
    """

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[tuple[uuid.UUID, Any]] = []
        """Each operation done: its id in the application, its key in the model."""
        self._strategy: st.SearchStrategy[Command] | None = None

    # to give -----------------------------------------------------------------------------

    def commands(self) -> st.SearchStrategy[Command]:
        """The commands to run (see :func:`command_strategy`)."""
        raise NotImplementedError("give a strategy of your commands")

    def model_run(self, command: Command) -> Any | None:
        raise NotImplementedError("do the command in your model")

    def model_undo(self, key: Any) -> tuple[Any, dict[str, Any]] | None:
        raise NotImplementedError("undo the operation in your model")

    def model_observe(self) -> Any:
        raise NotImplementedError("give what the user sees, by your model")

    # the rules ---------------------------------------------------------------------------

    @rule(data=st.data())
    def do(self, data: st.DataObject) -> None:
        """A command: the application refuses it exactly when the model does."""
        if self._strategy is None:
            self._strategy = self.commands()
        command = data.draw(self._strategy, "command")
        key = self.model_run(command)
        end = self.app.max_position()
        try:
            operation = self.app.execute(command)
        except DomainError as refusal:
            assert key is None, f"the application refused {command!r}: {refusal}"
            assert self.app.max_position() == end, "a refused command wrote events"
            hypothesis.event(f"{type(command).__name__}: refused")
            return
        assert key is not None, f"the model refuses {command!r}; the application did it"
        hypothesis.event(f"{type(command).__name__}: done")
        self.operations.append((operation.id, key))

    @precondition(lambda self: self.operations)
    @rule(data=st.data())
    def undo(self, data: st.DataObject) -> None:
        """An undo of any earlier operation (an undo too: a redo): refused exactly when
        the model refuses it, and saying what the model says."""
        target, key = data.draw(st.sampled_from(self.operations), "operation to undo")
        expected = self.model_undo(key)
        end = self.app.max_position()
        try:
            operation = self.app.execute(Undo(operation_id=target))
        except DomainError as refusal:
            assert expected is None, f"the application refused the undo: {refusal}"
            assert self.app.max_position() == end, "a refused undo wrote events"
            hypothesis.event("undo: refused")
            return
        assert expected is not None, "the model refuses the undo; the application did it"
        undo_key, said = expected
        shown = {name: operation.result.get(name) for name in said}
        assert shown == said, f"the undo says {shown}, the model {said}"
        hypothesis.event(f"undo: {said.get('reverted', '?')} reverted")
        self.operations.append((operation.id, undo_key))

    @rule(check=st.sampled_from(("restart", "rebuild")))
    def replay(self, check: str) -> None:
        """A restart or a rebuild: nothing the user sees changes."""
        {"restart": self.restart, "rebuild": self.rebuild}[check]()

    @invariant()
    def as_the_model_says(self) -> None:
        assert self.observe(self.app) == self.model_observe(), "the application differs"
