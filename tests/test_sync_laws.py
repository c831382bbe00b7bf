"""The law of sync on the mail application (see :mod:`eventpile.testing.sync`): three
installations, random imports (of mailboxes that overlap), tag changes, renames,
removals, undos and redos of any operation, partial syncs, restarts and folder debris
end identical after a full exchange: the same events, search results and tags.
``HYPOTHESIS_PROFILE=long`` runs many longer programs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant

from eventpile import Application, Command
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.testing import command_strategy
from eventpile.testing.postgres import on_postgres
from eventpile.testing.sync import SyncLaws
from tests.test_sync import seen, tags, write_mbox

LONG = settings.default.max_examples > 100  # the ``long`` profile
MAILBOXES = (["red"], ["red", "green"], ["green blue", "blue"], ["red green", "blue"])
NAMES = ("alpha", "beta")
QUERIES = ("subject:red", "subject:green", "subject:blue", "*")


class MailSyncLaws(SyncLaws):
    application = MailApplication

    def prepare(self, files: Path) -> None:
        for n, subjects in enumerate(MAILBOXES):
            write_mbox(files / f"{n}.mbox", subjects)

    def commands(self) -> st.SearchStrategy[Command]:
        names = st.sampled_from(NAMES)
        return st.one_of(
            command_strategy(
                ImportMailbox, path=st.sampled_from([str(p) for p in sorted(self.files.iterdir())])
            ),
            command_strategy(
                TagMessages,
                action=st.sampled_from(["add", "remove"]),
                tag=names,
                query=st.sampled_from(QUERIES),
            ),
            command_strategy(RenameTag, tag=names, new_name=names),
            command_strategy(RemoveTag, tag=names),
        )

    def people(self) -> st.SearchStrategy[str]:
        return st.just("ann@example.org")  # who every message is from

    def observe(self, app: Application) -> Any:
        assert isinstance(app, MailApplication)
        return seen(app), tags(app)

    @invariant()
    def search_agrees_with_tags(self) -> None:
        """On each installation, between syncs, ``tag:NAME`` finds what ``tags`` counts."""
        for app in self.apps:
            for name, count in tags(app):
                if name in NAMES:
                    assert len(seen(app, f"tag:{name}")) == count


TestMailSyncLaws = MailSyncLaws.TestCase
TestMailSyncLaws.settings = settings(
    max_examples=200 if LONG else 15, stateful_step_count=40 if LONG else 25, deadline=None
)
# one installation on PostgreSQL, syncing with two on SQLite (each program makes a database)
TestMailSyncLawsOnPostgres = on_postgres(
    MailSyncLaws, settings(TestMailSyncLaws.settings, max_examples=40 if LONG else 5)
)
