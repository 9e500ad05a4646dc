"""The board's bells: how an idle worker or planner waits for the board to change, instead of
looking every so often.

A worker slot with nothing to lease slept and looked again, backing off to POLL_MAX, and so did
a planner with nothing in flight: each task added waited up to that long for a slot to notice
it, each completion for the planner to plan from it (measured on the suite's runs: a fifth of
their time). The board rings a bell when what a waiter waits for may have happened (`RINGS`:
a task may have become leasable, for workers; a task completed or failed, for the planner; the
run stopped, for both), and the waiter, in `Board.wait` on a board thread of its own beside the
single thread every other call runs on, looks again at once.

A bell is a counter: a caller passes the count it read before its last look, so a ring
between that look and the wait is never missed. A ring wakes every waiter of its bell; each
looks once, and those that find nothing wait again.
"""

from __future__ import annotations

import enum
import random
import threading

from coop.types import EventKind


class Wake(str, enum.Enum):
    """Who waits on a bell, and so which changes ring it."""

    WORK = "work"
    """Idle workers: a task may be leasable that was not, or the run stopped."""
    RESULTS = "results"
    """An idle planner: a task completed or failed, or the run stopped or reopened."""


RINGS: dict[Wake, frozenset[EventKind]] = {
    Wake.WORK: frozenset(
        {
            EventKind.ADDED,
            EventKind.APPROVED,
            EventKind.RELEASED,
            EventKind.EXPIRED,
            EventKind.FAILED,
            EventKind.STOPPING,
            EventKind.REOPENED,
        }
    ),
    Wake.RESULTS: frozenset(
        {EventKind.COMPLETED, EventKind.FAILED, EventKind.STOPPING, EventKind.REOPENED}
    ),
}
"""The events that ring each bell."""
WAIT_MAX = 5.0
"""The longest one wait holds a board thread, whatever its caller asked."""
GROUP = "waiters"
"""The board's Ray concurrency group that `Board.wait` runs in."""
WAITERS = 64
"""Board threads for waiting callers, beside the one that runs every other call. A process
waits through one of them however many of its slots are idle (`coop.board.lookout`); waits
beyond them queue, and run when one returns (at a ring, or at its timeout)."""


class Bell:
    def __init__(self) -> None:
        self._rung = random.getrandbits(31)  # a restarted board's count is not the old one
        self._changed = threading.Condition()

    def ring(self) -> None:
        with self._changed:
            self._rung += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """The count once it differs from `seen`, or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._rung != seen, min(timeout, WAIT_MAX))
            return self._rung
