"""The people's tree (:mod:`eventpile.store.people`): the laws forgetting rests on.

A punctured tree derives every key it derived before but those punctured; punctures
commute; what two punctured copies have in common is the tree punctured at both's
leaves; it survives its bytes; and a person's values open under their key only."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventpile.domain.people import PersonForgotten
from eventpile.store.people import DEPTH, FORGETTING, Tree
from eventpile.store.topics import topic_of

leaves = st.integers(min_value=0, max_value=2**DEPTH - 1)
ROOT = Tree({(0, 0): bytes(range(32))})


def near(leaf: int) -> list[int]:
    """Leaves that share most of their path with ``leaf`` (the hard cases)."""
    return [leaf ^ 1, leaf ^ 2, leaf ^ (1 << 63), leaf]


@given(st.lists(leaves, max_size=6), st.lists(leaves, max_size=6))
def test_a_punctured_tree_derives_all_but_its_punctures(
    punctured: list[int], probes: list[int]
) -> None:
    tree = ROOT.punctured(punctured)
    for leaf in [*probes, *(n for p in punctured for n in near(p))]:
        expected = None if leaf in punctured else ROOT.key(leaf)
        assert tree.key(leaf) == expected
    assert len(tree.nodes) <= 1 + DEPTH * len(punctured)


@given(st.lists(leaves, max_size=6))
def test_punctures_commute_and_survive_their_bytes(punctured: list[int]) -> None:
    one_by_one = ROOT
    for leaf in reversed(punctured):
        one_by_one = one_by_one.punctured([leaf])
    assert one_by_one.nodes == ROOT.punctured(punctured).nodes
    assert Tree.from_bytes(one_by_one.to_bytes()).nodes == one_by_one.nodes


@given(st.lists(leaves, max_size=5), st.lists(leaves, max_size=5))
def test_what_two_copies_have_in_common(mine: list[int], theirs: list[int]) -> None:
    common = ROOT.punctured(mine).common(ROOT.punctured(theirs))
    assert common.nodes == ROOT.punctured([*mine, *theirs]).nodes


def test_damaged_bytes_are_refused() -> None:
    from eventpile.store.errors import StoreError

    with pytest.raises(StoreError, match="damaged"):
        Tree.from_bytes(ROOT.to_bytes()[:-1])


def test_the_indexed_topic_is_the_record_of_a_forgetting() -> None:
    assert topic_of(PersonForgotten) == FORGETTING
    assert PersonForgotten(
        originator_id=uuid.uuid4(), originator_version=1, people=("00000000000000ff",)
    ).ids() == [255]
