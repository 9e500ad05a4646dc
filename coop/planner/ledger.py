"""The planner's progress ledger, in the spirit of Magentic-One's: a batch that adds no task
and whose results say nothing new is a stall; at `STALL_LIMIT` stalls the planner replans
from scratch, and after `MAX_REPLANS` fruitless replans the objective stops as stalled.
Batches that mostly re-propose finished work stop it as a loop; completion checks whose
reply cannot be read, `UNREADABLE_CHECKS` times in a row, stop it as stalled.

The ledger only counts and says what is due (a `Verdict`); the coordinator acts on it (a
board stop, a fresh plan) and records the counts on the board, so this is tested without
threads or a board."""

from __future__ import annotations

import enum

from coop import constants as C
from coop.types import Progress

UNREADABLE_CHECKS = 3
"""Completion checks in a row whose reply could not be read before the objective stops as
stalled: a model that cannot answer the check in JSON would otherwise be asked until a cap."""


class Verdict(enum.Enum):
    """What a batch's outcome calls for."""

    GO_ON = "go on"
    REPLAN = "replan"  # STALL_LIMIT stalls: a fresh plan, or the end if replans are spent
    LOOP = "loop"  # LOOP_BATCHES batches in a row only re-proposed finished work


class Ledger:
    """The counts behind the verdicts: `progress` (kept on the board, so status shows it and
    a successor inherits it) and the unreadable checks in a row (this planner's own)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or Progress()
        self.unread = 0

    def batch(self, progress: bool, proposed: int, repeats: int) -> Verdict:
        """A creation or fresh plan finished: `progress` (it added a task or its results said
        something new), of `proposed` proposals `repeats` only repeated finished work. A batch
        with progress pays one stall back."""
        p = self.progress
        p.stalls = max(0, p.stalls - 1) if progress else p.stalls + 1
        if proposed and not progress and 2 * repeats >= proposed:
            p.repeating += 1
        elif progress:
            p.repeating = 0
        if p.repeating >= C.LOOP_BATCHES:
            return Verdict.LOOP
        return Verdict.REPLAN if p.stalls >= C.STALL_LIMIT else Verdict.GO_ON

    @property
    def spent(self) -> bool:
        """Every fresh plan allowed has been made: the next stall ends the objective."""
        return self.progress.replans >= C.MAX_REPLANS

    def replanned(self) -> None:
        """A fresh plan starts: counted, and the stalls begin again from none."""
        self.progress.replans += 1
        self.progress.stalls = 0

    def checked(self, unreadable: bool) -> bool:
        """A completion check finished; whether its reply has now been unreadable too many
        times in a row."""
        self.progress.checks += 1
        self.unread = self.unread + 1 if unreadable else 0
        return self.unread >= UNREADABLE_CHECKS
