"""Leases: who holds which task, until when, under which fencing token.

Its invariants: tokens only grow, so the newest lease on a task always has the highest token
and any holder of an older one is fenced out; a lease lives until its expiry unless renewed.
Pure state: the board passes the time in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass
class Held:
    token: int
    worker: str
    expires: float


class Leases:
    def __init__(self) -> None:
        self._held: dict[int, Held] = {}
        self._latest: dict[int, int] = {}  # task id -> newest token ever granted on it
        self.next_token = 1

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, tid: int) -> bool:
        return tid in self._held

    def items(self) -> Iterator[tuple[int, Held]]:
        return iter(list(self._held.items()))

    def ids(self) -> list[int]:
        return sorted(self._held)

    def grant(self, tid: int, token: int, worker: str, expires: float) -> None:
        self._held[tid] = Held(token, worker, expires)
        self._latest[tid] = token
        self.next_token = max(self.next_token, token + 1)

    def end(self, tid: int) -> bool:
        """The lease on `tid` ends (completed, failed, released, expired); False if none was
        held (it had expired and its task was requeued)."""
        return self._held.pop(tid, None) is not None

    def expired(self, now: float) -> list[int]:
        return sorted(tid for tid, h in self._held.items() if h.expires <= now)

    def renew(self, held: Sequence[tuple[int, int]], deadline: float) -> list[int]:
        """Extend the leases named by (task id, token) to `deadline`; returns the ids among
        them that are no longer held under that token."""
        lost = []
        for tid, token in held:
            h = self._held.get(tid)
            if h is None or h.token != token:
                lost.append(tid)
            else:
                h.expires = deadline
        return lost

    def extend(self, deadline: float) -> None:
        """Every lease held lives until `deadline` at least (a restarted board's grace)."""
        for held in self._held.values():
            held.expires = max(held.expires, deadline)

    def holder(self, tid: int) -> str:
        """The worker holding `tid` ("" if nobody does)."""
        held = self._held.get(tid)
        return held.worker if held else ""

    def is_newest(self, tid: int, token: int) -> bool:
        """Whether `token` is the newest lease ever granted on `tid` (held now or not)."""
        return self._latest.get(tid) == token
