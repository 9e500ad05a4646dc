"""The planner's acknowledgements on their own."""

from __future__ import annotations

from coop.board.acks import Acks


def test_out_of_order_batches_advance_the_prefix_once_contiguous() -> None:
    acks = Acks()
    acks.ack([3, 4, 5], completed=8)
    assert acks.prefix == 0 and len(acks) == 3 and 4 in acks and 2 not in acks
    assert list(acks.unacked(0, 8)) == [0, 1, 2, 6, 7]
    acks.ack([0, 1, 2], completed=8)
    assert acks.prefix == 6 and list(acks.unacked(0, 8)) == [6, 7]


def test_acknowledging_twice_or_beyond_the_completions_changes_nothing() -> None:
    acks = Acks()
    acks.ack([0, 1], completed=2)
    acks.ack([1, 2, 9], completed=2)  # 1 again; 2 and 9 are not completions yet
    assert acks.prefix == 2 and len(acks) == 2


def test_a_prefix_acknowledgement_from_an_older_journal() -> None:
    acks = Acks()
    acks.ack([5], completed=10)
    acks.ack_upto(4, completed=10)
    assert acks.prefix == 4 and list(acks.unacked(2, 10)) == [4, 6, 7, 8, 9]
    acks.ack_upto(50, completed=10)
    assert acks.prefix == 10 and not list(acks.unacked(0, 10))
