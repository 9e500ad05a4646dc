"""One look-out per process: however many threads wait, one asks the board at a time."""

from __future__ import annotations

import threading
import time

import pytest

from coop.board.bell import Bell
from coop.board.lookout import Lookout


class Board:
    """The board's side: a bell, and a count of the asks it is answering at once."""

    def __init__(self) -> None:
        self.bell = Bell()
        self.asks = 0
        self.most_at_once = 0
        self.at_once = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def wait(self, seen: int, timeout: float) -> int:
        with self._lock:
            self.asks += 1
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            if self.fail is not None:
                raise self.fail
            return self.bell.wait(seen, timeout)
        finally:
            with self._lock:
                self.at_once -= 1


def test_many_waiting_threads_ask_the_board_one_at_a_time_and_all_hear_the_ring() -> None:
    board = Board()
    lookout = Lookout(board.wait)
    lookout.wait(lookout.known, 0.01)  # first heard: the count the board started at
    seen = lookout.known
    heard: list[int] = []

    def slot() -> None:
        heard.append(lookout.wait(seen, 5))

    threads = [threading.Thread(target=slot) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    board.bell.ring()
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 2
    assert len(heard) == 16 and set(heard) == {lookout.known} and lookout.known != seen
    assert board.most_at_once == 1


def test_a_count_already_moved_returns_without_asking() -> None:
    board = Board()
    lookout = Lookout(board.wait)
    count = lookout.wait(lookout.known, 0.01)
    asks = board.asks
    assert lookout.wait(count - 1, 5) == count and board.asks == asks


def test_a_wait_with_no_ring_times_out_and_a_failed_ask_raises_to_its_asker() -> None:
    board = Board()
    lookout = Lookout(board.wait)
    seen = lookout.wait(lookout.known, 0.01)
    started = time.monotonic()
    assert lookout.wait(seen, 0.2) == seen
    assert time.monotonic() - started >= 0.2
    board.fail = ConnectionError("the board is gone")
    with pytest.raises(ConnectionError):
        lookout.wait(seen, 1)
    board.fail = None
    board.bell.ring()
    assert lookout.wait(seen, 1) != seen  # the next wait asks afresh
