"""The main instance's planner: the only one that creates and prioritizes tasks, and decides
when to stop — with as many model calls in flight as the swarm needs.

A coordinator (this module) reads the board each turn (`Board.plan_view`: new completions
and the demand for tasks), asks the demand policy (demand.py, a pure function) which calls
to start, and runs them as jobs (jobs.py) on a pool of threads: creation from the
completions nobody has planned from, prioritization off the critical path, the completion
check, and a fresh plan when progress stalls. A batch's tasks and its acknowledgement land
in one journal event, so a completion is never planned twice or skipped, across a planner's
death too.

As jobs finish the coordinator feeds the progress ledger (ledger.py) and acts on its verdicts:
a fresh plan, or the end as stalled or as a loop.

A model call that fails is tried again after a pause that doubles (its batch goes back to
the queue, unacknowledged); after `MAX_FAILURES` failures in a row the objective stops as
`failed` with the fault's one line. Planning is a lease on the board (claim.py): a second
planner is refused (or waits, with `--standby`), and one whose claim lapsed is fenced out of
adding tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace

from coop import constants as C
from coop.board import BoardUnavailable, PlannerLost, Wake
from coop.calls import Context, metered
from coop.llm import LLMError
from coop.planner.claim import ClaimKeeper
from coop.planner.demand import Situation, decide
from coop.planner.index import TaskIndex
from coop.planner.jobs import Job, Jobs, Outcome, Review
from coop.planner.ledger import UNREADABLE_CHECKS, Ledger, Verdict
from coop.planner.pool import DaemonPool
from coop.types import PlanView, Progress, Reason, Result, State

log = logging.getLogger(__name__)

__all__ = ["UNREADABLE_CHECKS", "Planner"]

RETRY_AFTER_ERROR = 2.0
"""Seconds before planning is tried again after a model call failed (after the client's own
retries); the pause doubles with each failure in a row, up to RETRY_MAX."""
RETRY_MAX = 60.0
MAX_FAILURES = 6
"""Failed planning calls in a row (about two minutes of pauses) before the objective stops as
`failed`: a model server that long gone will not plan this objective."""
YIELD_START = 3.0
"""Tasks a creation call is expected to bring before any has returned; then the running mean."""
PACE_WINDOW = 5.0
"""Seconds of completions the pace is measured over: tasks leased a second, as slots free up."""
TICK = C.POLL_MIN
"""Seconds the coordinator waits for a job to finish before it looks at the board again."""
STUCK_PATIENCE = 60.0
"""Seconds that only tasks no live worker can do are left before that counts as a stall: time
for a worker that can do them to join."""


class Planner:
    def __init__(self, ctx: Context, stop: threading.Event, review: Review | None = None) -> None:
        self.ctx = ctx
        self.board = ctx.board
        self.settings = ctx.settings
        self.name = ctx.name
        self.stop = stop
        self.index = TaskIndex(ctx.llm, metered(ctx.board, ctx.name))
        self.jobs = Jobs(ctx, self.index, review)
        self.ledger = Ledger()
        self._claim = ClaimKeeper(ctx.board, ctx.name, stop, ctx.settings.planner_ttl)
        self._queue: deque[Result] = deque()  # claimed completions, waiting for a creation
        self._cursor = 0  # the next completion this planner has not claimed
        self._running: dict[Future[Outcome], Job] = {}
        self._started: dict[Future[Outcome], float] = {}  # when each job was submitted
        self._took: dict[Job, float] = {}  # each kind of job's running mean duration, seconds
        self._seen: deque[tuple[float, int]] = deque()  # (time, completions) of recent views
        self._batches: dict[Future[Outcome], list[Result]] = {}  # what each creation plans
        self._yield = YIELD_START
        self._barren = 0  # creation calls in a row that brought no task
        self._ordered: set[int] = set()  # task ids the last prioritization saw
        self._checked = -1  # completions at the last check of a dry list (-1: none yet)
        self._milestone = 0  # completions // CHECK_EVERY at the last periodic check
        self._failures = 0
        self._fault = ""  # the last failure's fault, to tell the same malformed reply twice
        self._resume_at = 0.0  # no new calls before this (after a failure)
        self._pool: DaemonPool | None = None
        self._stuck_since = time.monotonic()  # last stall counted for tasks nobody can do
        self._stuck_note = ""

    @property
    def progress(self) -> Progress:
        """The progress ledger's counts, as the board keeps them."""
        return self.ledger.progress

    # -- the planner lease ----------------------------------------------------------------

    def claim(self, *, wait: bool) -> None:
        """Become the planner, or fail (or, with `wait`, stand by) while another one is."""
        self._claim.claim(wait=wait)

    def release(self) -> None:
        """Give up the claim, once the answer is written under it."""
        self._claim.release()

    # -- the coordinator --------------------------------------------------------------------

    def run(self, *, fresh_plan: bool = False) -> bool:
        """Plan until the board says the objective is finished; `fresh_plan` first (an
        objective reopened with larger caps plans afresh from what is done). Returns whether
        there was anything to plan (False: the objective had already finished)."""
        self._pool = DaemonPool(self.settings.planner_calls + 3, "planner")
        try:
            return self._coordinate(fresh_plan)
        except BoardUnavailable:
            if self._claim.lost:  # given up on the board: say why
                raise PlannerLost(f"{self._claim.lost}; this planner stops") from None
            raise
        finally:
            self._pool.shutdown()

    def _coordinate(self, fresh_plan: bool) -> bool:
        snap = self.board.snapshot()
        if snap.state is State.FINISHED:
            return False  # a resumed run that had already ended: nothing to plan or embed
        self.ledger = Ledger(snap.progress)
        self._milestone = snap.completed // C.CHECK_EVERY
        indexed = False
        idle = C.POLL_MIN
        deadline = (
            time.monotonic() + self.settings.max_minutes * 60 if self.settings.max_minutes else None
        )
        while True:
            self.jobs.ask_person()  # about the tasks the last jobs added, here on the main thread
            if self._claim.lost:
                raise PlannerLost(f"{self._claim.lost}; this planner stops")
            if self.stop.is_set():
                self.board.stop(Reason.STOPPED)
            if deadline is not None and time.monotonic() > deadline:
                self.board.stop(
                    Reason.TIMEOUT, f"ran for --max-minutes {self.settings.max_minutes:g}"
                )
            seen = self.board.bell(Wake.RESULTS)  # before the look: a later ring is heard
            view = self.board.plan_view(self._cursor, self._room_in_queue())
            self._seen.append((time.monotonic(), view.completed))
            while len(self._seen) > 2 and self._seen[1][0] < self._seen[-1][0] - PACE_WINDOW:
                self._seen.popleft()
            self._queue.extend(view.results)
            if view.results:
                self._cursor = view.results[-1].seq + 1
            if view.state is State.FINISHED and not self._running:
                return True
            if view.state is State.RUNNING and time.monotonic() >= self._resume_at:
                try:
                    if not indexed:  # every task's embedding: once, and inside the retries
                        self.index.add([text for _, text in self.board.task_texts()])
                        indexed = True
                        if fresh_plan:  # only now: its proposals are screened by the index
                            self._submit(Job.REPLAN, self.jobs.replan)
                    self._schedule(view)
                except LLMError as exc:
                    self._failed(exc)
            if not self._running:  # nothing in flight: look again at the next result, or soon
                idle = C.POLL_MIN if view.results else min(idle * 2, C.POLL_MAX)
                self.board.wait(Wake.RESULTS, seen, idle)
                continue
            idle = C.POLL_MIN
            done, _ = wait(list(self._running), timeout=TICK, return_when=FIRST_COMPLETED)
            for future in done:
                self._finish(future, self._running.pop(future))

    def _room_in_queue(self) -> int:
        """Completions worth claiming now: enough for every creation call that may start."""
        return max(0, C.PLANNER_BATCH * self.settings.planner_calls - len(self._queue))

    def _situation(self, view: PlanView) -> Situation:
        busy = list(self._running.values())
        return Situation(
            room=view.room,
            slots=view.slots,
            leased=view.leased,
            ready=view.ready,
            queued=len(self._queue),
            creating=busy.count(Job.CREATE),
            busy=frozenset(busy),
            expected=self._yield,
            barren=self._barren,
            calls=self.settings.planner_calls,
            unordered=sum(1 for tid in view.head if tid not in self._ordered),
            turnover=self._turnover(),
            completed=view.completed,
            dry=view.dry,
            stuck=view.stuck,
            milestone=self._milestone,
            checked=self._checked,
            affordable=view.calls,
        )

    def _turnover(self) -> float:
        """Tasks leased while a prioritization call runs: the pace of completions (a slot
        that frees is leased again) times the call's duration (a creation call's until a
        prioritization has been timed; none before any call: nothing is assumed)."""
        if len(self._seen) < 2:
            return 0.0
        took = self._took.get(Job.PRIORITIZE, self._took.get(Job.CREATE, 0.0))
        (t0, c0), (t1, c1) = self._seen[0], self._seen[-1]
        return (c1 - c0) / (t1 - t0) * took if t1 > t0 else 0.0

    def _schedule(self, view: PlanView) -> None:
        """Start the calls the demand policy asks for in this view."""
        d = decide(self._situation(view))
        if d.acknowledge:  # a cap (tasks or budget): nothing more may be added
            batch = list(self._queue)
            self._queue.clear()
            self.jobs.acknowledge(batch)
        for c in d.creations:
            batch = [self._queue.popleft() for _ in range(c.size)]
            job = self._submit(Job.CREATE, self.jobs.create, batch, c.wanted, view.capabilities)
            self._batches[job] = batch
        if d.prioritize:
            self._ordered = set(view.head)
            self._submit(Job.PRIORITIZE, self.jobs.prioritize)
        if d.waiting:
            self._waiting(view)
        if d.check:
            self._milestone = view.completed // C.CHECK_EVERY
            if d.dry_check:  # a periodic check may have seen results still being planned
                self._checked = view.completed
            self._submit(Job.CHECK, self.jobs.check, view.completed)
        elif d.replan:
            self._replan()  # checked at this count already, and still dry: plan afresh

    def _waiting(self, view: PlanView) -> None:
        """Only tasks no live worker can do are left: each STUCK_PATIENCE seconds of that is
        a stall (so the ledger replans, then ends the objective as stalled), unless a worker
        that can do them joins meanwhile."""
        now = time.monotonic()
        if now - self._stuck_since < STUCK_PATIENCE:
            return
        self._stuck_since = now
        lacking = sorted({c for caps in self.board.snapshot().lacking.values() for c in caps})
        self._stuck_note = (
            f"{view.stuck} task(s) need what no live worker has: {', '.join(lacking)}"
        )
        log.warning("%s", self._stuck_note)
        self._ledger(False, 0, 0)

    def _submit(self, job: Job, fn: Callable[..., Outcome], *args: object) -> Future[Outcome]:
        assert self._pool is not None
        future = self._pool.submit(fn, *args)
        self._running[future] = job
        self._started[future] = time.monotonic()
        return future

    # -- what finished jobs mean ---------------------------------------------------------------

    def _finish(self, future: Future[Outcome], job: Job) -> None:
        batch = self._batches.pop(future, [])
        took = time.monotonic() - self._started.pop(future)
        mean = self._took.get(job, took)
        self._took[job] = mean + (took - mean) / 4  # a running mean, as the yield's
        try:
            out = future.result()
        except LLMError as exc:
            self._queue.extendleft(reversed(batch))  # unacknowledged: planned on the retry
            self._failed(exc)
            return
        self._failures, self._fault = 0, ""
        if job is Job.CREATE:
            self._yield += (len(out.added) - self._yield) / 4  # a running mean of what calls bring
            self._barren = 0 if out.added else self._barren + 1
            self._ledger(out.added != [] or out.novel, out.proposed, out.repeats)
        elif job is Job.REPLAN:
            log.info(
                "replanned (%d of %d): %d new task(s)",
                self.progress.replans,
                C.MAX_REPLANS,
                len(out.added),
            )
            if out.added:  # a fresh plan that brings tasks: the plan is not running out
                self._barren = 0
            self._ledger(out.added != [], out.proposed, out.repeats)
        elif job is Job.CHECK:
            unread = self.ledger.checked(out.unreadable)
            self._record()
            if out.met:
                self.board.stop(Reason.DONE, out.why)
            elif unread:
                self.board.stop(
                    Reason.STALLED,
                    f"the model's completion check could not be read {self.ledger.unread} "
                    f"times in a row (last: {out.why!r}); it did not answer in JSON",
                )

    def _failed(self, exc: LLMError) -> None:
        """A planning call failed after the client's retries: pause, then try again — unless
        the server answered malformed the same way twice in a row, which no pause mends."""
        self._failures += 1
        again, self._fault = exc.malformed and exc.fault == self._fault, exc.fault
        if again:
            log.error("%s", exc)
            self.board.stop(Reason.FAILED, f"{exc.fault}, twice in a row")
            return
        if self._failures >= MAX_FAILURES:
            log.error("%s", exc)
            self.board.stop(Reason.FAILED, f"planning failed {self._failures} times: {exc}")
            return
        pause = min(RETRY_AFTER_ERROR * 2 ** (self._failures - 1), RETRY_MAX)
        log.warning("planning call failed (%s); retrying in %.0fs", exc, pause)
        self._resume_at = time.monotonic() + pause

    def _ledger(self, progress: bool, proposed: int, repeats: int) -> None:
        """A batch's outcome into the ledger, recorded on the board, and its verdict acted on."""
        verdict = self.ledger.batch(progress, proposed, repeats)
        self._record()
        if verdict is Verdict.LOOP:
            self.board.stop(
                Reason.LOOP,
                f"the model re-proposed finished work {self.progress.repeating} times in a row",
            )
        elif verdict is Verdict.REPLAN:
            self._replan()

    def _replan(self) -> None:
        """A fresh plan, or the end as stalled after MAX_REPLANS of them."""
        if self.ledger.spent:
            why = "; ".join(
                filter(
                    None,
                    [f"no progress after {self.progress.replans} fresh plans", self._stuck_note],
                )
            )
            self.board.stop(Reason.STALLED, why)
            return
        if Job.REPLAN in self._running.values():
            return
        self.ledger.replanned()
        self._record()
        self._submit(Job.REPLAN, self.jobs.replan)

    def _record(self) -> None:
        self.board.record_progress(self.name, replace(self.progress))
