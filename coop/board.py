"""The board: one detached Ray actor per objective holding its task list.

A Ray actor runs one method at a time, so each method below is atomic; that alone removes
BabyAGI's `is_empty()`-then-`popleft()` race. The rest is bookkeeping BabyAGI lacked:

* leases with a time-to-live and a fencing token, so a dead worker's task comes back and a
  zombie's late completion is refused;
* ids that are never reused or renumbered, so results cannot overwrite each other;
* reordering that merges into the current list instead of replacing it, so tasks added, leased
  or completed while the model was thinking are neither lost nor resurrected;
* a planner cursor over completions, so the board knows when nothing is left to plan;
* a journal: every change is an event, written before it is applied (`_emit`) and replayed by
  the same handlers (`_on_*`) when the board is rebuilt, so replay cannot drift from life.

The class is plain Python: `cluster.named_actor` makes it an actor, and tests drive it directly
with a fake clock too.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from coop import cluster, journal
from coop import constants as C
from coop.config import RunSettings
from coop.journal import Event, Journal, JournalError, journal_path
from coop.metrics import BoardMetrics
from coop.text import normalize
from coop.types import (
    AddReport,
    CoopError,
    Kind,
    Lease,
    Objective,
    Outcome,
    Progress,
    Pulse,
    Reason,
    ReorderReport,
    Result,
    Snapshot,
    State,
    Task,
    Usage,
    WorkerStats,
)

log = logging.getLogger(__name__)

DURABLE = {"added", "completed", "failed", "stopping", "planned", "approved", "dropped"}
"""Events acknowledging paid work: committed with a full sync before anyone is told."""


class PlannerLost(CoopError):
    """This planner's claim lapsed and another instance plans now."""


@dataclass
class _Held:
    token: int
    worker: str
    expires: float


class Board:
    def __init__(
        self,
        objective_id: str,
        objective: str,
        settings: RunSettings,
        nonce: str,
        state_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        self.objective_id = objective_id
        self.objective = objective
        self.settings = settings
        self.nonce = nonce  # tells the creator of this actor apart from later openers
        self._clock = clock
        self.created = clock()
        self._tasks: dict[int, Task] = {}
        self._pending: list[int] = []
        self._not_before: dict[int, float] = {}  # failed tasks wait before their next attempt
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
        self._bucket = (0.0, 0.0, clock())  # requests, tokens, refilled at
        self._reserved: dict[int, tuple[int, float]] = {}  # budget held by in-flight tasks
        self._idle: dict[str, float] = {}  # workers turned away empty-handed, and when
        self._progress = Progress()
        self._unapproved: set[int] = set()  # pending tasks a person has not approved yet
        self._journal_ok = True
        self._metrics = BoardMetrics(objective_id)
        self._journal: Journal | None = None
        self.state_dir = state_dir
        if state_dir is not None:
            self._journal = Journal(
                journal_path(journal.state_dir(state_dir), objective_id),
                objective_id,
                create={"objective": objective, "settings": asdict(settings)},
                readonly=readonly,
            )
            self.created = self._journal.info.created
            self._replay()

    # -- events: the only way state changes ----------------------------------------------

    def __repr__(self) -> str:  # the dashboard's and the log prefix's name for this actor
        return cluster.actor_name(self.objective_id, "board")

    def _emit(self, event: str, /, **data: Any) -> None:
        if self._journal is not None:
            try:
                self._journal.append(event, data, durable=event in DURABLE)
            except JournalError:
                self._journal_ok = False  # refuse new leases until a write succeeds again
                raise
            self._journal_ok = True
        getattr(self, f"_on_{event}")(data)

    def _replay(self) -> None:
        assert self._journal is not None
        count = 0
        for event in self._journal.events():
            getattr(self, f"_on_{event.kind}")(event.data)
            count += 1
        if self._held:  # leases do not survive a restart: their tasks go back to the front
            if self._journal.readonly:
                self._on_expired({"ids": sorted(self._held)})
            else:
                self._emit("expired", ids=sorted(self._held))
        if count:
            log.info("board %s rebuilt from %d journal events", self.objective_id, count)

    def _on_added(self, d: dict[str, Any]) -> None:
        for tid, text, parent in d["tasks"]:
            self._tasks[tid] = Task(tid, text, parent)
            self._seen[normalize(text)] = tid
            self._pending.append(tid)
            self._next_id = max(self._next_id, tid + 1)
            if d.get("hold"):
                self._unapproved.add(tid)
        if d["tasks"]:
            self._version += 1
        self._progress.exact_duplicates += d.get("exact", 0)
        self._progress.near_duplicates += d.get("near", 0)
        if d.get("planned") is not None:
            self._on_planned({"upto": d["planned"]})

    def _on_leased(self, d: dict[str, Any]) -> None:
        tid = d["id"]
        self._reserved[tid] = (d.get("tokens", 0), d.get("cost", 0.0))
        self._pending.remove(tid)
        self._not_before.pop(tid, None)
        self._held[tid] = _Held(d["token"], d["worker"], d["expires"])
        self._latest_token[tid] = d["token"]
        self._next_token = max(self._next_token, d["token"] + 1)
        self._version += 1

    def _on_expired(self, d: dict[str, Any]) -> None:
        for tid in d["ids"]:
            del self._held[tid]
            self._reserved.pop(tid, None)
        self._pending[:0] = d["ids"]  # they were at the head when leased: put them back there
        self._version += 1

    def _take_back(self, tid: int) -> None:
        """Remove an owned task from wherever it sits (held, or requeued after expiry)."""
        if self._held.pop(tid, None) is None:
            self._pending.remove(tid)
        self._reserved.pop(tid, None)
        self._version += 1

    def _on_completed(self, d: dict[str, Any]) -> None:
        tid = d["id"]
        self._take_back(tid)
        self._done[tid] = d["token"]
        self._results.append(
            Result(tid, self._tasks[tid].text, d["text"], d["worker"], len(self._results), d["at"])
        )
        self._stats(d["worker"]).completed += 1

    def _on_failed(self, d: dict[str, Any]) -> None:
        tid = d["id"]
        self._take_back(tid)
        task = self._tasks[tid]
        task.attempts += 1
        task.last_error = d["error"]
        self._stats(d["worker"]).failed += 1
        if d["dead"]:
            self._dead.append(tid)
        else:
            self._pending.append(tid)
            self._not_before[tid] = d["retry_at"]

    def _on_released(self, d: dict[str, Any]) -> None:
        self._take_back(d["id"])
        self._pending.insert(0, d["id"])

    def _on_reordered(self, d: dict[str, Any]) -> None:
        first = d["first"]
        chosen = set(first)
        self._pending = first + [t for t in self._pending if t not in chosen]
        self._version += 1

    def _on_planned(self, d: dict[str, Any]) -> None:
        self._planned = max(self._planned, min(d["upto"], len(self._results)))

    def _on_stopping(self, d: dict[str, Any]) -> None:
        if self._state is State.RUNNING:
            self._state, self._reason, self._detail = (
                State.STOPPING,
                Reason(d["reason"]),
                d["detail"],
            )

    def _on_usage(self, d: dict[str, Any]) -> None:
        cost = self.settings.cost(d["kind"], d["prompt"], d["completion"])
        self._usage[d["kind"]].add(d["prompt"], d["completion"], cost)
        self._stats(d["worker"]).usage.add(d["prompt"], d["completion"], cost)
        self._metrics.call(d["kind"], d["prompt"] + d["completion"], cost, d.get("latency") or 0)

    def _on_approved(self, d: dict[str, Any]) -> None:
        self._unapproved.difference_update(d["ids"])

    def _on_dropped(self, d: dict[str, Any]) -> None:
        for tid in d["ids"]:
            self._unapproved.discard(tid)
            self._pending.remove(tid)  # a person's decision, kept in the journal
        self._version += 1

    def _on_progress(self, d: dict[str, Any]) -> None:
        for key in ("stalls", "replans", "repeating", "checks"):
            setattr(self._progress, key, d[key])

    def _on_planner(self, d: dict[str, Any]) -> None:
        pass  # a record of who planned when; the claim itself lives only while it is renewed

    # -- housekeeping run at the start of every call -------------------------------------

    def _settle(self) -> None:
        now = self._clock()
        expired = sorted(tid for tid, h in self._held.items() if h.expires <= now)
        if expired:
            self._emit("expired", ids=expired)
        finishing = self._state is State.STOPPING and not self._held
        if finishing:
            self._state = State.FINISHED
        if self._metrics.due(force=finishing):
            self._export()

    def _export(self) -> None:
        now = self._clock()
        tokens, cost = self._spent()
        left: dict[str, float] = {}
        if self.settings.max_tokens:
            left["tokens"] = self.settings.max_tokens - tokens
        if self.settings.max_cost:
            left["usd"] = self.settings.max_cost - cost
        left["tasks"] = self.settings.max_tasks - len(self._results)
        queue = sum(1 for t in self._pending if self._eligible(t, now))
        self._metrics.state(
            {
                "pending": len(self._pending),
                "awaiting_approval": len(self._unapproved),
                "leased": len(self._held),
                "completed": len(self._results),
                "dead": len(self._dead),
            },
            queue,
            len(self._held),
            left,
            self._progress.stalls,
        )

    def _stats(self, worker: str) -> WorkerStats:
        stats = self._workers.get(worker)
        if stats is None:
            stats = self._workers[worker] = WorkerStats(worker)
        return stats

    def _seen_now(self, worker: str) -> None:
        stats = self._stats(worker)
        stats.last_seen = self._clock()
        stats.first_seen = stats.first_seen or stats.last_seen

    def _stop(self, reason: Reason, detail: str = "") -> None:
        if self._state is State.RUNNING:
            self._emit("stopping", reason=reason.value, detail=detail)
        self._settle()

    # -- reading ------------------------------------------------------------------------

    def describe(self) -> Objective:
        self._settle()
        return Objective(
            self.objective_id, self.objective, self.created, self._state, self._reason, self.nonce
        )

    def run_settings(self) -> RunSettings:
        return self.settings

    def storage(self) -> str | None:
        """The state dir on the head node holding this objective's journal and memory."""
        return self.state_dir

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
            objective_id=self.objective_id,
            objective=self.objective,
            created=self.created,
            state=self._state,
            reason=self._reason,
            detail=self._detail,
            llm_label=self.settings.label,
            pending=[self._tasks[t] for t in self._pending],
            leased=[
                Lease(self._tasks[t], h.token, h.worker, h.expires - now)
                for t, h in self._held.items()
            ],
            completed=len(self._results),
            dead=[self._tasks[t] for t in self._dead],
            unplanned=len(self._results) - self._planned,
            workers=list(self._workers.values()),
            usage=dict(self._usage),
            planner=planner,
            progress=replace(self._progress),
            settings=self.settings,
            awaiting=len(self._unapproved),
        )

    # -- the planner's side ---------------------------------------------------------------

    def claim_planner(self, instance: str) -> str | None:
        """Take or renew the planner role; returns the live holder if it is someone else."""
        now = self._clock()
        if self._planner and self._planner[0] != instance and self._planner[1] > now:
            return self._planner[0]
        if not self._planner or self._planner[0] != instance:
            self._emit("planner", instance=instance, action="claimed")
        self._planner = (instance, now + C.PLANNER_TTL)
        self._seen_now(instance)
        return None

    def release_planner(self, instance: str) -> None:
        if self._planner and self._planner[0] == instance:
            self._emit("planner", instance=instance, action="released")
            self._planner = None

    def _check_planner(self, planner: str | None) -> None:
        if planner is None:
            return
        holder = self._planner[0] if self._planner and self._planner[1] > self._clock() else None
        if holder != planner:
            raise PlannerLost(
                f"planner {planner} lost its claim (now {holder or 'nobody'}); "
                "another instance plans this objective"
            )

    def add(
        self,
        texts: Iterable[str],
        parent: int | None = None,
        *,
        planner: str | None = None,
        planned: int | None = None,
        hold: bool = False,
        near_duplicates: int = 0,
    ) -> AddReport:
        """Append new tasks, rejecting any whose normalized text the board has seen.

        A planner passes its name and the completions this batch consumed (`planned`): the
        tasks and the acknowledgement land in one event, so a planner that dies mid-batch
        leaves the batch wholly unplanned, never half. It also passes how many proposals it
        rejected itself as near-duplicates, to be counted with the exact ones.
        """
        self._settle()
        self._check_planner(planner)
        rows: list[list[Any]] = []
        duplicates: list[str] = []
        repeats = 0
        keys: set[str] = set()
        for raw in texts:
            text = " ".join(raw.split())[: C.MAX_TASK_CHARS]
            key = normalize(text)
            if not key or key in self._seen or key in keys or self._state is not State.RUNNING:
                duplicates.append(raw)
                seen = self._seen.get(key)
                repeats += seen is not None and (seen in self._done or seen in self._dead)
                continue
            keys.add(key)
            rows.append([self._next_id + len(rows), text, parent])
        if rows or planned is not None or duplicates or near_duplicates:
            self._emit(
                "added",
                tasks=rows,
                planned=planned,
                exact=len(duplicates),
                near=near_duplicates,
                hold=hold,
            )
        return AddReport([replace(self._tasks[r[0]]) for r in rows], duplicates, repeats)

    def awaiting_approval(self) -> list[Task]:
        return [replace(self._tasks[t]) for t in self._pending if t in self._unapproved]

    def approve(self, ids: Sequence[int]) -> int:
        chosen = [t for t in ids if t in self._unapproved]
        if chosen:
            self._emit("approved", ids=chosen)
        return len(chosen)

    def drop(self, ids: Sequence[int]) -> int:
        """Remove tasks a person rejected; only tasks still awaiting approval can go."""
        chosen = [t for t in ids if t in self._unapproved]
        if chosen:
            self._emit("dropped", ids=chosen)
        return len(chosen)

    def events(self, since: int = 0, limit: int = 1000) -> list[Event]:
        """The tape: journal events after sequence number `since` (none without a journal)."""
        if self._journal is None:
            return []
        return list(itertools.islice(self._journal.events(since), limit))

    def recent_events(self, count: int) -> list[Event]:
        return self._journal.tail(count) if self._journal is not None else []

    def pulse(self) -> Pulse:
        self._settle()
        total = Usage.total(self._usage.values())
        return Pulse(
            self._state,
            len(self._results),
            len(self._pending),
            len(self._held),
            len(self._dead),
            self.settings.max_tasks,
            total.tokens,
            total.cost,
        )

    def record_progress(self, planner: str, progress: Progress) -> None:
        self._check_planner(planner)
        self._emit(
            "progress",
            stalls=progress.stalls,
            replans=progress.replans,
            repeating=progress.repeating,
            checks=progress.checks,
        )

    def task_texts(self) -> list[tuple[int, str]]:
        """Every task ever added, for a planner building its near-duplicate index."""
        return [(t.id, t.text) for t in self._tasks.values()]

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
        stale = version != self._version
        if first:
            self._emit("reordered", first=first)
        return ReorderReport(len(first), unknown, stale)

    def ack_planned(self, upto: int, planner: str | None = None) -> tuple[State, bool]:
        """The planner has consumed completions [0, upto). Returns the state, and whether the
        list has run dry: nothing pending, leased, or left to plan — the planner's cue to ask
        whether the objective is met."""
        self._settle()
        self._check_planner(planner)
        if upto > self._planned:
            self._emit("planned", upto=upto)
        dry = not self._pending and not self._held and self._planned == len(self._results)
        return self._state, dry

    def stop(self, reason: Reason = Reason.STOPPED, detail: str = "") -> State:
        self._settle()
        self._stop(reason, detail)
        return self._state

    # -- the workers' side ----------------------------------------------------------------

    def _eligible(self, tid: int, now: float) -> bool:
        """A pending task a worker may take now: approved, and past any retry delay."""
        return tid not in self._unapproved and self._not_before.get(tid, 0.0) <= now

    def _next_eligible(self, now: float) -> int | None:
        return next((tid for tid in self._pending if self._eligible(tid, now)), None)

    def _spent(self) -> tuple[int, float]:
        total = Usage.total(self._usage.values())
        return total.tokens, total.cost

    def _estimate(self) -> tuple[int, float]:
        """What one more execution will likely spend: the mean so far, or half the most a
        prompt and its answer may take before there is any."""
        done = self._usage[Kind.EXECUTION.value]
        if done.calls:
            return done.tokens // done.calls + 1, done.cost / done.calls
        tokens = (self.settings.max_prompt_tokens + self.settings.max_completion_tokens) // 2
        return tokens, self.settings.cost("execution", tokens, 0)

    def _over_budget(self, extra: tuple[int, float] | None) -> Reason | None:
        """With `extra`: the cap that one more task (on top of what is spent and reserved by
        in-flight tasks) would break. Without: the cap already reached by what is spent."""
        if not (self.settings.max_tokens or self.settings.max_cost):
            return None  # the common case, on every lease: nothing to add up
        tokens, cost = self._spent()
        if extra is not None:
            tokens += sum(r[0] for r in self._reserved.values()) + extra[0]
            cost += sum(r[1] for r in self._reserved.values()) + extra[1]

        def breaks(value: float, cap: float) -> bool:  # a plan may fill a cap; spending ends it
            return bool(cap) and (value > cap if extra is not None else value >= cap)

        if breaks(tokens, self.settings.max_tokens):
            return Reason.MAX_TOKENS
        if breaks(cost, self.settings.max_cost):
            return Reason.MAX_COST
        return None

    def lease(self, worker: str) -> Lease | State:
        """The next task, or the board's state when there is none to give (never raises).

        A lease reserves the budget its execution will likely spend; when that no longer
        fits under a cap, no new task starts, in-flight ones finish, and the objective stops
        with the cap as its reason. Refused too while the journal cannot be written: no work
        is handed out that could not be recorded.
        """
        self._settle()
        self._seen_now(worker)
        capped = len(self._results) + len(self._held) >= self.settings.max_tasks
        if self._state is not State.RUNNING or capped or not self._journal_ok:
            return self._state
        now = self._clock()
        tid = self._next_eligible(now)
        if tid is None:
            self._idle[worker] = now
            return self._state
        self._idle.pop(worker, None)
        estimate = self._estimate()
        if (cap := self._over_budget(estimate)) is not None:
            if not self._held:  # nothing in flight could free budget: this is the end
                self._stop(cap, "the next task would not fit in what is left")
            return self._state
        token = self._next_token
        try:
            self._emit(
                "leased",
                id=tid,
                token=token,
                worker=worker,
                expires=now + self.settings.lease_ttl,
                tokens=estimate[0],
                cost=estimate[1],
            )
        except JournalError as exc:
            log.error("%s", exc)
            return self._state
        return Lease(replace(self._tasks[tid]), token, worker, self.settings.lease_ttl)

    def heartbeat(self, worker: str, held: Sequence[tuple[int, int]]) -> list[int]:
        """Renew the leases `worker` holds; returns the task ids it has lost."""
        self._settle()
        self._seen_now(worker)
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
        return (
            self._latest_token.get(task_id) == token
            and task_id not in self._done
            and task_id not in self._dead
        )

    def complete(self, task_id: int, token: int, worker: str, text: str) -> Outcome:
        """Record a result. Returns only once it is in the journal; raises JournalError if it
        could not be written, and the worker keeps the task and tries again."""
        self._settle()
        self._seen_now(worker)
        if self._done.get(task_id) == token:
            return Outcome.DUPLICATE
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._emit(
            "completed",
            id=task_id,
            token=token,
            worker=worker,
            text=text[: C.MAX_RESULT_CHARS],
            at=self._clock(),
        )
        if len(self._results) >= self.settings.max_tasks:
            self._stop(Reason.MAX_TASKS)
        self._settle()
        return Outcome.ACCEPTED

    def complete_and_lease(
        self, task_id: int, token: int, worker: str, text: str
    ) -> tuple[Outcome, Lease | State]:
        """`complete`, then `lease` for the same worker, in one round trip: a busy worker's
        steady state costs one actor call per task instead of two. While another worker has
        recently found nothing to do, the next task is left for it instead, so a fast worker
        cannot starve idle ones."""
        outcome = self.complete(task_id, token, worker, text)
        recently = self._clock() - C.POLL_MAX * 2
        if any(w != worker and at > recently for w, at in self._idle.items()):
            return outcome, self._state
        return outcome, self.lease(worker)

    def fail(self, task_id: int, token: int, worker: str, error: str) -> Outcome:
        """Count a failed attempt: requeue at the back after a growing delay, or dead-letter
        after max_attempts."""
        self._settle()
        self._seen_now(worker)
        if not self._owns(task_id, token):
            return Outcome.STALE
        attempts = self._tasks[task_id].attempts + 1
        dead = attempts >= self.settings.max_attempts
        delay = C.RETRY_DELAY * 2 ** (attempts - 1)
        self._emit(
            "failed",
            id=task_id,
            worker=worker,
            error=error[:500],
            dead=dead,
            retry_at=self._clock() + delay,
        )
        self._settle()
        return Outcome.DEAD if dead else Outcome.REQUEUED

    def release(self, task_id: int, token: int, worker: str) -> Outcome:
        """Give a task back unattempted (a worker shutting down): it goes to the front."""
        self._settle()
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._emit("released", id=task_id)
        self._settle()
        return Outcome.REQUEUED

    def record_usage(
        self,
        worker: str,
        kind: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency: float = 0.0,
        task_id: int | None = None,
    ) -> None:
        """Settle a model call (its event is the call's line on the tape). Spending past a
        cap stops the objective (in-flight work finishes and is kept)."""
        self._settle()
        self._seen_now(worker)
        self._emit(
            "usage",
            worker=worker,
            kind=kind,
            prompt=prompt_tokens,
            completion=completion_tokens,
            latency=round(latency, 4),
            task=task_id,
        )
        if (cap := self._over_budget(None)) is not None:
            self._stop(cap, "budget spent")

    def acquire(self, tokens: int) -> float:
        """Cluster-wide rate limit: 0 to go ahead now (the request is counted), else the
        seconds to wait before asking again. Buckets refill continuously to rpm/tpm."""
        rpm, tpm = self.settings.rpm, self.settings.tpm
        if not rpm and not tpm:
            return 0.0
        now = self._clock()
        requests, used, at = self._bucket
        elapsed = now - at
        requests = max(0.0, requests - elapsed * rpm / 60) if rpm else 0.0
        used = max(0.0, used - elapsed * tpm / 60) if tpm else 0.0
        waits = [0.0]
        if rpm and requests + 1 > rpm:
            waits.append((requests + 1 - rpm) * 60 / rpm)
        if tpm and used + tokens > tpm and used > 0:
            waits.append((used + tokens - tpm) * 60 / tpm)
        wait = max(waits)
        if wait == 0.0:
            requests, used = requests + 1, used + tokens
        self._bucket = (requests, used, now)
        return wait
