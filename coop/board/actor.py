"""The board: one detached Ray actor per objective holding its task list.

A Ray actor runs one method at a time, so each method below is atomic; that alone removes
BabyAGI's `is_empty()`-then-`popleft()` race. The rest is bookkeeping BabyAGI lacked, each
concept a part with its own invariant:

* the task list (tasks.py): ids never reused or renumbered, duplicates turned away, reordering
  merged into the current list so tasks added, leased or completed meanwhile are neither lost
  nor resurrected;
* leases (leases.py) with a time-to-live and a fencing token, so a dead worker's task comes
  back and a zombie's late completion is refused;
* the budget (budget.py) and the rate limit (ratelimit.py), enforced for the whole cluster;
* a planner cursor over completions, so the board knows when nothing is left to plan;
* a journal: every change is a typed event (coop/events.py), written before it is applied
  (`_emit`) and replayed by the same handlers (`_on_*`, each taking its own event type) when
  the board is rebuilt, so replay cannot drift from life.

The class is plain Python: `cluster.named_actor` makes it an actor, and `BoardClient.local`
drives it in-process (tests, and the read-only journal view).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from coop import cluster, journal
from coop import constants as C
from coop import events as ev
from coop.board.acks import Acks
from coop.board.answers import Answers
from coop.board.budget import Budget
from coop.board.claim import PlannerClaim
from coop.board.files import BadPath, Files, clean
from coop.board.leases import Leases
from coop.board.ledger import Ledger
from coop.board.ratelimit import RateBucket
from coop.board.roster import Roster
from coop.board.tasks import TaskList
from coop.board.toolstats import ToolTally
from coop.config import RunSettings
from coop.journal import Event, Journal, JournalError, journal_path
from coop.metrics import BoardMetrics
from coop.secrets import scrub_data
from coop.types import (
    AddReport,
    Answer,
    EventKind,
    Kind,
    Lease,
    Objective,
    Outcome,
    PlanView,
    Progress,
    Pulse,
    Reason,
    ReorderReport,
    Replays,
    Result,
    Seat,
    Snapshot,
    State,
    Step,
    StepKind,
    Task,
    Usage,
    WorkerStats,
)

log = logging.getLogger(__name__)


CRASH_ENV = "COOP_TEST_BOARD_CRASH"
"""The test build's fault hook: "<dir>:<method>,<method>…" makes the board's process die once
per named method, after the call's transaction commits and before its reply leaves; the dir
keeps which have died (a restarted board does not die again on the retried call)."""


def _fault_hook() -> frozenset[str]:
    """The methods `CRASH_ENV` names, read once when the board starts; none in a real run."""
    where, _, methods = os.environ.get(CRASH_ENV, "").partition(":")
    return frozenset(m for m in methods.split(",") if m and where)


def _crash_once(methods: frozenset[str], method: str) -> None:
    marker = Path(os.environ[CRASH_ENV].partition(":")[0]) / method
    if not marker.exists():
        marker.touch()
        os._exit(1)


NO_ROOM = "the next task would not fit in what is left"
"""Why a run ended at a cap while it still had work or a question to ask."""


class Board:
    MUTATING = frozenset(
        {
            "add",
            "approve",
            "drop",
            "record_progress",
            "record_unreadable",
            "reorder",
            "amend",
            "record_answer",
            "stop",
            "lease",
            "heartbeat",
            "complete",
            "complete_and_lease",
            "fail",
            "release",
            "record_usage",
            "step",
            "replayed",
            "write_file",
            "claim_planner",
            "release_planner",
        }
    )
    """The calls that change the board: each carries a request id (`invoke`)."""

    def __init__(
        self,
        objective_id: str,
        objective: str,
        settings: RunSettings,
        nonce: str,
        state_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        restarted: bool | None = None,
    ) -> None:
        """`restarted`: this board takes over from one whose process died mid-run (default:
        whether Ray restarted this actor), so the planner claim and the leases held then come
        back, each with a fresh grace period, instead of ending."""
        self.objective_id = objective_id
        self.objective = objective
        self._settings = settings  # as created: a rebuild replays the amendments on them
        self.nonce = nonce  # tells the creator of this actor apart from later openers
        self.readonly = readonly
        self._clock = clock
        self.created = clock()
        self._metrics = BoardMetrics(objective_id)
        self._handlers: dict[EventKind, Callable[[Any], None]] = {  # each takes its own kind
            kind: getattr(self, f"_on_{kind.value}") for kind in EventKind
        }
        self._crash_after = _fault_hook()
        self._reset()
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
            self._replay(cluster.restarted() if restarted is None else restarted)

    def _reset(self) -> None:
        """Every part empty, as before the first event: the journal's replay fills them."""
        self.settings = settings = self._settings
        self._tasks = TaskList()
        self._leases = Leases()
        self._budget = Budget(settings)
        self._bucket = RateBucket(settings.rpm, settings.tpm, self._clock())
        self._results: list[Result] = []
        self._acks = Acks()  # completions the planner has planned from
        self._state = State.RUNNING
        self._reason: Reason | None = None
        self._detail = ""
        self._claim = PlannerClaim()
        self._roster = Roster()
        self._progress = Progress()
        self._answers = Answers()
        self._files = Files()
        self._tools = ToolTally()
        self._ledger = Ledger()
        self._tries: dict[int, int] = {}  # task id -> leases granted on it
        self._replays = Replays()
        self._journal_ok = True

    def __repr__(self) -> str:  # the dashboard's and the log prefix's name for this actor
        return cluster.actor_name(self.objective_id, "board")

    # -- events: the only way state changes ----------------------------------------------

    def _emit(self, event: ev.Event) -> None:
        data = ev.encode(event)
        scrubbed = scrub_data(data)  # what a tool, a model or a page let by is not kept
        if scrubbed != data:
            event = ev.decode(event.KIND, scrubbed)
        if self._journal is not None:
            try:
                self._journal.append(event.KIND, scrubbed)
            except JournalError:
                self._journal_ok = False  # refuse new leases until a write succeeds again
                raise
            self._journal_ok = True
        self._handlers[event.KIND](event)

    def _replay(self, restarted: bool) -> None:
        """Rebuild from the journal. The claim and leases held when the journal ends either
        come back with a fresh grace period (`restarted`: their holders may be alive, waiting
        on this board) or end: a fresh board after a whole-cluster restart, or a reader."""
        assert self._journal is not None
        count = 0
        for event in self._journal.events():
            self._handlers[event.kind](ev.decode(event.kind, event.data))
            count += 1
        now = self._clock()
        if restarted and not self.readonly:
            self._claim.restore(now)
            self._leases.extend(now + self.settings.lease_ttl)
        else:
            self._claim.release()
            held = self._leases.ids()
            if held:  # their tasks go back to the front
                if self._journal.readonly:
                    self._on_expired(ev.Expired(held))
                else:
                    self._emit(ev.Expired(held))
        if count:
            log.info("board %s rebuilt from %d journal events", self.objective_id, count)

    # -- calls: each one transaction, answered once -----------------------------------------

    def invoke(self, rid: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run the board's `method`, as the call with request id `rid` (made once by its
        client; "" for reads). Its events and its reply commit together: a call Ray retries
        after this board's process died is answered with its first reply, its effect counted
        once; one whose events never committed runs afresh (its process took them along)."""
        call = getattr(self, method)
        if not rid or self._journal is None or self.readonly:
            return call(*args, **kwargs)
        done, reply = self._journal.reply(rid)
        if done:
            return reply
        self._journal.begin()
        try:
            reply = call(*args, **kwargs)
        except JournalError:
            # all or nothing: a completion carries its task's usage, and its worker's retry
            # (a new call) must not charge what a half-written first try kept
            self._journal.rollback()
            self._rebuild()
            raise
        except BaseException:
            self._end_call("", None)  # what it applied is kept; a failure is not a reply
            raise
        self._end_call(rid, reply)
        if method in self._crash_after:  # the test build's fault hook; see `_fault_hook`
            _crash_once(self._crash_after, method)
        return reply

    def _end_call(self, rid: str, reply: Any) -> None:
        """Commit a call; if its events could not all be committed, what this board holds is
        no longer its journal's: it is rebuilt from the journal (leases and claim kept, their
        holders are alive) and the call fails."""
        assert self._journal is not None
        try:
            if self._journal.commit(rid, reply):
                return
            cause = JournalError(f"cannot write the journal {self._journal.path}: rolled back")
        except JournalError as exc:
            cause = exc
        self._rebuild()
        raise cause

    def _rebuild(self) -> None:
        """What this board holds is no longer its journal's: hold what the journal holds
        (leases and claim kept, their holders are alive)."""
        self._reset()
        self._replay(restarted=True)
        self._journal_ok = False  # refuse new leases until a write succeeds again

    def _on_added(self, e: ev.Added) -> None:
        self._tasks.add(e.tasks, hold=e.hold)
        self._progress.exact_duplicates += e.exact
        self._progress.near_duplicates += e.near
        for _, why in e.refused:
            self._count(self._progress.refused, why)
        if e.planned is not None:
            self._acks.ack(e.planned, len(self._results))
        if e.planned_upto is not None:
            self._acks.ack_upto(e.planned_upto, len(self._results))

    def _on_leased(self, e: ev.Leased) -> None:
        self._budget.reserve(e.id, e.tokens, e.cost)
        self._tasks.take(e.id)
        self._leases.grant(e.id, e.token, e.worker, e.expires)
        self._tries[e.id] = self._tries.get(e.id, 0) + 1

    def _on_expired(self, e: ev.Expired) -> None:
        for tid in e.ids:
            self._leases.end(tid)
            self._budget.unreserve(tid)
        self._tasks.put_front(e.ids)

    def _take_back(self, tid: int) -> None:
        """Remove an owned task from wherever it sits (held, or requeued after expiry). A call
        its worker still had in flight was reported by that worker: it charges nothing."""
        self._tasks.reclaim(tid, held=self._leases.end(tid))
        self._budget.unreserve(tid)
        self._ledger.landed(tid)

    def _on_completed(self, e: ev.Completed) -> None:
        self._take_back(e.id)
        self._tasks.complete(e.id, e.token)
        self._ledger.forget(e.id)
        text = self._tasks.tasks[e.id].text
        seq = len(self._results)
        self._results.append(Result(e.id, text, e.text, e.worker, seq, e.at, e.flaw))
        if e.flaw:
            self._count(self._progress.flawed, e.flaw)
        self._stats(e.worker).completed += 1

    def _on_failed(self, e: ev.Failed) -> None:
        self._take_back(e.id)
        self._tasks.fail(e.id, e.error, dead=e.dead, retry_at=e.retry_at)
        self._stats(e.worker).failed += 1
        if e.dead:
            self._ledger.forget(e.id)

    def _on_released(self, e: ev.Released) -> None:
        self._take_back(e.id)
        self._tasks.release(e.id)

    def _on_reordered(self, e: ev.Reordered) -> None:
        self._tasks.reorder(e.first)

    def _on_planned(self, e: ev.Planned) -> None:
        self._acks.ack_upto(e.upto, len(self._results))

    def _on_stopping(self, e: ev.Stopping) -> None:
        if self._state is State.RUNNING:
            self._state, self._reason, self._detail = State.STOPPING, Reason(e.reason), e.detail

    def _on_usage(self, e: ev.Usage) -> None:
        cost = self._budget.settle(e.kind, e.prompt, e.completion)
        self._budget.usage[e.kind].estimated += e.estimated
        self._stats(e.worker).usage.add(e.prompt, e.completion, cost)
        self._metrics.call(e.kind, e.prompt + e.completion, cost, e.latency)

    def _on_approved(self, e: ev.Approved) -> None:
        self._tasks.approve(e.ids)

    def _on_dropped(self, e: ev.Dropped) -> None:
        self._tasks.drop(e.ids)

    def _on_progress(self, e: ev.Progress) -> None:
        self._progress = replace(
            self._progress,
            stalls=e.stalls,
            replans=e.replans,
            repeating=e.repeating,
            checks=e.checks,
        )

    def _on_unreadable(self, e: ev.Unreadable) -> None:
        self._count(self._progress.unreadable, e.kind)

    @staticmethod
    def _count(counts: dict[str, int], key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    def _on_planner(self, e: ev.Planner) -> None:
        """Who planned when. The claim lives while it is renewed (renewals are not journaled):
        replayed, the last one claimed comes back only to a restarted board (`_replay`)."""
        if e.action == "claimed":
            self._claim.take(e.instance, self._clock())
        else:
            self._claim.release()

    def _on_tool(self, e: ev.Tool) -> None:
        self._tools.count(e.tool, e.ok, e.latency, e.bytes)
        self._stats(e.worker).tool_calls += 1

    def _on_step(self, e: ev.Step) -> None:
        calls = tuple((c[0], c[1], c[2]) for c in e.calls)  # the journal's JSON has lists
        step = Step(
            e.step,
            StepKind(e.kind),
            e.text,
            calls,
            e.call,
            e.tool,
            e.ok,
            e.prompt,
            e.completion,
            e.latency,
            e.bytes,
        )
        self._ledger.record(e.task, step)

    def _on_started(self, e: ev.Started) -> None:
        self._ledger.start(e.task, e.step, e.tool)

    def _on_replayed(self, e: ev.Replayed) -> None:
        r = self._replays
        r.tasks, r.steps, r.calls = r.tasks + e.tasks, r.steps + e.steps, r.calls + e.calls
        r.tokens, r.cost, r.unknown = r.tokens + e.tokens, r.cost + e.cost, r.unknown + e.unknown

    def _on_wrote(self, e: ev.Wrote) -> None:
        self._files.write(e.path, e.content, e.key)

    def _on_answer(self, e: ev.Answer) -> None:
        self._answers.keep(
            Answer(
                e.revision, e.text, list(e.cited), e.met, e.missing, e.at, e.flaw, e.data, e.invalid
            )
        )

    def _on_reopened(self, e: ev.Reopened) -> None:
        self.settings = replace(self.settings, **e.settings)
        self._budget.settings = self.settings
        if e.reopen:
            self._state, self._reason, self._detail = State.RUNNING, None, ""
            self._progress = replace(
                self._progress, stalls=0, replans=0, repeating=0
            )  # a new phase of planning: the old ledger's stalls are not this one's

    # -- housekeeping run at the start of every call -------------------------------------

    def _settle(self) -> None:
        expired = self._leases.expired(self._clock())
        for tid in expired:  # a model call its vanished worker was waiting for: billed all the same
            if (flying := self._ledger.landed(tid)) is not None:
                holder = self._leases.holder(tid)
                self._charge(holder, "execution", flying.tokens, 0, 0.0, tid, flying.step, True)
        if expired:
            self._emit(ev.Expired(expired))
        finishing = self._state is State.STOPPING and not self._leases
        if finishing:
            self._state = State.FINISHED
        if self._metrics.due(force=finishing):
            self._export()

    def _export(self) -> None:
        t = self._tasks
        self._metrics.state(
            {
                "pending": len(t.pending),
                "awaiting_approval": len(t.unapproved),
                "leased": len(self._leases),
                "completed": len(self._results),
                "dead": len(t.dead),
            },
            t.eligible_count(self._clock()),
            len(self._leases),
            self._budget.left(len(self._results)),
            self._progress.stalls,
        )

    def _stats(self, worker: str) -> WorkerStats:
        return self._roster.stats(worker)

    def _seen_now(self, worker: str) -> None:
        self._roster.seen(worker, self._clock())

    def _stop(self, reason: Reason, detail: str = "") -> None:
        if self._state is State.RUNNING:
            self._emit(ev.Stopping(reason.value, detail))
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
        t = self._tasks
        return t.version, [replace(t.tasks[i]) for i in t.pending[:limit]]

    def snapshot(self) -> Snapshot:
        self._settle()
        now = self._clock()
        t = self._tasks
        planner = self._claim.holder(now)
        return Snapshot(
            objective_id=self.objective_id,
            objective=self.objective,
            created=self.created,
            state=self._state,
            reason=self._reason,
            detail=self._detail,
            llm_label=self.settings.label,
            pending=[t.tasks[i] for i in t.pending],
            leased=[
                Lease(t.tasks[i], h.token, h.worker, h.expires - now)
                for i, h in self._leases.items()
            ],
            completed=len(self._results),
            dead=[t.tasks[i] for i in t.dead],
            unplanned=len(self._results) - len(self._acks),
            workers=self._roster.all(),
            usage=dict(self._budget.usage),
            planner=planner,
            progress=replace(
                self._progress,
                refused=dict(self._progress.refused),
                unreadable=dict(self._progress.unreadable),
                flawed=dict(self._progress.flawed),
            ),
            settings=self.settings,
            awaiting=len(t.unapproved),
            answer=self._answers.latest(),
            tools=self._tools.view(),
            files=self._files.listing(),
            lacking=self._lacking(now),
            replays=replace(self._replays),
        )

    def events(self, since: int = 0, limit: int = 1000) -> list[Event]:
        """The tape: journal events after sequence number `since` (none without a journal)."""
        if self._journal is None:
            return []
        return list(itertools.islice(self._journal.events(since), limit))

    def recent_events(self, count: int) -> list[Event]:
        return self._journal.tail(count) if self._journal is not None else []

    def pulse(self) -> Pulse:
        self._settle()
        total = Usage.total(self._budget.usage.values())
        return Pulse(
            self._state,
            len(self._results),
            len(self._tasks.pending),
            len(self._leases),
            len(self._tasks.dead),
            self.settings.max_tasks,
            total.tokens,
            total.cost,
            len(self._results) - len(self._acks),
        )

    def answers(self) -> list[Answer]:
        """Every revision of the objective's answer, oldest first."""
        return self._answers.all()

    def task_texts(self) -> list[tuple[int, str]]:
        """Every task ever added, for a planner building its near-duplicate index."""
        return [(t.id, t.text) for t in self._tasks.tasks.values()]

    # -- the planner's side ---------------------------------------------------------------

    def claim_planner(self, instance: str) -> str | None:
        """Take or renew the planner role; returns the live holder if it is someone else."""
        now = self._clock()
        holder = self._claim.holder(now)
        if holder is not None and holder != instance:
            return holder
        if self._claim.owner() != instance:
            self._emit(ev.Planner(instance, "claimed"))
        self._claim.take(instance, now)  # renewed
        self._seen_now(instance)
        return None

    def release_planner(self, instance: str) -> None:
        if self._claim.owner() == instance:
            self._emit(ev.Planner(instance, "released"))

    def _check_planner(self, planner: str | None) -> None:
        self._claim.check(planner, self._clock())

    def add(
        self,
        texts: Sequence[str],
        parent: int | None = None,
        *,
        planner: str | None = None,
        planned: Sequence[int] | None = None,
        hold: bool = False,
        near_duplicates: int = 0,
        needs: Sequence[Sequence[str]] = (),
        refused: Sequence[tuple[str, str]] = (),
    ) -> AddReport:
        """Append new tasks, rejecting any whose normalized text the board has seen.

        A planner passes its name and the completions (sequence numbers) this batch planned
        from: the tasks and the acknowledgement land in one event, so a planner that dies
        mid-batch leaves the batch wholly unplanned, never half, and a completion is never
        acknowledged twice (concurrent batches hold disjoint completions). It also passes how
        many proposals it rejected itself as near-duplicates, to be counted with the exact
        ones, and the lines it refused as no tasks at all, each with its reason (`Refusal`).
        """
        self._settle()
        self._check_planner(planner)
        screened = self._tasks.screen(
            texts, parent, accepting=self._state is State.RUNNING, needs=needs
        )
        rows, duplicates = screened.rows, screened.duplicates
        acked = [s for s in planned or () if s not in self._acks and s < len(self._results)]
        if rows or acked or duplicates or near_duplicates or refused:
            self._emit(
                ev.Added(
                    tasks=rows,
                    planned=acked or None,
                    exact=len(duplicates),
                    near=near_duplicates,
                    hold=hold,
                    refused=[(line, why) for line, why in refused],
                )
            )
        return AddReport(
            [replace(self._tasks.tasks[r[0]]) for r in rows], duplicates, screened.repeats
        )

    def awaiting_approval(self) -> list[Task]:
        t = self._tasks
        return [replace(t.tasks[i]) for i in t.pending if i in t.unapproved]

    def approve(self, ids: Sequence[int]) -> int:
        chosen = self._tasks.awaiting(ids)
        if chosen:
            self._emit(ev.Approved(chosen))
        return len(chosen)

    def drop(self, ids: Sequence[int]) -> int:
        """Remove tasks a person rejected; only tasks still awaiting approval can go."""
        chosen = self._tasks.awaiting(ids)
        if chosen:
            self._emit(ev.Dropped(chosen))
        return len(chosen)

    def record_progress(self, planner: str, progress: Progress) -> None:
        self._check_planner(planner)
        p = progress
        self._emit(ev.Progress(p.stalls, p.replans, p.repeating, p.checks))

    def record_unreadable(self, planner: str, kind: str, text: str) -> None:
        """A model reply of `kind` the planner could not read, with its start (`text`)."""
        self._check_planner(planner)
        self._emit(ev.Unreadable(planner, kind, text))

    def amend(self, planner: str, changes: dict[str, Any]) -> bool:
        """New caps (`RunSettings.REOPENABLE`) from `coop start --resume`; a finished
        objective runs again with them. Returns whether it was reopened."""
        self._settle()
        self._check_planner(planner)
        changes = {k: v for k, v in changes.items() if k in RunSettings.REOPENABLE}
        if not changes:
            return False
        reopen = self._state is State.FINISHED
        self._emit(ev.Reopened(changes, reopen))
        return reopen

    def budget_short(self, prompt_tokens: int, completion_tokens: int) -> str:
        """Why calls of at most this many tokens would not fit in the caps ("" if they would)."""
        return self._budget.short(prompt_tokens, completion_tokens)

    def record_answer(self, planner: str, answer: Answer) -> Answer:
        """Journal the run's answer as the next revision (with the time it was recorded)."""
        self._check_planner(planner)
        a = answer
        revision, at = self._answers.next_revision(), self._clock()
        self._emit(
            ev.Answer(
                revision, a.text, list(a.cited), a.met, a.missing, at, a.flaw, a.data, a.invalid
            )
        )
        return self._answers.all()[-1]

    def reorder(self, version: int, order: Sequence[int]) -> ReorderReport:
        """Put `order` first; every other pending task keeps its relative place after them.

        Ids no longer pending (leased or completed meanwhile) are skipped; ids never seen are
        counted as invented and ignored. Nothing is added or dropped, whatever `order` holds.
        """
        self._settle()
        first, unknown = self._tasks.merge_order(order)
        stale = version != self._tasks.version
        if first:
            self._emit(ev.Reordered(first))
        return ReorderReport(len(first), unknown, stale)

    def plan_view(self, since: int, limit: int) -> PlanView:
        """One turn's view for the planner: up to `limit` unacknowledged completions from
        sequence number `since` on, and the demand for tasks (see `PlanView`).

        A list run dry with no task of the usual cost left under a cap's share for tasks ends
        the run at that cap, as a lease refused for it with nothing in flight does: asking the
        model whether the objective is met would be paid from the answer's reserve."""
        self._settle()
        now, done, t = self._clock(), len(self._results), self._tasks
        seqs = list(itertools.islice(self._acks.unacked(since, done), limit))
        pending, leased = len(t.pending), len(self._leases)
        dry = not pending and not leased and len(self._acks) == done
        if dry and (cap := self._budget.over(self._budget.estimate())) is not None:
            self._stop(cap, NO_ROOM)
        workers = self._live(now)
        stuck = len(self._lacking(now))
        return PlanView(
            state=self._state,
            results=[self._results[s] for s in seqs],
            completed=done,
            unplanned=done - len(self._acks),
            pending=pending,
            ready=t.eligible_count(now) - stuck,
            leased=leased,
            slots=sum(w.slots for w in workers),
            room=self._room(done + leased + pending, pending),
            head=t.pending[: C.PRIORITIZE_WINDOW],
            dry=dry,
            capabilities=sorted({c for w in workers for c in w.caps}),
            stuck=stuck,
        )

    def _room(self, counted: int, pending: int) -> int:
        """Tasks that may still be added: under the task cap (`counted` pending, leased and
        done), and under the budget beside the `pending` ones already waiting."""
        room = self.settings.max_tasks - counted
        fit = self._budget.tasks_that_fit()
        return room if fit is None else min(room, fit - pending)

    def _live(self, now: float) -> list[WorkerStats]:
        """Workers heard from within a lease's time: those the planner can plan for."""
        return self._roster.live(now, self.settings.lease_ttl)

    def _lacking(self, now: float) -> dict[int, list[str]]:
        """Pending tasks no live worker can lease, and for each what every worker lacks."""
        t = self._tasks
        needs = ((tid, t.tasks[tid].needs) for tid in t.pending)
        return self._roster.lacking(needs, now, self.settings.lease_ttl)

    def stop(self, reason: Reason = Reason.STOPPED, detail: str = "") -> State:
        self._settle()
        self._stop(reason, detail)
        return self._state

    # -- the workers' side ----------------------------------------------------------------

    def lease(self, worker: str, caps: Sequence[str] = ()) -> Lease | State:
        """The next task, or the board's state when there is none to give (never raises).

        A lease reserves the budget its execution will likely spend; when that no longer
        fits under a cap, no new task starts, in-flight ones finish, and the objective stops
        with the cap as its reason. Refused too while the journal cannot be written: no work
        is handed out that could not be recorded.
        """
        self._settle()
        self._seen_now(worker)
        capped = len(self._results) + len(self._leases) >= self.settings.max_tasks
        if self._state is not State.RUNNING or capped or not self._journal_ok:
            return self._state
        now = self._clock()
        kit = set(caps)
        tid = self._tasks.next_eligible(now, lambda task: set(task.needs) <= kit)
        if tid is None:
            self._roster.idle(worker, now)
            return self._state
        self._roster.busy(worker)
        estimate = self._budget.estimate()
        if (cap := self._budget.over(estimate)) is not None:
            if not self._leases:  # nothing in flight could free budget: this is the end
                self._stop(cap, NO_ROOM)
            return self._state
        token = self._leases.next_token
        try:
            expires = now + self.settings.lease_ttl
            self._emit(ev.Leased(tid, token, worker, expires, estimate[0], estimate[1]))
        except JournalError as exc:
            log.error("%s", exc)
            return self._state
        task, tries = replace(self._tasks.tasks[tid]), self._tries[tid]
        steps, started = self.steps(tid) if tries > 1 else ([], {})
        return Lease(task, token, worker, self.settings.lease_ttl, tries, tuple(steps), started)

    def heartbeat(
        self, worker: str, held: Sequence[tuple[int, int]], seat: Seat | None = None
    ) -> list[int]:
        """Renew the leases `worker` holds; returns the task ids it has lost. `seat`: what it
        can take on (slots, capabilities), which the planner plans for."""
        self._settle()
        self._seen_now(worker)
        if seat is not None:
            self._roster.seat(worker, seat)
        return self._leases.renew(held, self._clock() + self.settings.lease_ttl)

    def _owns(self, task_id: int, token: int) -> bool:
        """True when `token` is the newest lease on a task that is not finished."""
        return self._leases.is_newest(task_id, token) and not self._tasks.finished(task_id)

    def complete(
        self,
        task_id: int,
        token: int,
        worker: str,
        text: str,
        flaw: str = "",
        last: Step | None = None,
        embedded: Sequence[int] = (),
    ) -> Outcome:
        """Record a result (`flaw`: what makes it degenerate, when it was kept all the same).
        Returns only once it is in the journal; raises JournalError if it could not be
        written (then nothing of the call is), and the worker keeps the task and tries again.

        What the task ran up and the board was not told rides along, so that a task's end is
        one round trip: `last`, its final step (recorded as `step` records it), and
        `embedded`, the tokens of each embedding call made for it since its last step (the
        write of its result). Both are settled before the result, even under a lost lease:
        they were paid. Until then the lease's reservation stood for the last step."""
        self._settle()
        self._seen_now(worker)
        if self._tasks.done.get(task_id) == token:
            return Outcome.DUPLICATE  # its usage was settled by the call that completed it
        owned = self._owns(task_id, token)
        if last is not None:
            self._record_step(task_id, token, worker, last, owned)
        self._charge_embedded(worker, embedded)
        if not owned:
            return Outcome.STALE
        self._emit(
            ev.Completed(task_id, token, worker, text[: C.MAX_RESULT_CHARS], self._clock(), flaw)
        )
        if len(self._results) >= self.settings.max_tasks:
            self._stop(Reason.MAX_TASKS)
        self._settle()
        return Outcome.ACCEPTED

    def complete_and_lease(
        self,
        task_id: int,
        token: int,
        worker: str,
        text: str,
        caps: Sequence[str] = (),
        flaw: str = "",
        last: Step | None = None,
        embedded: Sequence[int] = (),
    ) -> tuple[Outcome, Lease | State]:
        """`complete`, then `lease` for the same worker, in one round trip: a busy worker's
        steady state costs one actor call per task instead of two. While another worker has
        recently found nothing to do, the next task is left for it instead, so a fast worker
        cannot starve idle ones."""
        outcome = self.complete(task_id, token, worker, text, flaw, last, embedded)
        recently = self._clock() - C.POLL_MAX * 2
        if self._roster.others_idle(worker, recently):
            return outcome, self._state
        return outcome, self.lease(worker, caps)

    def fail(self, task_id: int, token: int, worker: str, error: str) -> Outcome:
        """Count a failed attempt: requeue at the back after a growing delay, or dead-letter
        after max_attempts."""
        self._settle()
        self._seen_now(worker)
        if not self._owns(task_id, token):
            return Outcome.STALE
        attempts = self._tasks.tasks[task_id].attempts + 1
        dead = attempts >= self.settings.max_attempts
        delay = C.RETRY_DELAY * 2 ** (attempts - 1)
        self._emit(ev.Failed(task_id, worker, error[:500], dead, self._clock() + delay))
        self._settle()
        return Outcome.DEAD if dead else Outcome.REQUEUED

    def release(self, task_id: int, token: int, worker: str) -> Outcome:
        """Give a task back unattempted (a worker shutting down): it goes to the front."""
        self._settle()
        if not self._owns(task_id, token):
            return Outcome.STALE
        self._emit(ev.Released(task_id))
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
        self._charge(worker, kind, prompt_tokens, completion_tokens, latency, task_id)
        self._stop_if_spent()

    def _charge(
        self,
        worker: str,
        kind: str,
        prompt: int,
        completion: int,
        latency: float,
        task: int | None,
        step: int | None = None,
        estimated: bool = False,
    ) -> None:
        """A model call's usage event: a reported call, or (`estimated`) one in flight when
        its lease ended, charged by its reservation."""
        self._emit(
            ev.Usage(worker, kind, prompt, completion, round(latency, 4), task, step, estimated)
        )

    def _stop_if_spent(self) -> None:
        """Spending past a cap stops the objective (in-flight work finishes and is kept)."""
        if (cap := self._budget.over(None)) is not None:
            self._stop(cap, "budget spent")

    def steps(self, task_id: int) -> tuple[list[Step], dict[int, str]]:
        """A task's finished steps, and its unsafe tool calls started and never finished (step
        -> tool): what a worker leasing it again replays instead of redoing."""
        return self._ledger.steps(task_id), self._ledger.started(task_id)

    def step(
        self,
        task_id: int,
        token: int,
        worker: str,
        done: Step | None = None,
        acquire: int = 0,
        starting: str = "",
        embedded: Sequence[int] = (),
    ) -> tuple[bool, float]:
        """A task's worker between two steps, in one round trip: settle the embedding calls
        made for the task since its last call (`embedded`: its memory query, before the first
        step) and the step that just finished (`done`) — both even under a lost lease: they
        were paid —, then open the next: `acquire` tokens from the rate limit for a model call
        (noted as in flight once granted), or mark an unsafe tool as `starting`. Returns
        (whether the lease is still the worker's, seconds to wait before asking again).

        Embeddings are settled here, as they happen, not saved for the completion: the
        lease's reservation covers the task's model calls only, and a run near its cap must
        see what in-flight tasks spent before it leases another (the answer's reserve was
        spent that way)."""
        self._settle()
        self._seen_now(worker)
        owned = self._owns(task_id, token)
        self._charge_embedded(worker, embedded)
        if done is not None:
            self._record_step(task_id, token, worker, done, owned)
        if not owned:
            return False, 0.0
        if acquire:
            wait = self._bucket.acquire(acquire, self._clock())
            if wait == 0.0:
                cost = self.settings.cost("execution", acquire, 0)
                self._ledger.fly(task_id, self._ledger.next_step(task_id), acquire, cost)
            return True, wait
        if starting:
            step = self._ledger.next_step(task_id)
            self._emit(ev.Started(task_id, step, starting, worker))
        return True, 0.0

    def _charge_embedded(self, worker: str, embedded: Sequence[int]) -> None:
        """Settle a task's embedding calls, each its own usage event (as `record_usage`
        writes it)."""
        for tokens in embedded:
            self._charge(worker, Kind.EMBEDDING.value, tokens, 0, 0.0, None)
        if embedded:
            self._stop_if_spent()

    def _record_step(self, task_id: int, token: int, worker: str, done: Step, owned: bool) -> None:
        if done.kind is StepKind.MODEL:
            self._charge(
                worker, "execution", done.prompt, done.completion, done.latency, task_id, done.step
            )
        else:
            latency = round(done.latency, 4)
            self._emit(ev.Tool(worker, task_id, done.step, done.tool, done.ok, latency, done.bytes))
        if owned and done.step == self._ledger.next_step(task_id):
            d = done
            self._emit(
                ev.Step(
                    task_id,
                    token,
                    worker,
                    d.step,
                    d.kind.value,
                    d.text,
                    list(d.calls),
                    d.call,
                    d.tool,
                    d.ok,
                    d.prompt,
                    d.completion,
                    d.latency,
                    d.bytes,
                )
            )
        self._stop_if_spent()

    def replayed(self, worker: str, task_id: int, saved: Replays) -> None:
        """A worker resumed a task from its ledger: what it did not redo (for the tape and
        status)."""
        r = saved
        self._emit(
            ev.Replayed(worker, task_id, r.tasks, r.steps, r.calls, r.tokens, r.cost, r.unknown)
        )

    def write_file(
        self, task_id: int, token: int, worker: str, path: str, content: str, key: str
    ) -> tuple[bool, str]:
        """A workspace write by the holder of a task's lease, once per idempotency key.
        Returns (written, what to tell the model)."""
        self._settle()
        if not self._owns(task_id, token):
            return False, f"not written: the lease on task #{task_id} was lost"
        try:
            where = clean(path)
            if (before := self._files.seen(key)) is not None:
                return True, f"already written by this step: {before}"
            self._files.check(where, content)
        except BadPath as exc:
            return False, f"not written: {exc}"
        self._emit(ev.Wrote(where, content, key, task_id, worker))
        return True, f"wrote {where} ({self._files.size(where):,} bytes)"

    def read_file(self, path: str) -> str | None:
        try:
            return self._files.read(clean(path))
        except BadPath:
            return None

    def list_files(self) -> list[tuple[str, int]]:
        return self._files.listing()

    def acquire(self, tokens: int) -> float:
        """Cluster-wide rate limit: 0 to go ahead now (the request is counted), else the
        seconds to wait before asking again."""
        return self._bucket.acquire(tokens, self._clock())
