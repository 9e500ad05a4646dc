"""The worker roster: every instance the board has heard from, what it did, what it can do,
and who is live.

Its invariants: an instance is counted under one name from its first call on; it is live while
it was heard from within a lease's time (what the planner plans for); its seat (slots,
capabilities, sandbox) is what its last heartbeat said; a worker turned away with nothing to
do is marked idle until it is next given a task. The counters are rebuilt from the journal;
sightings and seats are not journaled (a restarted board learns them again from the next
heartbeats). Pure state: the board passes the time in.
"""

from __future__ import annotations

from collections.abc import Iterable

from coop.types import Seat, WorkerStats


class Roster:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerStats] = {}
        self._idle: dict[str, float] = {}  # workers turned away empty-handed, and when

    def all(self) -> list[WorkerStats]:
        return list(self._workers.values())

    def stats(self, worker: str) -> WorkerStats:
        """Its counters (made on first mention, from a journal event or a call)."""
        stats = self._workers.get(worker)
        if stats is None:
            stats = self._workers[worker] = WorkerStats(worker)
        return stats

    def seen(self, worker: str, now: float) -> None:
        stats = self.stats(worker)
        stats.last_seen = now
        stats.first_seen = stats.first_seen or now

    def seat(self, worker: str, seat: Seat) -> None:
        stats = self.stats(worker)
        stats.slots, stats.caps, stats.sandbox = seat.slots, list(seat.caps), seat.sandbox

    def live(self, now: float, within: float) -> list[WorkerStats]:
        """Workers heard from in the last `within` seconds."""
        return [w for w in self._workers.values() if w.last_seen >= now - within]

    def lacking(
        self, needs: Iterable[tuple[int, list[str]]], now: float, within: float
    ) -> dict[int, list[str]]:
        """Of tasks (id, what it needs), those no live worker with slots can do, and for
        each what every worker lacks."""
        kits = [set(w.caps) for w in self.live(now, within) if w.slots]
        lacking: dict[int, list[str]] = {}
        for tid, wants in needs:
            want = set(wants)
            if want and not any(want <= kit for kit in kits):
                lacking[tid] = sorted(want - set().union(*kits)) or sorted(want)
        return lacking

    def idle(self, worker: str, now: float) -> None:
        self._idle[worker] = now

    def busy(self, worker: str) -> None:
        self._idle.pop(worker, None)

    def others_idle(self, worker: str, since: float) -> bool:
        """Whether a worker other than `worker` was turned away empty-handed after `since`."""
        return any(w != worker and at > since for w, at in self._idle.items())
