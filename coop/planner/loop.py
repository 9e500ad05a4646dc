"""The main instance's planner: the only one that creates and prioritizes tasks, and decides
when to stop — with as many model calls in flight as the swarm needs.

A coordinator (this module) reads the board each turn (`Board.plan_view`: new completions
and the demand for tasks) and schedules jobs (jobs.py) on a pool of threads:

* **creation**: the completions nobody has planned from are split into batches, as many calls
  at once as demand calls for (idle worker slots plus about one queued task per slot, less
  the tasks ready and those the calls in flight will bring), up to `--planner-calls`; each
  prompt says how many tasks are wanted when the queue is short. With the demand met, one
  call plans a fuller batch in the background. At the task cap no call is made: completions
  are acknowledged as they are. A batch's tasks and its acknowledgement land in one journal
  event, so a completion is never planned twice or skipped, across a planner's death too;
* **prioritization**, off the critical path: one call at a time, whenever the head of the
  queue holds tasks it has not ordered; the board merges a late order into the current list;
* **the completion check**, every `CHECK_EVERY` completions and whenever the list runs dry,
  and **a fresh plan** when progress stalls.

It keeps a progress ledger in the spirit of Magentic-One's, applied here in the coordinator
as jobs finish: a batch that adds no task and whose results say nothing new is a stall; at
`STALL_LIMIT` stalls it replans from scratch, and after `MAX_REPLANS` fruitless replans the
objective stops as stalled. Batches that only re-propose finished work stop it as a loop.

A model call that fails is tried again after a pause that doubles (its batch goes back to
the queue, unacknowledged); after `MAX_FAILURES` failures in a row the objective stops as
`failed` with the fault's one line. Planning is a lease on the board, renewed by a heartbeat
thread: a second planner is refused (or waits, with `--standby`), and one whose claim lapsed
is fenced out of adding tasks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace

from coop import constants as C
from coop.board import BoardUnavailable, PlannerLost
from coop.calls import Context, metered
from coop.errors import CoopError
from coop.llm import LLMError
from coop.planner.index import TaskIndex
from coop.planner.jobs import Job, Jobs, Outcome, Review
from coop.planner.pool import DaemonPool
from coop.types import PlanView, Progress, Reason, Result, State

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 2.0
"""Seconds before planning is tried again after a model call failed (after the client's own
retries); the pause doubles with each failure in a row, up to RETRY_MAX."""
RETRY_MAX = 60.0
MAX_FAILURES = 6
"""Failed planning calls in a row (about two minutes of pauses) before the objective stops as
`failed`: a model server that long gone will not plan this objective."""
ASK_MAX = 10
"""Most tasks one creation prompt asks for when the queue is short."""
YIELD_START = 3.0
"""Tasks a creation call is expected to bring before any has returned; then the running mean."""
TICK = C.POLL_MIN
"""Seconds the coordinator waits for a job to finish before it looks at the board again."""
UNREADABLE_CHECKS = 3
"""Completion checks in a row whose reply could not be read before the objective stops as
stalled: a model that cannot answer the check in JSON would otherwise be asked until a cap."""
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
        self.progress = Progress()
        self._lost: str | None = None
        self._done = threading.Event()  # released: the claim keeper stops
        self._renewing = threading.Lock()
        self._queue: deque[Result] = deque()  # claimed completions, waiting for a creation
        self._cursor = 0  # the next completion this planner has not claimed
        self._running: dict[Future[Outcome], Job] = {}
        self._batches: dict[Future[Outcome], list[Result]] = {}  # what each creation plans
        self._yield = YIELD_START
        self._ordered: set[int] = set()  # task ids the last prioritization saw
        self._checked = -1  # completions at the last check of a dry list (-1: none yet)
        self._milestone = 0  # completions // CHECK_EVERY at the last periodic check
        self._failures = 0
        self._fault = ""  # the last failure's fault, to tell the same malformed reply twice
        self._unread = 0  # completion checks in a row whose reply could not be read
        self._resume_at = 0.0  # no new calls before this (after a failure)
        self._pool: DaemonPool | None = None
        self._stuck_since = time.monotonic()  # last stall counted for tasks nobody can do
        self._stuck_note = ""

    # -- the planner lease ----------------------------------------------------------------

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
            if self.stop.wait(C.PLANNER_TTL / 3):
                raise CoopError("stopped while standing by")
        keeper = threading.Thread(
            target=self._keep_claim, args=(asked,), name="planner-claim", daemon=True
        )
        keeper.start()

    def _keep_claim(self, renewed: float) -> None:
        """Renew the claim every third of its TTL until it is released. Another holder means
        the claim was lost. A claim left unrenewed for a whole TTL (`renewed`: when the last
        renewal that got through was sent) may be another instance's by now: this planner
        stops as well, at once, even while it cannot reach the board (a partition), rather
        than plan on a board it may no longer own; whatever it sent meanwhile is fenced out
        by the board."""
        while not self._done.wait(C.PLANNER_TTL / 3):
            sent = time.monotonic()
            try:
                with self._renewing:  # never renewed after `release`
                    if self._done.is_set():
                        return
                    holder = self.board.claim_planner(self.name, timeout=C.PLANNER_TTL / 3)
            except BoardUnavailable as exc:
                if time.monotonic() - renewed < C.PLANNER_TTL:
                    continue
                self._lost = (
                    f"this planner lost its claim: it could not renew it for "
                    f"{C.PLANNER_TTL:g}s ({exc.cause})"
                )
            else:
                if holder is None:
                    renewed = sent
                    continue
                self._lost = f"{holder} took over planning"
            self.board.give_up(f"{self._lost}; this planner stops")
            return

    # -- the coordinator --------------------------------------------------------------------

    def run(self, *, fresh_plan: bool = False) -> bool:
        """Plan until the board says the objective is finished; `fresh_plan` first (an
        objective reopened with larger caps plans afresh from what is done). Returns whether
        there was anything to plan (False: the objective had already finished)."""
        self._pool = DaemonPool(self.settings.planner_calls + 3, "planner")
        try:
            return self._coordinate(fresh_plan)
        except BoardUnavailable:
            if self._lost:  # given up on the board: say why
                raise PlannerLost(f"{self._lost}; this planner stops") from None
            raise
        finally:
            self._pool.shutdown()

    def release(self) -> None:
        """Give up the claim (kept until now: the answer is written under it). A board that
        cannot be reached lets it lapse on its own."""
        with self._renewing:
            self._done.set()
        if self._lost:
            return
        try:
            self.board.release_planner(self.name)
        except BoardUnavailable as exc:
            log.debug("planner claim not released (it lapses by itself): %s", exc)

    def _coordinate(self, fresh_plan: bool) -> bool:
        snap = self.board.snapshot()
        if snap.state is State.FINISHED:
            return False  # a resumed run that had already ended: nothing to plan or embed
        self.progress = snap.progress
        self._milestone = snap.completed // C.CHECK_EVERY
        indexed = False
        idle = C.POLL_MIN
        deadline = (
            time.monotonic() + self.settings.max_minutes * 60 if self.settings.max_minutes else None
        )
        while True:
            self.jobs.ask_person()  # about the tasks the last jobs added, here on the main thread
            if self._lost:
                raise PlannerLost(f"{self._lost}; this planner stops")
            if self.stop.is_set():
                self.board.stop(Reason.STOPPED)
            if deadline is not None and time.monotonic() > deadline:
                self.board.stop(
                    Reason.TIMEOUT, f"ran for --max-minutes {self.settings.max_minutes:g}"
                )
            view = self.board.plan_view(self._cursor, self._room_in_queue())
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
            if not self._running:  # nothing in flight: look again soon, less often when idle
                idle = C.POLL_MIN if view.results else min(idle * 2, C.POLL_MAX)
                time.sleep(idle)
                continue
            idle = C.POLL_MIN
            done, _ = wait(list(self._running), timeout=TICK, return_when=FIRST_COMPLETED)
            for future in done:
                self._finish(future, self._running.pop(future))

    def _room_in_queue(self) -> int:
        """Completions worth claiming now: enough for every creation call that may start."""
        return max(0, C.PLANNER_BATCH * self.settings.planner_calls - len(self._queue))

    def _schedule(self, view: PlanView) -> None:
        creating = sum(1 for job in self._running.values() if job is Job.CREATE)
        if self._queue and view.room <= 0:  # a cap (tasks or budget): nothing more may be added
            batch = list(self._queue)
            self._queue.clear()
            self.jobs.acknowledge(batch)
        coming = creating * self._yield
        buffer = max(view.slots, 1)  # about one queued task per slot, so none waits on a call
        want = min(max(0, view.slots - view.leased) + buffer - view.ready, view.room) - coming
        while self._queue and creating < self.settings.planner_calls:
            urgent = want > 0
            background = not creating and (
                len(self._queue) >= C.PLANNER_BATCH or view.ready < buffer or not view.leased
            )
            if not (urgent or background):
                break
            free = self.settings.planner_calls - creating
            calls = min(free, max(1, math.ceil(want / self._yield))) if urgent else 1
            size = min(C.PLANNER_BATCH, max(1, math.ceil(len(self._queue) / calls)))
            batch = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
            wanted = min(ASK_MAX, max(1, math.ceil(want / calls))) if urgent else None
            job = self._submit(Job.CREATE, self.jobs.create, batch, wanted, view.capabilities)
            self._batches[job] = batch
            creating += 1
            want -= self._yield
        busy = set(self._running.values())
        fresh = [tid for tid in view.head if tid not in self._ordered]
        if Job.PRIORITIZE not in busy and len(view.head) >= 2 and len(fresh) >= 2:
            self._ordered = set(view.head)
            self._submit(Job.PRIORITIZE, self.jobs.prioritize)
        if view.stuck and not (view.ready or view.leased or creating or self._queue or busy):
            self._waiting(view)
        due = view.completed // C.CHECK_EVERY > self._milestone
        dry = view.dry and not self._queue and not creating and Job.REPLAN not in busy
        if Job.CHECK not in busy and (due or (dry and view.completed != self._checked)):
            self._milestone = view.completed // C.CHECK_EVERY
            if dry:  # a periodic check may have seen results still being planned: not this
                self._checked = view.completed
            self._submit(Job.CHECK, self.jobs.check, view.completed)
        elif dry and Job.CHECK not in busy and view.completed == self._checked:
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
        return future

    # -- what finished jobs mean ---------------------------------------------------------------

    def _finish(self, future: Future[Outcome], job: Job) -> None:
        batch = self._batches.pop(future, [])
        try:
            out = future.result()
        except LLMError as exc:
            self._queue.extendleft(reversed(batch))  # unacknowledged: planned on the retry
            self._failed(exc)
            return
        self._failures, self._fault = 0, ""
        if job is Job.CREATE:
            self._yield += (len(out.added) - self._yield) / 4  # a running mean of what calls bring
            self._ledger(out.added != [] or out.novel, out.proposed, out.repeats)
        elif job is Job.REPLAN:
            log.info(
                "replanned (%d of %d): %d new task(s)",
                self.progress.replans,
                C.MAX_REPLANS,
                len(out.added),
            )
            self._ledger(out.added != [], out.proposed, out.repeats)
        elif job is Job.CHECK:
            self.progress.checks += 1
            self._record()
            self._unread = self._unread + 1 if out.unreadable else 0
            if out.met:
                self.board.stop(Reason.DONE, out.why)
            elif self._unread >= UNREADABLE_CHECKS:
                self.board.stop(
                    Reason.STALLED,
                    f"the model's completion check could not be read {self._unread} times "
                    f"in a row (last: {out.why!r}); it did not answer in JSON",
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
        p = self.progress
        p.stalls = max(0, p.stalls - 1) if progress else p.stalls + 1
        if proposed and not progress and 2 * repeats >= proposed:
            p.repeating += 1
        elif progress:
            p.repeating = 0
        self._record()
        if p.repeating >= C.LOOP_BATCHES:
            self.board.stop(
                Reason.LOOP, f"the model re-proposed finished work {p.repeating} times in a row"
            )
        elif p.stalls >= C.STALL_LIMIT:
            self._replan()

    def _replan(self) -> None:
        """A fresh plan, or the end as stalled after MAX_REPLANS of them."""
        p = self.progress
        if p.replans >= C.MAX_REPLANS:
            why = "; ".join(
                filter(None, [f"no progress after {p.replans} fresh plans", self._stuck_note])
            )
            self.board.stop(Reason.STALLED, why)
            return
        if Job.REPLAN in self._running.values():
            return
        p.replans, p.stalls = p.replans + 1, 0
        self._record()
        self._submit(Job.REPLAN, self.jobs.replan)

    def _record(self) -> None:
        self.board.record_progress(self.name, replace(self.progress))
