"""One look-out per process for the board's bell (bell.py), however many of its threads wait.

A worker with 32 idle slots would hold 32 of the board's waiting threads, and a cluster of
such workers would queue behind each other. Instead the first thread to wait asks the board
(`ask`) and the others wait here for its answer; when it returns, every thread that waited
sees the new count, and the next one still waiting asks again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Lookout:
    def __init__(self, ask: Callable[[int, float], int]) -> None:
        """`ask(seen, timeout)`: the board's `wait`, for one bell."""
        self._ask = ask
        self._known = 0  # the newest count heard from the board
        self._asking = False
        self._heard = threading.Condition()

    @property
    def known(self) -> int:
        """The count to pass to `wait` after the next look at the board."""
        return self._known

    def wait(self, seen: int, timeout: float) -> int:
        """Once the board's count differs from `seen` (a `known` read before a look that found
        nothing), or after `timeout` seconds: the count known then."""
        deadline = time.monotonic() + timeout
        with self._heard:
            while self._known == seen and (left := deadline - time.monotonic()) > 0:
                if self._asking:
                    self._heard.wait(left)
                    continue
                self._asking = True
                self._heard.release()
                try:
                    count = self._ask(seen, left)
                finally:
                    self._heard.acquire()
                    self._asking = False
                    self._heard.notify_all()  # a new asker, if the count is unchanged
                self._known = count
            return self._known
