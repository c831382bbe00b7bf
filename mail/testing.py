"""The mail application against a plain model of tags as a user sees them.

:class:`TagModel` states, in plain Python, what a user expects of ``tag add``,
``tag remove`` and ``undo`` of any earlier operation (an undo's undo is a redo):
named tags, each on a set of messages; an add is identified by its *dot*, and an
undo removes exactly the adds its operation made or those that stand for them now
(add-wins). What undo gives back follows the rules of
:mod:`eventpile.mail.tag_rules`: a tag gets back only a name that is free, is
removed only when no message has it, and a message gets a tag back only on a live
tag (the one it had, back again when its name is free, else the live tag of that
name). :class:`TagLaws` drives the mail application and the model with the same
random programs (and restarts and rebuilds) and compares what ``search tag:NAME``
and ``tags`` show after every step, and what each undo says.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import strategies as st

from eventpile import Application, Command
from eventpile.mail.app import MailApplication
from eventpile.mail.commands import ImportMailbox, TagMessages
from eventpile.mail.query import all_tags, parse_query, search
from eventpile.mail.tag_rules import ADDED_AGAIN
from eventpile.testing import ModelLaws, command_strategy

SUBJECTS = ("red", "green", "blue", "red green", "green blue", "red green blue")
"""The corpus: one message each; a query ``subject:WORD`` matches the subjects with
that word, ``*`` all of them."""
QUERIES = ("subject:red", "subject:green", "subject:blue", "*")
NAMES = ("alpha", "beta")

Change = tuple[Any, ...]
"""What an operation changed, as the model records it: ``("up", tag)`` a tag made
or brought back, ``("down", tag)`` removed, ``("added", tag, message, dot)``,
``("removed", tag, message, dots)``, ``("mark", operation, "undone" | "redone")``."""


@dataclass
class _Tag:
    name: str
    live: bool = True
    members: dict[int, set[int]] = field(default_factory=dict)
    """Message: the dots of its adds that hold."""


@dataclass
class _Operation:
    record: list[Change]
    undo: bool = False
    undone_by: int | None = None
    redone_by: int | None = None


class TagModel:
    """Named tags on the messages of :data:`SUBJECTS`, as a user expects them to be."""

    def __init__(self) -> None:
        self.tags: list[_Tag] = []
        """Every tag ever made (one made again under a name is another tag)."""
        self.stands: dict[int, set[int]] = {}
        """A dot given back by an undo: the earlier dots it stands for."""
        self.operations: list[_Operation] = []
        self._dots = itertools.count()

    def seen(self) -> dict[str, list[str]]:
        """What ``tags`` and ``search tag:NAME`` show: each live tag's messages."""
        return {tag.name: sorted(SUBJECTS[m] for m in tag.members) for tag in self.tags if tag.live}

    # commands -----------------------------------------------------------------------------

    def tag(self, action: str, name: str, query: str) -> int | None:
        """``tag add|remove NAME QUERY``: the operation's key, None if refused."""
        record: list[Change] = []
        found = self._live(name)
        if found is None:
            if action == "remove":
                return None  # there is no tag of that name
            found = len(self.tags)
            self.tags.append(_Tag(name))
            record.append(("up", found))
        tag = self.tags[found]
        for message in self._matching(query):
            if action == "add" and message not in tag.members:
                dot = next(self._dots)
                tag.members[message] = {dot}
                record.append(("added", found, message, dot))
            elif action == "remove" and message in tag.members:
                record.append(("removed", found, message, frozenset(tag.members.pop(message))))
        self.operations.append(_Operation(record))
        return len(self.operations) - 1

    def undo(self, key: int) -> tuple[int, dict[str, Any]] | None:
        """Undo operation ``key`` (or the redo that carries its changes now); its key and
        what it must say, None if refused."""
        carrier = key
        while (redone := self.operations[carrier].redone_by) is not None:
            carrier = redone
        target = self.operations[carrier]
        if target.undone_by is not None or not (target.undo or target.record):
            return None  # undone already, or it changed nothing
        new = len(self.operations)
        target.undone_by = new
        record: list[Change] = [("mark", carrier, "undone")]
        reasons: Counter[str] = Counter()
        reverted = 0
        for change in reversed(target.record):
            if change[0] == "mark":
                self._remark(change, carrier, new, record)
                continue
            reason = self._revert(change, record)
            if reason is None:
                reverted += 1
            else:
                reasons[reason] += 1
        self.operations.append(_Operation(record, undo=True))
        said = {"reverted": reverted, "skipped": sum(reasons.values()), "reasons": dict(reasons)}
        return new, said

    # what undo does -----------------------------------------------------------------------

    def _revert(self, change: Change, record: list[Change]) -> str | None:
        """Revert one change (recording what it did), or why not."""
        match change:
            case ("added", _, message, dot):
                return self._take_back(message, dot, record)
            case ("removed", tag, message, dots):
                return self._give_back(tag, message, dots, record)
            case ("up", tag):
                if not self.tags[tag].live:
                    return "the tag was removed since"
                if self.tags[tag].members:
                    return "the tag is still on messages tagged since"
                self.tags[tag].live = False
                record.append(("down", tag))
            case ("down", tag):
                if self.tags[tag].live:
                    return "the tag was created again since"
                if self._live(self.tags[tag].name) is not None:
                    return "another tag has this name now"
                self.tags[tag].live = True
                record.append(("up", tag))
        return None

    def _take_back(self, message: int, dot: int, record: list[Change]) -> str | None:
        """Remove the add ``dot``, or what stands for it now, on whichever tag."""
        found = False
        for number, tag in enumerate(self.tags):
            standing = {
                d for d in tag.members.get(message, ()) if d == dot or dot in self.stands.get(d, ())
            }
            if standing:
                found = True
                tag.members[message] -= standing
                if not tag.members[message]:
                    del tag.members[message]
                record.append(("removed", number, message, frozenset(standing)))
        return None if found else "the tag was removed since"

    def _give_back(
        self, number: int, message: int, dots: frozenset[int], record: list[Change]
    ) -> str | None:
        """Give the tag back to the message: on the tag it had, back again if removed and
        its name is free, else on the live tag of that name."""
        tag = self.tags[number]
        if tag.live and message in tag.members:
            return ADDED_AGAIN
        if not tag.live:
            holder = self._live(tag.name)
            if holder is None:
                tag.live = True
                record.append(("up", number))
            else:
                number, tag = holder, self.tags[holder]
                if message in tag.members:
                    return ADDED_AGAIN
        dot = next(self._dots)
        self.stands[dot] = set(dots).union(*(self.stands.get(d, ()) for d in dots))
        tag.members.setdefault(message, set()).add(dot)
        record.append(("added", number, message, dot))
        return None

    def _remark(self, change: Change, carrier: int, new: int, record: list[Change]) -> None:
        """Undo an undo's mark on an operation (uncounted): undone becomes redone and
        back, if it still says so."""
        _, number, what = change
        operation = self.operations[number]
        if what == "undone" and operation.undone_by == carrier:
            operation.undone_by, operation.redone_by = None, new
            record.append(("mark", number, "redone"))
        elif what == "redone" and operation.redone_by == carrier:
            operation.undone_by, operation.redone_by = new, None
            record.append(("mark", number, "undone"))

    def _live(self, name: str) -> int | None:
        return next((n for n, tag in enumerate(self.tags) if tag.live and tag.name == name), None)

    @staticmethod
    def _matching(query: str) -> list[int]:
        word = query.removeprefix("subject:")
        return [n for n, s in enumerate(SUBJECTS) if query == "*" or word in s.split()]


class TagLaws(ModelLaws):
    """The mail application's tags against :class:`TagModel`, under random programs of
    ``tag add``, ``tag remove``, undos and redos of any earlier operation, restarts and
    rebuilds. ``TestTagLaws = TagLaws.TestCase`` runs it under pytest."""

    application: ClassVar[type[Application]] = MailApplication

    def __init__(self) -> None:
        super().__init__()
        self.model = TagModel()
        self.app.execute(ImportMailbox(path=self.files / "tags.mbox"))

    def prepare(self, files: Path) -> None:
        (files / "tags.mbox").write_text(
            "".join(
                f"From someone@example.org Mon Jan  1 00:00:00 2024\n"
                f"From: Someone <someone@example.org>\nSubject: {subject}\n"
                f"Message-ID: <tags-{n}@example.org>\n"
                f"Date: Mon, 1 Jan 2024 00:00:0{n} +0000\n\nbody {n}\n\n"
                for n, subject in enumerate(SUBJECTS)
            )
        )

    def commands(self) -> st.SearchStrategy[Command]:
        return command_strategy(
            TagMessages,
            action=st.sampled_from(("add", "remove")),
            tag=st.sampled_from(NAMES),
            query=st.sampled_from(QUERIES),
        )

    def model_run(self, command: Command) -> Any | None:
        assert isinstance(command, TagMessages)
        return self.model.tag(command.action, command.tag, command.query)

    def model_undo(self, key: Any) -> tuple[Any, dict[str, Any]] | None:
        return self.model.undo(key)

    def observe(self, app: Application) -> Any:
        db = app.current("messages")
        seen = {}
        for tag in all_tags(db):
            if tag["name"] != "trash":
                found = search(db, parse_query(f"tag:{tag['name']}"), len(SUBJECTS))
                seen[tag["name"]] = sorted(r["subject"] for r in found["results"])
        return seen

    def model_observe(self) -> Any:
        return self.model.seen()
