"""The planner's acknowledgements: which completions have been planned from.

Its invariant: every completion is acknowledged at most once, in the same journal event as the
tasks planned from it, so a completion is never planned twice nor skipped, across a planner's
death too. Concurrent creation calls acknowledge their batches out of order, so this holds a
prefix (every completion before it is acknowledged) and the set acknowledged beyond it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Acks:
    def __init__(self) -> None:
        self.prefix = 0
        self._beyond: set[int] = set()

    def __len__(self) -> int:
        return self.prefix + len(self._beyond)

    def __contains__(self, seq: int) -> bool:
        return seq < self.prefix or seq in self._beyond

    def ack(self, seqs: Iterable[int], completed: int) -> None:
        """Acknowledge these completions (sequence numbers below `completed`)."""
        self._beyond.update(s for s in seqs if self.prefix <= s < completed)
        while self.prefix in self._beyond:
            self._beyond.remove(self.prefix)
            self.prefix += 1

    def ack_upto(self, upto: int, completed: int) -> None:
        """Acknowledge every completion before `upto` (how journals before concurrent
        planning recorded it)."""
        self.ack(range(self.prefix, min(upto, completed)), completed)

    def unacked(self, since: int, completed: int) -> Iterator[int]:
        """Completions from `since` on that nobody has acknowledged, in order."""
        return (s for s in range(max(since, self.prefix), completed) if s not in self._beyond)
