"""Leases on their own: tokens, renewal, expiry, fencing."""

from __future__ import annotations

from coop.board.leases import Leases


def test_tokens_only_grow_and_the_newest_fences_out_the_older() -> None:
    leases = Leases()
    leases.grant(7, leases.next_token, "a", expires=10)
    leases.end(7)
    leases.grant(7, leases.next_token, "b", expires=20)
    assert leases.next_token == 3
    assert leases.is_newest(7, 2) and not leases.is_newest(7, 1)
    assert not leases.is_newest(8, 1)  # never leased


def test_expiry_and_renewal() -> None:
    leases = Leases()
    leases.grant(1, 1, "w", expires=10)
    leases.grant(2, 2, "w", expires=10)
    assert leases.renew([(1, 1), (2, 99), (3, 3)], deadline=30) == [2, 3]  # wrong token, none
    assert leases.expired(now=15) == [2]
    assert leases.expired(now=30) == [1, 2]
    assert len(leases) == 2 and 1 in leases


def test_ending_a_lease_says_whether_one_was_held() -> None:
    leases = Leases()
    leases.grant(1, 1, "w", expires=10)
    assert leases.end(1) and not leases.end(1)
    assert leases.is_newest(1, 1)  # a completion may still come under it: the board decides
