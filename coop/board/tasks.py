"""The task list: every task ever added, the order workers take them in, and task identity.

Its invariants: an id is never reused or renumbered; a task is in exactly one of pending,
held by a lease (see leases.py), done or dead; a text the board has seen (normalized) is never
added again; reordering merges into the current order, so nothing is lost or brought back.
Pure state, no clock of its own and no journal: the board's desks decide and journal, then its
books call these methods to apply what was journaled; nothing else changes the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coop import constants as C
from coop.text import normalize
from coop.types import Task


@dataclass
class Screened:
    """What `TaskList.screen` made of proposed texts, before anything is added."""

    rows: list[tuple[int, str, int | None, list[str]]] = field(default_factory=list)  # to add
    duplicates: list[str] = field(default_factory=list)
    repeats: int = 0  # duplicates of work already done or dead-lettered


class TaskList:
    def __init__(self) -> None:
        self.tasks: dict[int, Task] = {}
        self.pending: list[int] = []
        self.not_before: dict[int, float] = {}  # failed tasks wait before their next attempt
        self.unapproved: set[int] = set()  # pending tasks a person has not approved yet
        self.done: dict[int, int] = {}  # task id -> the lease token it was completed under
        self.dead: list[int] = []
        self.seen: dict[str, int] = {}  # normalized text -> task id
        self.next_id = 1
        self.version = 0  # moves whenever the pending order or the set of open tasks changes

    # -- adding ---------------------------------------------------------------------------

    def screen(
        self,
        texts: Iterable[str],
        parent: int | None,
        *,
        accepting: bool,
        needs: Sequence[Sequence[str]] = (),
    ) -> Screened:
        """Split proposals (with what each needs) into new rows and duplicates (of any task
        ever seen, or of an earlier proposal of the same call). Nothing changes until `add`."""
        out = Screened()
        keys: set[str] = set()
        for i, raw in enumerate(texts):
            text = " ".join(raw.split())[: C.MAX_TASK_CHARS]
            key = normalize(text)
            if not key or key in self.seen or key in keys or not accepting:
                out.duplicates.append(raw)
                seen = self.seen.get(key)
                out.repeats += seen is not None and self.finished(seen)
                continue
            keys.add(key)
            wants = sorted({n.strip().lower() for n in needs[i] if n.strip()}) if needs else []
            out.rows.append((self.next_id + len(out.rows), text, parent, wants))
        return out

    def add(self, rows: Sequence[Sequence[Any]], *, hold: bool) -> None:
        """Add screened rows (id, text, parent[, needs]), as journaled."""
        for tid, text, parent, *needs in rows:
            self.tasks[tid] = Task(tid, text, parent, needs=list(needs[0]) if needs else [])
            self.seen[normalize(text)] = tid
            self.pending.append(tid)
            self.next_id = max(self.next_id, tid + 1)
            if hold:
                self.unapproved.add(tid)
        if rows:
            self.version += 1

    # -- leasing --------------------------------------------------------------------------

    def eligible(self, tid: int, now: float) -> bool:
        """A pending task a worker may take now: approved, and past any retry delay."""
        return tid not in self.unapproved and self.not_before.get(tid, 0.0) <= now

    def next_eligible(self, now: float, fits: Callable[[Task], bool] | None = None) -> int | None:
        """The first pending task a worker may take now (and, with `fits`, can do)."""
        return next(
            (
                tid
                for tid in self.pending
                if self.eligible(tid, now) and (fits is None or fits(self.tasks[tid]))
            ),
            None,
        )

    def eligible_count(self, now: float) -> int:
        return sum(1 for t in self.pending if self.eligible(t, now))

    def take(self, tid: int) -> None:
        """A pending task leaves the list for a lease."""
        self.pending.remove(tid)
        self.not_before.pop(tid, None)
        self.version += 1

    def put_front(self, ids: Sequence[int]) -> None:
        """Tasks whose lease ended unfinished: they were at the head when leased."""
        self.pending[:0] = ids
        self.version += 1

    def retry_later(self, tid: int, at: float) -> None:
        self.pending.append(tid)
        self.not_before[tid] = at

    def reclaim(self, tid: int, *, held: bool) -> None:
        """An owned task comes back to be finished or requeued: from its lease (`held`), or
        from the pending list its expired lease had put it back on."""
        if not held:
            self.pending.remove(tid)
        self.version += 1

    def complete(self, tid: int, token: int) -> None:
        """A reclaimed task is done, under the lease `token`."""
        self.done[tid] = token

    def fail(self, tid: int, error: str, *, dead: bool, retry_at: float) -> None:
        """A reclaimed task's attempt failed: dead-lettered, or pending again after `retry_at`."""
        task = self.tasks[tid]
        task.attempts += 1
        task.last_error = error
        if dead:
            self.dead.append(tid)
        else:
            self.retry_later(tid, retry_at)

    def release(self, tid: int) -> None:
        """A reclaimed task given back unattempted: first in line again."""
        self.pending.insert(0, tid)

    def finished(self, tid: int) -> bool:
        return tid in self.done or tid in self.dead

    # -- ordering and a person's decisions --------------------------------------------------

    def merge_order(self, order: Sequence[int]) -> tuple[list[int], int]:
        """The ids of `order` still pending, deduplicated, and how many ids were never seen."""
        pending = set(self.pending)
        first: list[int] = []
        unknown = 0
        for tid in order:
            if tid in pending and tid not in first:
                first.append(tid)
            elif tid not in self.tasks:
                unknown += 1
        return first, unknown

    def reorder(self, first: Sequence[int]) -> None:
        """Put `first` at the head; every other pending task keeps its relative place."""
        chosen = set(first)
        self.pending = [*first, *(t for t in self.pending if t not in chosen)]
        self.version += 1

    def awaiting(self, ids: Sequence[int]) -> list[int]:
        return [t for t in ids if t in self.unapproved]

    def approve(self, ids: Sequence[int]) -> None:
        self.unapproved.difference_update(ids)

    def drop(self, ids: Sequence[int]) -> None:
        for tid in ids:
            self.unapproved.discard(tid)
            self.pending.remove(tid)  # a person's decision, kept in the journal
        self.version += 1
