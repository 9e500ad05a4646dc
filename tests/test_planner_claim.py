"""The planner's claim keeper alone, against a board stand-in: taken or refused, standing by,
renewed, lost to another holder or to a board gone quiet for a whole TTL, released."""

from __future__ import annotations

import threading
import time

import pytest

from coop.board import BoardUnavailable
from coop.errors import CoopError
from coop.planner.claim import ClaimKeeper
from tests.support.procs import wait_for

TTL = 0.3  # the keeper renews every 0.1 s


class Claims:
    """A board's claim calls: `holder` answers every claim; `down` makes them unavailable."""

    def __init__(self, holder: str | None = None) -> None:
        self.holder = holder
        self.down = False
        self.claims = 0
        self.released: list[str] = []
        self.gave_up: list[str] = []

    def claim_planner(self, instance: str, timeout: float | None = None) -> str | None:
        self.claims += 1
        if self.down:
            raise BoardUnavailable("o", "no answer")
        return self.holder

    def release_planner(self, planner: str) -> None:
        self.released.append(planner)

    def give_up(self, cause: str) -> None:
        self.gave_up.append(cause)


def keeper(board: Claims, stop: threading.Event | None = None) -> ClaimKeeper:
    return ClaimKeeper(board, "me", stop or threading.Event(), ttl=TTL)


def test_a_free_claim_is_taken_renewed_and_released() -> None:
    board = Claims()
    k = keeper(board)
    k.claim(wait=False)
    wait_for(lambda: board.claims >= 3, 5, "renewals")
    k.release()
    assert board.released == ["me"] and k.lost is None and not board.gave_up
    renewed = board.claims
    time.sleep(TTL)
    assert board.claims == renewed  # no renewal after the release


def test_a_held_claim_is_refused_without_standby() -> None:
    with pytest.raises(CoopError, match="another planner \\(other\\)"):
        keeper(Claims("other")).claim(wait=False)


def test_standing_by_ends_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(CoopError, match="stopped while standing by"):
        keeper(Claims("other"), stop).claim(wait=True)


def test_standing_by_takes_over_when_the_holder_is_gone() -> None:
    board = Claims("other")
    k = keeper(board)
    threading.Timer(TTL / 2, lambda: setattr(board, "holder", None)).start()
    k.claim(wait=True)
    assert k.lost is None
    k.release()


def test_another_holder_means_the_claim_is_lost() -> None:
    board = Claims()
    k = keeper(board)
    k.claim(wait=False)
    board.holder = "successor"
    wait_for(lambda: k.lost is not None, 5, "the loss")
    assert k.lost == "successor took over planning"
    assert board.gave_up == ["successor took over planning; this planner stops"]
    k.release()
    assert board.released == []  # not ours to release any more


def test_a_quiet_board_is_waited_for_up_to_a_ttl_then_the_claim_is_lost() -> None:
    board = Claims()
    k = keeper(board)
    k.claim(wait=False)
    board.down = True
    began = time.monotonic()
    wait_for(lambda: k.lost is not None, 5, "the loss")
    assert time.monotonic() - began >= TTL * 2 / 3  # renewals failed for a whole TTL first
    assert k.lost is not None and "could not renew it for 0.3s (no answer)" in k.lost
    assert len(board.gave_up) == 1
