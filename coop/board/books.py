"""The board's books: every part, as the journal's events have built them.

What an event does is said once, here, by one handler per kind (`apply`), the same whether the
event was just written or is replayed when a board is rebuilt: replay cannot drift from life.
The books decide nothing (the desks do: desk.py, workers.py, planning.py) and write no
journal (the actor does). Each part keeps its own invariant; the books keep those that span
parts: a leased task leaves the list, reserves budget and counts a try; a finished one ends
its lease and frees its reservation and its ledger; a completion is the next result in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from coop import events as ev
from coop.board.acks import Acks
from coop.board.answers import Answers
from coop.board.budget import Budget
from coop.board.claim import PlannerClaim
from coop.board.files import Files
from coop.board.leases import Leases
from coop.board.ledger import Ledger
from coop.board.ratelimit import RateBucket
from coop.board.roster import Roster
from coop.board.tasks import TaskList
from coop.board.toolstats import ToolTally
from coop.config import RunSettings
from coop.metrics import BoardMetrics
from coop.types import (
    Answer,
    EventKind,
    Progress,
    Reason,
    Replays,
    Result,
    State,
    Step,
    StepKind,
    WorkerStats,
)


class Books:
    """Every part empty, as before the first event; `apply` each event to fill them."""

    def __init__(
        self, settings: RunSettings, clock: Callable[[], float], metrics: BoardMetrics
    ) -> None:
        self.settings = settings  # as amended by `reopened` events
        self.clock = clock
        self.metrics = metrics
        self.tasks = TaskList()
        self.leases = Leases()
        self.budget = Budget(settings)
        self.bucket = RateBucket(settings.rpm, settings.tpm, clock())
        self.results: list[Result] = []
        self.acks = Acks()  # completions the planner has planned from
        self.state = State.RUNNING
        self.reason: Reason | None = None
        self.detail = ""
        self.claim = PlannerClaim(settings.planner_ttl)
        self.roster = Roster()
        self.progress = Progress()
        self.answers = Answers()
        self.files = Files()
        self.tools = ToolTally()
        self.ledger = Ledger()
        self.tries: dict[int, int] = {}  # task id -> leases granted on it
        self.replays = Replays()
        self._handlers: dict[EventKind, Callable[[Any], None]] = {  # each takes its own kind
            kind: getattr(self, f"_on_{kind.value}") for kind in EventKind
        }

    def apply(self, event: ev.Event) -> None:
        self._handlers[event.KIND](event)

    # -- what the desks read ----------------------------------------------------------------

    def owns(self, task_id: int, token: int) -> bool:
        """True when `token` is the newest lease on a task that is not finished."""
        return self.leases.is_newest(task_id, token) and not self.tasks.finished(task_id)

    def live(self, now: float) -> list[WorkerStats]:
        """Workers heard from within a lease's time: those the planner can plan for."""
        return self.roster.live(now, self.settings.lease_ttl)

    def lacking(self, now: float) -> dict[int, list[str]]:
        """Pending tasks no live worker can lease, and for each what every worker lacks."""
        t = self.tasks
        needs = ((tid, t.tasks[tid].needs) for tid in t.pending)
        return self.roster.lacking(needs, now, self.settings.lease_ttl)

    def unplanned(self) -> int:
        """Completions the planner has not planned from yet."""
        return len(self.results) - len(self.acks)

    def seen(self, worker: str) -> None:
        self.roster.seen(worker, self.clock())

    def finish(self) -> bool:
        """A stopping run with nothing left in flight is finished (derived, not journaled);
        True when it is."""
        if self.state is State.STOPPING and not self.leases:
            self.state = State.FINISHED
            return True
        return False

    def export(self) -> None:
        """The gauges of the board's metrics."""
        t = self.tasks
        self.metrics.state(
            {
                "pending": len(t.pending),
                "awaiting_approval": len(t.unapproved),
                "leased": len(self.leases),
                "completed": len(self.results),
                "dead": len(t.dead),
            },
            t.eligible_count(self.clock()),
            len(self.leases),
            self.budget.left(len(self.results)),
            self.progress.stalls,
        )

    # -- the events ------------------------------------------------------------------------

    def _on_added(self, e: ev.Added) -> None:
        self.tasks.add(e.tasks, hold=e.hold)
        self.progress.exact_duplicates += e.exact
        self.progress.near_duplicates += e.near
        for _, why in e.refused:
            _count(self.progress.refused, why)
        if e.planned is not None:
            self.acks.ack(e.planned, len(self.results))
        if e.planned_upto is not None:
            self.acks.ack_upto(e.planned_upto, len(self.results))

    def _on_leased(self, e: ev.Leased) -> None:
        self.budget.reserve(e.id, e.tokens, e.cost)
        self.tasks.take(e.id)
        self.leases.grant(e.id, e.token, e.worker, e.expires)
        self.tries[e.id] = self.tries.get(e.id, 0) + 1

    def _on_expired(self, e: ev.Expired) -> None:
        for tid in e.ids:
            self.leases.end(tid)
            self.budget.unreserve(tid)
        self.tasks.put_front(e.ids)

    def _take_back(self, tid: int) -> None:
        """Remove an owned task from wherever it sits (held, or requeued after expiry). A call
        its worker still had in flight was reported by that worker: it charges nothing."""
        self.tasks.reclaim(tid, held=self.leases.end(tid))
        self.budget.unreserve(tid)
        self.ledger.landed(tid)

    def _on_completed(self, e: ev.Completed) -> None:
        self._take_back(e.id)
        self.tasks.complete(e.id, e.token)
        self.ledger.forget(e.id)
        text = self.tasks.tasks[e.id].text
        seq = len(self.results)
        self.results.append(Result(e.id, text, e.text, e.worker, seq, e.at, e.flaw))
        if e.flaw:
            _count(self.progress.flawed, e.flaw)
        self.roster.stats(e.worker).completed += 1

    def _on_failed(self, e: ev.Failed) -> None:
        self._take_back(e.id)
        self.tasks.fail(e.id, e.error, dead=e.dead, retry_at=e.retry_at)
        self.roster.stats(e.worker).failed += 1
        if e.dead:
            self.ledger.forget(e.id)

    def _on_released(self, e: ev.Released) -> None:
        self._take_back(e.id)
        self.tasks.release(e.id)

    def _on_reordered(self, e: ev.Reordered) -> None:
        self.tasks.reorder(e.first)

    def _on_planned(self, e: ev.Planned) -> None:
        self.acks.ack_upto(e.upto, len(self.results))

    def _on_stopping(self, e: ev.Stopping) -> None:
        if self.state is State.RUNNING:
            self.state, self.reason, self.detail = State.STOPPING, Reason(e.reason), e.detail

    def _on_usage(self, e: ev.Usage) -> None:
        cost = self.budget.settle(e.kind, e.prompt, e.completion)
        self.budget.usage[e.kind].estimated += e.estimated
        self.roster.stats(e.worker).usage.add(e.prompt, e.completion, cost)
        self.metrics.call(e.kind, e.prompt + e.completion, cost, e.latency)

    def _on_approved(self, e: ev.Approved) -> None:
        self.tasks.approve(e.ids)

    def _on_dropped(self, e: ev.Dropped) -> None:
        self.tasks.drop(e.ids)

    def _on_progress(self, e: ev.Progress) -> None:
        self.progress = replace(
            self.progress,
            stalls=e.stalls,
            replans=e.replans,
            repeating=e.repeating,
            checks=e.checks,
        )

    def _on_unreadable(self, e: ev.Unreadable) -> None:
        _count(self.progress.unreadable, e.kind)

    def _on_planner(self, e: ev.Planner) -> None:
        """Who planned when. The claim lives while it is renewed (renewals are not journaled):
        replayed, the last one claimed comes back only to a restarted board (`Board._replay`)."""
        if e.action == "claimed":
            self.claim.take(e.instance, self.clock())
        else:
            self.claim.release()

    def _on_tool(self, e: ev.Tool) -> None:
        self.tools.count(e.tool, e.ok, e.latency, e.bytes)
        self.roster.stats(e.worker).tool_calls += 1

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
        self.ledger.record(e.task, step)

    def _on_started(self, e: ev.Started) -> None:
        self.ledger.start(e.task, e.step, e.tool)

    def _on_replayed(self, e: ev.Replayed) -> None:
        r = self.replays
        r.tasks, r.steps, r.calls = r.tasks + e.tasks, r.steps + e.steps, r.calls + e.calls
        r.tokens, r.cost, r.unknown = r.tokens + e.tokens, r.cost + e.cost, r.unknown + e.unknown

    def _on_wrote(self, e: ev.Wrote) -> None:
        self.files.write(e.path, e.content, e.key)

    def _on_answer(self, e: ev.Answer) -> None:
        self.answers.keep(
            Answer(
                e.revision, e.text, list(e.cited), e.met, e.missing, e.at, e.flaw, e.data, e.invalid
            )
        )

    def _on_reopened(self, e: ev.Reopened) -> None:
        self.settings = replace(self.settings, **e.settings)
        self.budget.settings = self.settings
        if e.reopen:
            self.state, self.reason, self.detail = State.RUNNING, None, ""
            self.progress = replace(
                self.progress, stalls=0, replans=0, repeating=0
            )  # a new phase of planning: the old ledger's stalls are not this one's


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1
