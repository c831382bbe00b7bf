"""The law of sync, for any application: installations that worked apart and synced
however they did end identical after a full exchange.

Subclass :class:`SyncLaws` and give ``application``, :meth:`~SyncLaws.commands` (a
hypothesis strategy of your commands) and :meth:`~SyncLaws.observe` (what a user sees,
free of local positions and times), as for :class:`eventpile.testing.ApplicationLaws`;
``TestMySync = MySync.TestCase`` runs it. :func:`interleaved` states the same law for
one aggregate's stream. Each example makes :attr:`~SyncLaws.count`
installations of one user sharing a folder; the rules run your commands, undos and
redos of any operation an installation knows of (wherever it ran), syncs of one
installation, restarts, and the debris a shared folder collects (a sync tool's
conflict copy, a half-written temporary file, a segment shown late). At the end each
syncs until nothing moves, and all must hold the same events (but their syncs'
records, which stay with each), observe the same, and pass ``verify``.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from eventpile.commands.app import Application
from eventpile.commands.base import Command
from eventpile.commands.undo import Redo, Undo
from eventpile.domain.aggregate import Aggregate, DomainError
from eventpile.domain.events import DomainEvent
from eventpile.domain.operation import OperationRequested
from eventpile.projections.operations import undo_candidates
from eventpile.store.home import Home
from eventpile.testing import drop_database, new_database

A = TypeVar("A", bound=Aggregate)
PASSPHRASE = "sync laws"
ROUNDS = 8
"""Full exchanges at the end before the installations must have stopped changing."""


def shared_events(app: Application) -> set[uuid.UUID]:
    """The ids of the events of ``app``'s log, but its syncs' records (each keeps its own)."""
    events = [event for _, event in app.all_events()]
    syncs = {
        e.originator_id for e in events if isinstance(e, OperationRequested) and e.command == "Sync"
    }
    return {e.event_id for e in events if e.originator_id not in syncs}


def interleaved(
    prefix: Sequence[DomainEvent], branches: Sequence[Sequence[DomainEvent]], order: Sequence[int]
) -> list[DomainEvent]:
    """One stream as an installation holds it after a sync: ``prefix``, then the events of
    ``branches`` (each decided apart after the prefix, in its own order) taken in
    ``order`` (a branch's index per event), each placed at the stream's next version and
    remembering the one it was written at, as a sync does. The law for an aggregate:
    every such order folds to one state (:func:`fold` of any two are equal)."""
    stream = list(prefix)
    rest = [iter(branch) for branch in branches]
    for branch in order:
        event = next(rest[branch])
        version = len(stream) + 1
        born = event.born or (
            event.originator_version if version != event.originator_version else None
        )
        stream.append(event.model_copy(update={"originator_version": version, "born": born}))
    return stream


def decided(state: A, decisions: Iterable[Callable[[A], list[DomainEvent]]]) -> list[DomainEvent]:
    """The events of ``decisions`` taken one after another from ``state`` (a branch of a
    stream as one installation decides it apart, for :func:`interleaved`); a refused
    decision (:class:`DomainError`) adds nothing."""
    events: list[DomainEvent] = []
    for decide in decisions:
        try:
            new = decide(state)
        except DomainError:
            continue
        for event in new:
            state = state.apply(event)
        events += new
    return events


class SyncLaws(RuleBasedStateMachine):
    application: ClassVar[type[Application]] = Application
    count: ClassVar[int] = 3
    """How many installations."""
    database_server: ClassVar[str | None] = None
    """None: every installation on SQLite files. Else a PostgreSQL server's URL (see
    :func:`eventpile.testing.postgres.on_postgres`): the first installation keeps its
    events and views in a fresh database there, and syncs with the others on SQLite."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="eventpile-sync-"))
        self.files = self.directory / "files"
        self.folder = self.directory / "folder"
        self.files.mkdir()
        self.folder.mkdir()
        self.prepare(self.files)
        server = self.database_server
        first = Home(self.directory / "i0", new_database(server) if server else None)
        keys = first.init(PASSPHRASE)
        homes = [(first, keys)]
        for n in range(1, self.count):
            home = Home(self.directory / f"i{n}")
            homes.append((home, home.init(PASSPHRASE, keys)))
        self.apps = [self.application(home, keyring) for home, keyring in homes]
        self._strategy: st.SearchStrategy[Command] | None = None

    # to give -----------------------------------------------------------------------------

    def commands(self) -> st.SearchStrategy[Command]:
        raise NotImplementedError("give a strategy of your commands")

    def observe(self, app: Application) -> Any:
        """What a user sees, equal on installations that hold the same events."""
        raise NotImplementedError("give a canonical picture of your state")

    def prepare(self, files: Path) -> None:
        """Make what the commands read, in ``files`` (nothing by default)."""

    def people(self) -> st.SearchStrategy[str] | None:
        """Email addresses of the people your commands write values ``Of``, for the
        ``forget`` rule (None: it does not run)."""
        return None

    # the rules ---------------------------------------------------------------------------

    @rule(n=st.integers(min_value=0), data=st.data())
    def do(self, n: int, data: st.DataObject) -> None:
        """One of your commands on one installation (a refused one writes nothing)."""
        if self._strategy is None:
            self._strategy = self.commands()
        self._run(n, data.draw(self._strategy, "command"))

    @rule(n=st.integers(min_value=0), pick=st.integers(min_value=0), redo=st.booleans())
    def undo(self, n: int, pick: int, redo: bool) -> None:
        """Undo one of the operations an installation knows of, wherever it ran, or redo."""
        app = self.apps[n % self.count]
        candidates = list(undo_candidates(app.current("operations")))
        if redo:
            self._run(n, Redo())
        elif candidates:
            self._run(n, Undo(operation_id=uuid.UUID(candidates[pick % len(candidates)][0])))

    @rule(n=st.integers(min_value=0), data=st.data())
    def forget(self, n: int, data: st.DataObject) -> None:
        """Forget one of :meth:`people` on one installation (refused if it holds nothing
        of them): after the exchange, every installation has forgotten them."""
        people = self.people()
        if people is None:
            return
        try:
            self.apps[n % self.count].forget(data.draw(people, "who"))
        except DomainError:
            hypothesis.event("forget: refused")
        else:
            hypothesis.event("forget: done")

    @rule(n=st.integers(min_value=0))
    def sync(self, n: int) -> None:
        self.apps[n % self.count].sync(self.folder)

    @rule(n=st.integers(min_value=0))
    def restart(self, n: int) -> None:
        old = self.apps[n % self.count]
        old.close()
        self.apps[n % self.count] = self.application(old.home, old.keyring)

    def _segment(self, pick: int) -> Path:
        """One of the segments in the folder (conflict copies aside). Picked by a number,
        not drawn from the files: which files there are varies from run to run (ids and
        times are new in each), and hypothesis replays the draws alone."""
        found = sorted(p for p in self.folder.glob("*/*.seg") if " " not in p.name)
        return found[pick % len(found)]

    @precondition(lambda self: any(self.folder.glob("*/*.seg")))
    @rule(pick=st.integers(min_value=0))
    def debris(self, pick: int) -> None:
        """A sync tool's conflict copy of a segment, and a half-written temporary file."""
        segment = self._segment(pick)
        shutil.copy(segment, segment.with_name(segment.stem + " (copy 2).seg"))
        torn = segment.read_bytes()[: segment.stat().st_size // 2]
        segment.with_name(f".{segment.name}.{uuid.uuid4().hex[:8]}.tmp").write_bytes(torn)

    @precondition(lambda self: any(self.folder.glob("*/*.seg")))
    @rule(pick=st.integers(min_value=0), n=st.integers(min_value=0))
    def shown_late(self, pick: int, n: int) -> None:
        """An installation syncs while the folder does not show a segment yet (a sync tool
        still copying it)."""
        segment = self._segment(pick)
        aside = self.directory / f"aside-{segment.parent.name}-{segment.name}"
        shutil.move(segment, aside)
        self.apps[n % self.count].sync(self.folder)
        shutil.move(aside, segment)

    def teardown(self) -> None:
        try:
            for _ in range(ROUNDS):
                moved = [app.sync(self.folder).result for app in self.apps]
                if not any(r["sent"] or r["received"] for r in moved):
                    break
            else:
                raise AssertionError(f"still exchanging after {ROUNDS} rounds")
            first, *others = self.apps
            for app in others:
                assert shared_events(app) == shared_events(first), "the events differ"
                assert self.observe(app) == self.observe(first), "what a user sees differs"
            for app in self.apps:
                assert all(view.verify(app) for view in app.views.values()), "a view differs"
                assert app.check_log() == [], app.check_log()
            trees = {app.home.unlock(PASSPHRASE).people_cover for app in self.apps}
            assert len(trees) == 1, "the installations' key files forgot different people"
        finally:
            for app in self.apps:
                app.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            url = self.apps[0].home.database_url
            if self.database_server and url:
                drop_database(self.database_server, url)

    def _run(self, n: int, command: Command) -> None:
        with suppress(DomainError):  # refused: nothing written
            self.apps[n % self.count].execute(command)
