"""The testing kit on the mail domain: random imports, tag changes, renames and removals,
interleaved with undos, redos, restarts and rebuilds, with the laws of undo and replay
checked after every step (see :class:`eventpile.testing.ApplicationLaws`).

The ``ci`` hypothesis profile runs a few short programs; ``HYPOTHESIS_PROFILE=long``
(or ``--hypothesis-profile=long``) runs many longer ones. Each runs on SQLite, then on
the session's PostgreSQL server (each example in fresh databases).
"""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from eventpile.commands.app import Application
from eventpile.commands.base import Command
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, RemoveTag, RenameTag, TagMessages
from eventpile.mail.message import TRASH_TAG_ID, Message
from eventpile.mail.synthetic import synthetic_messages
from eventpile.mail.tag import Tag
from eventpile.testing import ApplicationLaws, all_aggregates, command_strategy
from eventpile.testing.postgres import on_postgres

MESSAGES = list(synthetic_messages(18, seed=5))
MAILBOXES = {"a.mbox": MESSAGES[0:8], "b.mbox": MESSAGES[5:13], "c.mbox": MESSAGES[12:18]}
"""Three small mailboxes that share some messages."""
SENDERS = sorted({parseaddr(message_from_bytes(m)["From"])[1].lower() for m in MESSAGES})
"""Who the messages are from: the people the ``forget`` rule forgets."""
TAGS = ("red", "blue", "trash")
NEW_NAMES = ("green", "red")
QUERIES = ("*", "status", "subject:help", "from:patel", "kernel", "remove", "tag:red", "tag:blue")

LONG = settings().max_examples > 100  # the ``long`` profile
STEPS = 40 if LONG else 12


class MailLaws(ApplicationLaws):
    application = MailApplication

    def prepare(self, files: Path) -> None:
        for name, raw in MAILBOXES.items():
            (files / name).write_bytes(
                b"".join(
                    b"From someone@example.org Mon Jan  1 00:00:00 2024\n" + m + b"\n" for m in raw
                )
            )

    def commands(self) -> st.SearchStrategy[Command]:
        tags = st.sampled_from(TAGS)
        return st.one_of(
            command_strategy(ImportMailbox, path=st.sampled_from(sorted(self.files.iterdir()))),
            command_strategy(TagMessages, tag=tags, query=st.sampled_from(QUERIES)),
            command_strategy(TagMessages, tag=tags, query=st.sampled_from(QUERIES)),
            command_strategy(RenameTag, tag=tags, new_name=st.sampled_from(NEW_NAMES)),
            command_strategy(RemoveTag, tag=tags),
        )

    def people(self) -> st.SearchStrategy[str]:
        return st.sampled_from([*SENDERS[:3], "nobody@example.org"])

    def observe(self, app: Application) -> Any:
        """Messages, tags and the index without ids chosen at random (a tag is known by
        its name and whether it is removed; OR-set dots are left out). A message out of
        the index without tags is as good as never imported."""
        tags = all_aggregates(app, Tag)
        label = {TRASH_TAG_ID: ("trash", False)} | {
            t.id: (t.name, t.removed) for t in tags.values()
        }
        messages = {
            m.id: (m.indexed, m.content() if m.indexed else None, sorted(label[t] for t in m.tags))
            for m in all_aggregates(app, Message).values()
            if m.indexed or m.tags
        }
        db = app.view("messages").db
        index = (
            db.execute(
                "SELECT id, subject, sender, date, size FROM messages ORDER BY id"
            ).fetchall(),
            db.execute("SELECT term, doc, cnt FROM messages_terms ORDER BY term").fetchall(),
            db.execute("SELECT name FROM tags ORDER BY name").fetchall(),
            sorted(
                (message, label[uuid.UUID(tag)])
                for message, tag in db.execute("SELECT DISTINCT message, tag FROM message_tags")
            ),
        )
        return messages, sorted(t.name for t in tags.values() if not t.removed), index


TestMailLaws = MailLaws.TestCase
TestMailLaws.settings = settings(stateful_step_count=STEPS)


# under the ``ci`` profile fewer programs than on SQLite: there a rebuild costs more
TestMailLawsOnPostgres = on_postgres(
    MailLaws, TestMailLaws.settings if LONG else settings(TestMailLaws.settings, max_examples=5)
)
