"""The bell alone, and which of the board's changes ring it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from coop.board.bell import WAIT_MAX, Bell, Wake
from tests.support.board import Clock, leased, make_board


def test_a_wait_returns_at_once_when_the_count_moved_since_it_was_seen() -> None:
    bell = Bell()
    seen = bell.wait(-1, 0)
    bell.ring()
    started = time.monotonic()
    assert bell.wait(seen, 10) != seen
    assert time.monotonic() - started < 1


def test_a_wait_with_nothing_rung_times_out_with_the_same_count() -> None:
    bell = Bell()
    seen = bell.wait(-1, 0)
    started = time.monotonic()
    assert bell.wait(seen, 0.2) == seen
    assert 0.2 <= time.monotonic() - started < 2


def test_a_ring_wakes_every_waiter_long_before_its_timeout() -> None:
    bell = Bell()
    seen = bell.wait(-1, 0)
    heard: list[tuple[int, float]] = []

    def waiter() -> None:
        heard.append((bell.wait(seen, WAIT_MAX), time.monotonic()))

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    rung = time.monotonic()
    bell.ring()
    for t in threads:
        t.join(WAIT_MAX + 5)
    assert len(heard) == 5 and all(count != seen for count, _ in heard)
    assert max(at for _, at in heard) - rung < 1


def test_workers_are_rung_when_a_task_may_be_leasable_and_the_planner_at_a_result() -> None:
    clock = Clock()
    board = make_board(clock, max_attempts=3, lease_ttl=10)

    def rang(action: Callable[[], object]) -> set[Wake]:
        seen = {wake: board.wait(wake, -1, 0) for wake in Wake}
        action()
        return {wake for wake in Wake if board.wait(wake, seen[wake], 0) != seen[wake]}

    assert rang(lambda: board.add(["a", "b", "c", "d"])) == {Wake.WORK}
    first = leased(board)
    assert rang(lambda: leased(board)) == set()  # a lease frees nothing
    assert rang(lambda: board.complete(first.task.id, first.token, "w", "done")) == {Wake.RESULTS}
    second = leased(board)
    assert rang(lambda: board.fail(second.task.id, second.token, "w", "boom")) == set(Wake)
    third = leased(board)
    assert rang(lambda: board.release(third.task.id, third.token, "w")) == {Wake.WORK}
    clock.now += 11  # the lease taken in the second `rang` expires at the next call
    assert rang(lambda: board.pulse()) == {Wake.WORK}
    assert rang(lambda: board.add(["held"], hold=True)) == {Wake.WORK}  # before approval too
    assert rang(lambda: board.approve([t.id for t in board.awaiting_approval()])) == {Wake.WORK}
    assert rang(lambda: board.stop()) == set(Wake)
