"""The board: one detached Ray actor per objective holding its task list.

A Ray actor runs one method at a time, so each method below is atomic; that alone removes
BabyAGI's `is_empty()`-then-`popleft()` race. The rest is bookkeeping BabyAGI lacked:

* leases with a time-to-live and a fencing token, so a dead worker's task comes back and a
  zombie's late completion is refused;
* ids that are never reused or renumbered, so results cannot overwrite each other;
* reordering that merges into the current list instead of replacing it, so tasks added, leased
  or completed while the model was thinking are neither lost nor resurrected;
* a planner cursor over completions, so the board knows when nothing is left to plan.

The class is plain Python: `cluster.named_actor` makes it an actor, and tests can also drive
it directly with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from coop import constants as C
from coop.config import RunSettings
from coop.text import normalize
from coop.types import (
    AddReport,
    Kind,
    Lease,
    Objective,
    Outcome,
    Reason,
    ReorderReport,
    Result,
    Snapshot,
    State,
    Task,
    Usage,
    WorkerStats,
)


@dataclass
class _Held:
    token: int
    worker: str
    expires: float


class Board:
    def __init__(self, objective_id: str, objective: str, settings: RunSettings, nonce: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.objective_id = objective_id
        self.objective = objective
        self.settings = settings
        self.nonce = nonce  # tells the creator of this actor apart from later openers
        self._clock = clock
        self.created = clock()
        self._tasks: dict[int, Task] = {}
        self._pending: list[int] = []
        self._held: dict[int, _Held] = {}
        self._latest_token: dict[int, int] = {}
        self._results: list[Result] = []
        self._done: dict[int, int] = {}  # task id -> token it was completed under
        self._dead: list[int] = []
        self._seen: dict[str, int] = {}
        self._next_id = 1
        self._next_token = 1
        self._version = 0
        self._planned = 0  # completions the planner has consumed
        self._state = State.RUNNING
        self._reason: Reason | None = None
        self._detail = ""
        self._planner: tuple[str, float] | None = None
        self._workers: dict[str, WorkerStats] = {}
        self._usage: dict[str, Usage] = {k.value: Usage() for k in Kind}

    # -- housekeeping run at the start of every call -------------------------------------

    def _settle(self) -> None:
        now = self._clock()
        expired = [tid for tid, h in self._held.items() if h.expires <= now]
        for tid in expired:
            del self._held[tid]
        if expired:  # they were at the head of the list when leased: put them back there
            self._pending[:0] = sorted(expired)
            self._version += 1
        if self._state is State.STOPPING and not self._held:
            self._state = State.FINISHED

    def _worker(self, worker: str) -> WorkerStats:
        stats = self._workers.get(worker)
        if stats is None:
            stats = self._workers[worker] = WorkerStats(worker)
        stats.last_seen = self._clock()
        return stats

    def _stop(self, reason: Reason, detail: str = "") -> None:
        if self._state is State.RUNNING:
            self._state, self._reason, self._detail = State.STOPPING, reason, detail
        self._settle()

    # -- reading ------------------------------------------------------------------------

    def describe(self) -> Objective:
        self._settle()
        return Objective(self.objective_id, self.objective, self.created, self._state,
                         self._reason, self.nonce)

    def run_settings(self) -> RunSettings:
        return self.settings

    def state(self) -> tuple[State, Reason | None, str]:
        self._settle()
        return self._state, self._reason, self._detail

    def results(self, since: int = 0, limit: int | None = None) -> list[Result]:
        """Completions in order, from sequence number `since` on."""
        end = None if limit is None else since + limit
        return self._results[since:end]

    def pending_window(self, limit: int) -> tuple[int, list[Task]]:
        """The head of the pending list and the version it was read at."""
        self._settle()
        return self._version, [replace(self._tasks[t]) for t in self._pending[:limit]]

    def snapshot(self) -> Snapshot:
        self._settle()
        now = self._clock()
        planner = self._planner[0] if self._planner and self._planner[1] > now else None
        return Snapshot(
            objective_id=self.objective_id, objective=self.objective, created=self.created,
            state=self._state, reason=self._reason, detail=self._detail,
            llm_label=self.settings.label,
            pending=[self._tasks[t] for t in self._pending],
            leased=[Lease(self._tasks[t], h.token, h.worker, h.expires - now)
                    for t, h in self._held.items()],
            completed=len(self._results), dead=[self._tasks[t] for t in self._dead],
            unplanned=len(self._results) - self._planned,
            workers=list(self._workers.values()), usage=dict(self._usage), planner=planner)

    # -- the planner's side ---------------------------------------------------------------

    def claim_planner(self, instance: str) -> str | None:
        """Take or renew the planner role; returns the live holder if it is someone else."""
        now = self._clock()
        if self._planner and self._planner[0] != instance and self._planner[1] > now:
            return self._planner[0]
        self._planner = (instance, now + C.PLANNER_TTL)
        return None

    def release_planner(self, instance: str) -> None:
        if self._planner and self._planner[0] == instance:
            self._planner = None

    def add(self, texts: Iterable[str], parent: int | None = None) -> AddReport:
        """Append new tasks, rejecting any whose normalized text the board has seen."""
        self._settle()
        added: list[Task] = []
        duplicates: list[str] = []
        for raw in texts:
            text = " ".join(raw.split())[: C.MAX_TASK_CHARS]
            key = normalize(text)
            if not key or key in self._seen or self._state is not State.RUNNING:
                duplicates.append(raw)
                continue
            task = Task(self._next_id, text, parent)
            self._next_id += 1
            self._tasks[task.id] = task
            self._seen[key] = task.id
            self._pending.append(task.id)
            added.append(replace(task))
        if added:
            self._version += 1
        return AddReport(added, duplicates)

    def reorder(self, version: int, order: Sequence[int]) -> ReorderReport:
        """Put `order` first; every other pending task keeps its relative place after them.

        Ids no longer pending (leased or completed meanwhile) are skipped; ids never seen are
        counted as invented and ignored. Nothing is added or dropped, whatever `order` holds.
        """
        self._settle()
        pending = set(self._pending)
        first: list[int] = []
        unknown = 0
        for tid in order:
            if tid in pending and tid not in first:
                first.append(tid)
            elif tid not in self._tasks:
                unknown += 1
        chosen = set(first)
        self._pending = first + [t for t in self._pending if t not in chosen]
        self._version += 1
        return ReorderReport(len(first), unknown, stale=version != self._version - 1)

    def ack_planned(self, upto: int) -> State:
        """The planner has consumed completions [0, upto); the objective is done when that
        was the last of them and nothing is pending or leased."""
        self._planned = max(self._planned, min(upto, len(self._results)))
        self._settle()
        if (self._state is State.RUNNING and not self._pending and not self._held
                and self._planned == len(self._results)):
            self._stop(Reason.DONE)
        return self._state

    def stop(self, reason: Reason = Reason.STOPPED, detail: str = "") -> State:
        self._stop(reason, detail)
        return self._state

    # -- the workers' side ----------------------------------------------------------------

    def lease(self, worker: str) -> Lease | State:
        """The next task, or the board's state when there is none to give (never raises)."""
        self._settle()
        self._worker(worker)
        capped = len(self._results) + len(self._held) >= self.settings.max_tasks
        if self._state is not State.RUNNING or capped or not self._pending:
            return self._state
        tid = self._pending.pop(0)
        token = self._next_token
        self._next_token += 1
        ttl = self.settings.lease_ttl
        self._held[tid] = _Held(token, worker, self._clock() + ttl)
        self._latest_token[tid] = token
        self._version += 1
        return Lease(replace(self._tasks[tid]), token, worker, ttl)

    def heartbeat(self, worker: str, held: Sequence[tuple[int, int]]) -> list[int]:
        """Renew the leases `worker` holds; returns the task ids it has lost."""
        self._settle()
        self._worker(worker)
        lost = []
        deadline = self._clock() + self.settings.lease_ttl
        for tid, token in held:
            h = self._held.get(tid)
            if h is None or h.token != token:
                lost.append(tid)
            else:
                h.expires = deadline
        return lost

    def _owns(self, task_id: int, token: int) -> bool:
        """True when `token` is the newest lease on a task that is not finished."""
        return (self._latest_token.get(task_id) == token and task_id not in self._done
                and task_id not in self._dead)

    def _take_back(self, task_id: int) -> None:
        """Remove an owned task from wherever it sits (held, or requeued after expiry)."""
        if self._held.pop(task_id, None) is None:
            self._pending.remove(task_id)
        self._version += 1

    def complete(self, task_id: int, token: int, worker: str, text: str) -> Outcome:
        self._settle()
        if self._done.get(task_id) == token:
            return Outcome.DUPLICATE
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._take_back(task_id)
        self._done[task_id] = token
        result = Result(task_id, self._tasks[task_id].text, text[: C.MAX_RESULT_CHARS], worker,
                        len(self._results), self._clock())
        self._results.append(result)
        self._worker(worker).completed += 1
        if len(self._results) >= self.settings.max_tasks:
            self._stop(Reason.MAX_TASKS)
        self._settle()
        return Outcome.ACCEPTED

    def fail(self, task_id: int, token: int, worker: str, error: str) -> Outcome:
        """Count a failed attempt: requeue at the back, or dead-letter after max_attempts."""
        self._settle()
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._take_back(task_id)
        task = self._tasks[task_id]
        task.attempts += 1
        task.last_error = error[:500]
        self._worker(worker).failed += 1
        if task.attempts >= self.settings.max_attempts:
            self._dead.append(task_id)
            outcome = Outcome.DEAD
        else:
            self._pending.append(task_id)
            outcome = Outcome.REQUEUED
        self._settle()
        return outcome

    def release(self, task_id: int, token: int, worker: str) -> Outcome:
        """Give a task back unattempted (a worker shutting down): it goes to the front."""
        self._settle()
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._take_back(task_id)
        self._pending.insert(0, task_id)
        self._settle()
        return Outcome.REQUEUED

    def record_usage(self, worker: str, kind: str, prompt_tokens: int,
                     completion_tokens: int) -> None:
        self._usage[kind].add(prompt_tokens, completion_tokens)
        self._worker(worker).usage.add(prompt_tokens, completion_tokens)
