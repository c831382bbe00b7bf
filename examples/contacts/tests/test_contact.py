"""The ``Contact`` aggregate, given/when/then with the testing kit.

``then`` also checks that each new event applies and that undo reverts it by its
inverse right after it happened.
"""

from __future__ import annotations

import uuid

from eventpile import DomainError
from eventpile.testing import event_facts, given
from examples.contacts.domain import (
    Contact,
    ContactCreated,
    ContactMerged,
    ContactRemoved,
    ContactUnmerged,
    EmailAdded,
    EmailRemoved,
    NameChanged,
)

RALF = uuid.UUID("00000000-0000-7000-8000-00000000000a")
OTHER = uuid.UUID("00000000-0000-7000-8000-00000000000b")


def created(contact_id: uuid.UUID = RALF, name: str = "Ralf") -> ContactCreated:
    return ContactCreated(originator_id=contact_id, originator_version=1, name=name)


def added(address: str, version: int, contact_id: uuid.UUID = RALF) -> EmailAdded:
    return EmailAdded(originator_id=contact_id, originator_version=version, address=address)


def test_create_with_addresses_keeps_each_once() -> None:
    given(aggregate=Contact).when(
        lambda _: Contact.create(
            RALF, "Ralf", ("ralf@linux-mips.org", "ralf@gnu.org", "ralf@linux-mips.org")
        )
    ).then(
        created(),
        added("ralf@linux-mips.org", 2),
        added("ralf@gnu.org", 3),
    )


def test_add_and_remove_an_address() -> None:
    scenario = given(created())
    scenario.when(lambda c: c.add_email("ralf@gnu.org")).then(
        scenario.event(EmailAdded, address="ralf@gnu.org")
    )
    scenario.when(lambda c: c.remove_email("ralf@gnu.org")).then_raises(
        DomainError, "has no address ralf@gnu.org"
    )
    with_address = given(created(), added("ralf@gnu.org", 2))
    with_address.when(lambda c: c.add_email("ralf@gnu.org")).then_raises(DomainError, "already has")
    with_address.when(lambda c: c.remove_email("ralf@gnu.org")).then(
        with_address.event(EmailRemoved, address="ralf@gnu.org")
    )


def test_rename_records_the_old_name() -> None:
    scenario = given(created())
    scenario.when(lambda c: c.rename("Ralf Baechle")).then(
        scenario.event(NameChanged, old_name="Ralf", new_name="Ralf Baechle")
    )
    scenario.when(lambda c: c.rename("Ralf")).then_raises(DomainError, "already named")


def test_merge_moves_the_addresses_the_other_lacks() -> None:
    source = given(
        created(OTHER, "R. B."), added("ralf@gnu.org", 2, OTHER), added("r@x.org", 3, OTHER)
    )
    target = given(created(), added("r@x.org", 2))
    assert target.state is not None
    source.when(lambda c: c.merge_into(target.state)).then(
        # in address order: a contact keeps its addresses sorted
        source.event(EmailRemoved, address="r@x.org"),
        source.event(EmailRemoved, 2, address="ralf@gnu.org"),
        source.event(ContactMerged, 3, into=RALF),
        target.event(EmailAdded, address="ralf@gnu.org"),
    )
    source.when(lambda c: c.merge_into(c)).then_raises(DomainError, "into itself")


def test_a_merged_or_removed_contact_refuses_changes() -> None:
    merged = ContactMerged(originator_id=RALF, originator_version=2, into=OTHER)
    given(created(), merged).when(lambda c: c.rename("X")).then_raises(DomainError, "was merged")
    removed = ContactRemoved(originator_id=RALF, originator_version=2, name="Ralf")
    given(created(), removed).when(lambda c: c.add_email("a@b.c")).then_raises(
        DomainError, "was removed"
    )


def test_undo_skips_what_later_events_changed() -> None:
    renamed = NameChanged(originator_id=RALF, originator_version=2, old_name="Ralf", new_name="R")
    again = NameChanged(originator_id=RALF, originator_version=3, old_name="R", new_name="Ralf B.")
    state = given(created(), renamed, again).state
    assert state is not None
    assert state.compensate(renamed) == "the contact was renamed again since"
    removal = state.compensate(created())
    assert not isinstance(removal, str)
    assert event_facts(removal) == event_facts([state.event(ContactRemoved, name="Ralf B.")])
    unmerged = ContactUnmerged(originator_id=RALF, originator_version=4, into=OTHER)
    merged = ContactMerged(originator_id=RALF, originator_version=3, into=OTHER)
    after = given(created(), added("a@b.c", 2), merged, unmerged).state
    assert after is not None
    assert after.compensate(merged) == "the merge was undone since"
    assert after.compensate(created()) == "the contact has addresses added since"
