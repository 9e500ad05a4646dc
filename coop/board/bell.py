"""The board's bell: how an idle worker waits for work instead of looking every so often.

A worker slot with nothing to lease used to sleep and look again, backing off to POLL_MAX:
each task the planner added waited up to that long for a slot to notice it, and a run spent
about a fifth of its time so (measured on the suite's runs). The board rings its bell when a
task may have become leasable or the run stopped, and an idle caller waits on it (one board
thread per waiting process, `Board.wait_for_work`, beside the single thread every other call
runs on) and leases as soon as it rings.

The bell is a counter: a caller passes the count it saw before its last look, so a ring
between that look and the wait is never missed. Ringing wakes every waiter; each then leases
once, and those that find nothing wait again.
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
