"""The planner's claim on its board, kept apart from planning: taken (or waited for, with
`--standby`), renewed by a heartbeat thread, released at the end, and declared lost when
another instance holds it or it went unrenewed for a whole TTL. The coordinator only reads
`lost`; nothing here knows about tasks or model calls, so it is tested on its own."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from coop import constants as C
from coop.board import BoardUnavailable
from coop.errors import CoopError

log = logging.getLogger(__name__)


class Claimable(Protocol):
    """The board calls a claim needs (`BoardClient` has them)."""

    def claim_planner(self, instance: str, timeout: float | None = None) -> str | None: ...

    def release_planner(self, planner: str) -> None: ...

    def give_up(self, cause: str) -> None: ...


class ClaimKeeper:
    """One instance's claim to plan one board. `ttl`: how long the board keeps a claim that is
    not renewed (renewed every third of it)."""

    def __init__(
        self, board: Claimable, name: str, stop: threading.Event, ttl: float = C.DEFAULT_PLANNER_TTL
    ) -> None:
        self.board = board
        self.name = name
        self.stop = stop
        self.ttl = ttl
        self.lost: str | None = None  # why the claim was lost; None while it is held
        self._done = threading.Event()  # released: the heartbeat stops
        self._renewing = threading.Lock()

    def claim(self, *, wait: bool) -> None:
        """Become the planner, or fail (or, with `wait`, stand by) while another one is."""
        announced = False
        while True:
            asked = time.monotonic()
            if (holder := self.board.claim_planner(self.name)) is None:
                break
            if not wait:
                raise CoopError(
                    f"another planner ({holder}) is running this objective; run "
                    "`coop join` to add workers, or `coop start --standby` to wait"
                )
            if not announced:
                log.info("standing by: %s plans this objective; taking over if it stops", holder)
                announced = True
            if self.stop.wait(self.ttl / 3):
                raise CoopError("stopped while standing by")
        keeper = threading.Thread(
            target=self._keep, args=(asked,), name="planner-claim", daemon=True
        )
        keeper.start()

    def release(self) -> None:
        """Give up the claim (kept until now: the answer is written under it). A board that
        cannot be reached lets it lapse on its own."""
        with self._renewing:
            self._done.set()
        if self.lost:
            return
        try:
            self.board.release_planner(self.name)
        except BoardUnavailable as exc:
            log.debug("planner claim not released (it lapses by itself): %s", exc)

    def _keep(self, renewed: float) -> None:
        """Renew the claim every third of its TTL until it is released. Another holder means
        the claim was lost. A claim left unrenewed for a whole TTL (`renewed`: when the last
        renewal that got through was sent) may be another instance's by now: this planner
        stops as well, at once, even while it cannot reach the board (a partition), rather
        than plan on a board it may no longer own; whatever it sent meanwhile is fenced out
        by the board."""
        while not self._done.wait(self.ttl / 3):
            sent = time.monotonic()
            try:
                with self._renewing:  # never renewed after `release`
                    if self._done.is_set():
                        return
                    holder = self.board.claim_planner(self.name, timeout=self.ttl / 3)
            except BoardUnavailable as exc:
                if time.monotonic() - renewed < self.ttl:
                    continue
                self.lost = (
                    f"this planner lost its claim: it could not renew it for "
                    f"{self.ttl:g}s ({exc.cause})"
                )
            else:
                if holder is None:
                    renewed = sent
                    continue
                self.lost = f"{holder} took over planning"
            self.board.give_up(f"{self.lost}; this planner stops")
            return
