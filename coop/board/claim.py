"""The planner claim: which planner instance plans the objective, until when.

Its invariants: one holder at a time; a claim lives while it is renewed within its TTL, and a
lapsed one is anybody's; a planner that is not the live holder is refused (`PlannerLost`), so
one whose claim lapsed in a partition cannot add to a board another plans. Renewals are not
journaled, only who claimed and released: a board restarted mid-run gives the last holder a
fresh TTL (`restore`), a board opened afresh gives the claim to nobody (`end`). Pure state:
the board passes the time in.
"""

from __future__ import annotations

from coop import constants as C
from coop.errors import CoopError


class PlannerLost(CoopError):
    """This planner's claim lapsed and another instance plans now."""


class PlannerClaim:
    def __init__(self, ttl: float = C.DEFAULT_PLANNER_TTL) -> None:
        self.ttl = ttl  # the run's --planner-ttl
        self._held: tuple[str, float] | None = None  # (instance, until)

    def holder(self, now: float) -> str | None:
        """The live holder (None once its claim lapsed)."""
        return self._held[0] if self._held and self._held[1] > now else None

    def owner(self) -> str | None:
        """The last instance that claimed it and did not release it, live or not."""
        return self._held[0] if self._held else None

    def take(self, instance: str, now: float) -> None:
        """`instance` claims or renews it for a TTL."""
        self._held = (instance, now + self.ttl)

    def release(self) -> None:
        self._held = None

    def restore(self, now: float) -> None:
        """A restarted board: the holder gets a fresh TTL to renew within."""
        if self._held is not None:
            self.take(self._held[0], now)

    def check(self, planner: str | None, now: float) -> None:
        """Raise PlannerLost unless `planner` (None: not a planner) holds the live claim."""
        if planner is None:
            return
        holder = self.holder(now)
        if holder != planner:
            raise PlannerLost(
                f"planner {planner} lost its claim (now {holder or 'nobody'}); "
                "another instance plans this objective"
            )
