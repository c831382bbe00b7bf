"""The mail application: the framework with messages, tags, the index and sending."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from eventpile import Aggregate, Application, Command, DomainError, Handler, Projection
from eventpile.mail.commands import (
    RepairTags,
    TagMessages,
    import_mailbox,
    remove_tag,
    rename_tag,
    repair_tags,
    resolve_duplicates,
    tag_messages,
)
from eventpile.mail.index import MessageIndex
from eventpile.mail.message import Message
from eventpile.mail.query import (
    QueryError,
    orphan_memberships,
    parse_query,
    search,
    shared_names,
)
from eventpile.mail.send import mark_sent, send_mail
from eventpile.mail.tag import Tag

if TYPE_CHECKING:
    from eventpile import Operation


class MailApplication(Application):
    """Mail in an encrypted home: import, search, tag, send; undo any of it."""

    aggregates: ClassVar[tuple[type[Aggregate], ...]] = (Message, Tag)
    handlers: ClassVar[tuple[Handler, ...]] = (
        import_mailbox,
        resolve_duplicates,
        tag_messages,
        rename_tag,
        remove_tag,
        repair_tags,
        send_mail,
        mark_sent,
    )
    projections: ClassVar[tuple[type[Projection], ...]] = (MessageIndex,)
    topic_aliases: ClassVar[dict[str, str]] = {
        "domain.message": "eventpile.mail.message",
        "domain.tag": "eventpile.mail.tag",
    }

    def people_of(self, who: str) -> set[str]:
        """The address, if the log holds a message from it, indexed now or not (a message
        is its sender's: forgetting a recipient forgets nothing others wrote to them)."""
        index = self.current("messages")
        held = "SELECT 1 FROM message_senders WHERE address = ? LIMIT 1"
        return {p for p in super().people_of(who) if index.execute(held, (p,)).fetchone()}

    def search(self, query: str, limit: int = 50) -> dict[str, Any]:
        """The index's answer to ``query`` (its language: see ``eventpile search --help``);
        a query it cannot read is refused in words (:class:`DomainError`)."""
        try:
            parsed = parse_query(query)
        except QueryError as error:
            raise DomainError(str(error)) from None
        return search(self.current("messages"), parsed, limit=limit)

    def tag_found(self, query: str, tag: str, add: bool) -> Operation:
        return self.execute(TagMessages(action="add" if add else "remove", tag=tag, query=query))

    def after_sync(self) -> list[Command]:
        """Tags made with one name on two installations, or memberships given on one to a
        tag removed on the other: one tag per name again (see :class:`RepairTags`)."""
        index = self.current("messages")
        return [RepairTags()] if shared_names(index) or orphan_memberships(index) else []
