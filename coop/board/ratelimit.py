"""The cluster-wide rate limit: two leaky buckets (requests and tokens per minute) that every
model call of the objective, on any node, draws from through the board.

Its invariant: over any minute, admitted requests stay within rpm and admitted tokens within
tpm (a single call larger than tpm is admitted once the bucket is empty, or it never would be).
"""

from __future__ import annotations


class RateBucket:
    def __init__(self, rpm: int, tpm: int, now: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._requests = 0.0
        self._tokens = 0.0
        self._at = now

    def acquire(self, tokens: int, now: float) -> float:
        """0 to go ahead now (the request is counted), else the seconds to wait before asking
        again. The buckets drain continuously at rpm/tpm."""
        rpm, tpm = self.rpm, self.tpm
        if not rpm and not tpm:
            return 0.0
        elapsed = now - self._at
        requests = max(0.0, self._requests - elapsed * rpm / 60) if rpm else 0.0
        used = max(0.0, self._tokens - elapsed * tpm / 60) if tpm else 0.0
        waits = [0.0]
        if rpm and requests + 1 > rpm:
            waits.append((requests + 1 - rpm) * 60 / rpm)
        if tpm and used + tokens > tpm and used > 0:
            waits.append((used + tokens - tpm) * 60 / tpm)
        wait = max(waits)
        if wait == 0.0:
            requests, used = requests + 1, used + tokens
        self._requests, self._tokens, self._at = requests, used, now
        return wait
