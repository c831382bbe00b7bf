"""The application: what an eventpile application class is made of.

An application subclasses :class:`Application` and lists what it adds to the
framework: its ``aggregates`` (and so its event classes), the ``handlers`` of its
commands and its ``projections``; ``topic_aliases`` name the modules its event
classes lived in before they moved, so that logs written then still open. The
framework's own are here: operations, undo and redo, the operation log, the queue
and the feed. The machinery is layered beneath: :class:`~eventpile.commands.eventlog.EventLog`
(the store and views), :class:`~eventpile.commands.dispatcher.Dispatcher`
(commands as operations), :class:`~eventpile.commands.claims.Claims` (workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

from eventpile.commands.base import Command, Handler
from eventpile.commands.claims import Claims
from eventpile.commands.context import ProgressCallback
from eventpile.commands.forget import Forget, forget
from eventpile.commands.passphrase import passphrase_changed
from eventpile.commands.rekey import rekey
from eventpile.commands.retention import Purge, purge
from eventpile.commands.sync import Sync, is_url, sync
from eventpile.commands.undo import redo, undo
from eventpile.domain.aggregate import Aggregate, DomainError
from eventpile.domain.operation import Operation
from eventpile.domain.people import Forgetting, address_of
from eventpile.projections.base import Projection
from eventpile.projections.feed import Feed
from eventpile.projections.operations import OperationLog
from eventpile.projections.queue import Queue
from eventpile.store.mapper import RowReader


class Application(Claims):
    """An application: one home's event store, its views and the dispatcher.

    Each class attribute below adds to its bases'; what an application does not list
    it does not know (another application's commands, events and views).
    """

    aggregates: ClassVar[tuple[type[Aggregate], ...]] = (Operation, Forgetting)
    handlers: ClassVar[tuple[Handler[Any], ...]] = (
        undo,
        redo,
        passphrase_changed,
        sync,
        purge,
        rekey,
        forget,
    )
    projections: ClassVar[tuple[type[Projection], ...]] = (OperationLog, Queue, Feed)
    topic_aliases: ClassVar[Mapping[str, str]] = {"domain.operation": "eventpile.domain.operation"}

    def sync(self, folder: Path | str, on_progress: ProgressCallback | None = None) -> Operation:
        """Exchange events with the other installations that sync through ``folder``, or
        with the one at a URL (an operation, see :mod:`eventpile.commands.sync`); then
        run what :meth:`after_sync` asks for if events came in. The sync's state."""
        where = str(folder) if is_url(str(folder)) else str(Path(folder).absolute())
        operation = self.execute(Sync(folder=where), on_progress=on_progress)
        if operation.result.get("received"):
            for command in self.after_sync():
                self.execute(command)
        return operation

    def purge(self, older_than: Purge | str) -> Operation:
        """Purge the history of the operations that finished longer ago than ``older_than``
        (``90d``, see :mod:`eventpile.commands.retention`), then give its space back to
        the file system (on SQLite; left for the next purge while another process
        writes). The purge's state."""
        command = older_than if isinstance(older_than, Purge) else Purge(older_than=older_than)
        operation = self.execute(command)
        if operation.result.get("operations"):
            cast(RowReader, self.recorder).reclaim()  # busy: the next purge does it
        return operation

    def people_of(self, who: str) -> set[str]:
        """The people (see :class:`~eventpile.domain.events.Of`) whose data forgetting
        ``who`` (an email address) forgets, of those the log holds data of: by default the
        address itself. An application says which it holds data of (the mail index: the
        senders of its messages), and adds the aggregates ``who`` names (a contact)."""
        return {address_of(who)}

    def forget(self, who: str) -> Operation:
        """Make the personal data of ``who`` unreadable everywhere (see
        :mod:`eventpile.commands.forget`). Refused, with nothing changed, if the log
        holds none."""
        if self.keyring.people_key is None:
            raise DomainError(
                "this home was made before people had keys of their own (its people's keys "
                "derive from its data key): it cannot forget anyone; nothing was changed"
            )
        self.heed_forgettings()
        people = self.people_of(who)
        if not people:
            raise DomainError(f"the log holds no personal data of {who}: nothing to forget")
        ids = sorted(f"{self.people.current_id(person):016x}" for person in people)
        return self.execute(Forget(people=tuple(ids)))

    def search(self, query: str, limit: int = 50) -> dict[str, Any]:
        """What the web page's search box finds (``eventpile serve``): ``{"total",
        "results": [{"id", "from", "subject", "date", "tags"}]}``, newest first. An
        application without a search has none (NotImplementedError)."""
        raise NotImplementedError

    def tag_found(self, query: str, tag: str, add: bool) -> Operation:
        """Add ``tag`` to what ``query`` finds, or take it off (the search page's buttons):
        an operation, which the feed then shows with its undo."""
        raise NotImplementedError

    def after_sync(self) -> list[Command]:
        """What to run, each as an operation, after a sync brought events: what makes the
        application's data whole again where two installations changed it at once in a way
        the events alone do not settle (two tags of one name, say). None by default."""
        return []
