"""The law of sync: whatever each installation did, and however their syncs went,
after a final full exchange they are identical.

A hypothesis state machine over three installations of one user (two under the
``ci`` profile's smaller budget) runs random imports, tag changes, renames, removals
and undos of any earlier operation on each, partial syncs, restarts, and the debris a
shared folder collects (conflict copies, temporary files, segments shown late); at the
end every installation syncs until nothing moves, and each must show the same events,
the same search results and tags, and pass ``verify``.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from contextlib import suppress
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventpile import Command, DomainError, Redo, Undo
from eventpile.commands.sync import sync_with
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import RemoveTag, RenameTag, TagMessages
from eventpile.projections.operations import undo_candidates
from eventpile.store.home import Home
from tests.test_sync import Installations, event_ids, seen, tags

LONG = settings.default.max_examples > 100  # the ``long`` profile
SUBJECTS = ("red", "green", "blue", "red green", "green blue")
NAMES = ("alpha", "beta")
QUERIES = ("subject:red", "subject:green", "subject:blue", "*")
ROUNDS = 8
"""Full exchanges at the end before the installations must have stopped changing."""

installation = st.integers(min_value=0, max_value=2)


class SyncLaws(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="eventpile-sync-"))
        self.all = Installations(self.root, 3)
        self.mailboxes = 0

    # work on one installation ---------------------------------------------------------

    @rule(n=installation, subjects=st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=3))
    def import_mail(self, n: int, subjects: list[str]) -> None:
        self.mailboxes += 1
        self.all.imported(n, f"m{self.mailboxes}", sorted(set(subjects)))

    @rule(
        n=installation,
        action=st.sampled_from(["add", "remove"]),
        name=st.sampled_from(NAMES),
        query=st.sampled_from(QUERIES),
    )
    def tag(self, n: int, action: str, name: str, query: str) -> None:
        self._refusable(n, TagMessages(action=action, tag=name, query=query))  # type: ignore[arg-type]

    @rule(n=installation, name=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def rename(self, n: int, name: str, new: str) -> None:
        self._refusable(n, RenameTag(tag=name, new_name=new))

    @rule(n=installation, name=st.sampled_from(NAMES))
    def remove(self, n: int, name: str) -> None:
        self._refusable(n, RemoveTag(tag=name))

    @rule(n=installation, pick=st.integers(min_value=0, max_value=5), redo=st.booleans())
    def undo(self, n: int, pick: int, redo: bool) -> None:
        """Undo (or redo) one of the operations installation ``n`` knows of, wherever it ran."""
        candidates = list(undo_candidates(self.all[n].current("operations")))
        if redo:
            self._refusable(n, Redo())
        elif candidates:
            operation_id = uuid.UUID(candidates[pick % len(candidates)][0])
            self._refusable(n, Undo(operation_id=operation_id))

    def _refusable(self, n: int, command: Command) -> None:
        with suppress(DomainError):  # refused: nothing written
            self.all[n].execute(command)

    # syncs and what happens to a folder and a program ------------------------------------

    @rule(n=installation)
    def sync(self, n: int) -> None:
        sync_with(self.all[n], self.all.folder)

    @rule(n=installation)
    def restart(self, n: int) -> None:
        app = self.all[n]
        app.close()
        self.all.apps[n] = MailApplication(Home(app.home.path), app.keyring)

    @rule(n=installation, data=st.data())
    def debris(self, n: int, data: st.DataObject) -> None:
        """A sync tool's conflict copy of a segment, and a half-written temporary file."""
        folder = self.all.folder / self.all[n].keyring.installation_id.hex
        segments = sorted(folder.glob("*.seg")) if folder.is_dir() else []
        if segments:
            segment = data.draw(st.sampled_from(segments))
            shutil.copy(segment, segment.with_name(segment.stem + " (copy 2).seg"))
            torn = segment.read_bytes()[: len(segment.read_bytes()) // 2]
            segment.with_name(f".{segment.name}.{uuid.uuid4().hex[:8]}.tmp").write_bytes(torn)

    @precondition(lambda self: any(self.all.folder.glob("*/*.seg")))
    @rule(data=st.data())
    def shown_late(self, data: st.DataObject) -> None:
        """The folder shows a segment only after the next sync (a sync tool still copying)."""
        segment = data.draw(st.sampled_from(sorted(self.all.folder.glob("*/*.seg"))))
        aside = self.root / "aside"
        aside.mkdir(exist_ok=True)
        moved = aside / f"{segment.parent.name}-{segment.name}"
        shutil.move(segment, moved)
        reader = data.draw(installation)
        sync_with(self.all[reader], self.all.folder)
        shutil.move(moved, segment)

    @invariant()
    def each_is_whole(self) -> None:
        """Between syncs, each installation's search agrees with its own tags list."""
        for app in self.all.apps:
            listed = {name: count for name, count in tags(app)}
            for name in NAMES:
                if name in listed:
                    assert len(seen(app, f"tag:{name}")) == listed[name]

    def teardown(self) -> None:
        try:
            for _ in range(ROUNDS):
                moved = [r["received"] + r["sent"] for r in self.all.sync()]
                if not any(moved):
                    break
            else:
                raise AssertionError(f"still exchanging after {ROUNDS} rounds")
            first, *others = self.all.apps
            for app in others:
                assert event_ids(app) == event_ids(first)
                assert seen(app) == seen(first)
                assert tags(app) == tags(first)
            for app in self.all.apps:
                assert all(view.verify(app) for view in app.views.values())
        finally:
            self.all.close()
            shutil.rmtree(self.root, ignore_errors=True)


TestSyncLaws = SyncLaws.TestCase
TestSyncLaws.settings = settings(
    max_examples=200 if LONG else 25, stateful_step_count=40 if LONG else 25, deadline=None
)
