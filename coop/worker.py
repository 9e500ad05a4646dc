"""The worker role: lease → execute → remember → complete, `concurrency` tasks at a time.

A worker never creates or orders tasks. Its leases are renewed by a heartbeat while the model
works; if the process dies, they expire and the board hands the tasks to someone else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from coop import constants as C
from coop.board import BoardUnavailable, Wake
from coop.calls import Context, Tab, tab
from coop.execution import LeaseLost, execute
from coop.journal import JournalError
from coop.llm import LLMError, LLMFatalError
from coop.secrets import scrub
from coop.text import one_line
from coop.tools.box import Toolbox
from coop.types import Lease, Outcome, Reason, Seat, State

log = logging.getLogger(__name__)

COMPLETE_RETRY_MAX = 30.0
"""Longest pause between attempts to record a result the journal could not take."""


@dataclass
class WorkerReport:
    worker: str
    completed: int = 0
    failed: int = 0
    final_state: State = State.RUNNING
    fatal: str = ""
    node: str = ""  # the Ray node it ran on, as the node itself reports it


class Worker:
    def __init__(
        self,
        ctx: Context,
        concurrency: int,
        stop: threading.Event,
        tools: Toolbox | None = None,
        caps: Sequence[str] = (),
        sandbox: str = "",
    ) -> None:
        """`tools`: what tasks may use here; `caps`: named capabilities this worker has besides
        its tools' (a GPU, a browser); `sandbox`: the isolation of its `python` tool."""
        self.ctx = ctx
        self.board = ctx.board
        self.report = WorkerReport(ctx.name)
        self.concurrency = concurrency
        self.tools = tools
        kit = set(caps) | set(tools.capabilities() if tools else ())
        self.seat = Seat(concurrency, tuple(sorted(kit)), sandbox)
        self.stop = stop  # set by a signal: lease no more
        self._closing = threading.Event()  # the objective grants no more leases
        self._finished = threading.Event()  # nothing held any more: the heartbeat may end
        self._held: dict[int, int] = {}  # task id -> lease token
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.report.worker

    def run(self) -> WorkerReport:
        slots = [
            threading.Thread(target=self._slot, name=f"{self.name}-slot{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        beat = threading.Thread(target=self._heartbeat, name=f"{self.name}-beat", daemon=True)
        for t in [*slots, beat]:
            t.start()
        for t in slots:  # back as soon as they end, a stop seen within POLL_MIN
            while t.is_alive() and not self.stop.is_set():
                t.join(C.POLL_MIN)
        deadline = time.monotonic() + C.SHUTDOWN_GRACE
        for t in slots:
            t.join(max(0.0, deadline - time.monotonic()))
        self._release_held()
        self._finished.set()
        return self.report

    def _slot(self) -> None:
        """Lease and work, one task at a time, until the objective grants no more; a board
        that is gone ends the slot with one line."""
        try:
            self._lease_and_work()
        except BoardUnavailable as exc:
            if not self._closing.is_set():
                log.error("%s; this worker stops", exc)
                self.report.fatal = str(exc)
            self._closing.set()

    def _lease_and_work(self) -> None:
        got: Lease | State | None = None
        seen = 0
        while not (self.stop.is_set() or self._closing.is_set()):
            if got is None:
                seen = self.board.bell(Wake.WORK)  # before the look: a later ring is heard
                got = self.board.lease(self.name, self.seat.caps)
            if isinstance(got, Lease):
                got = self._work(got)  # the next lease, when the board gave one with the ack
                if got is State.RUNNING:  # none came with it: an idle worker, rung, goes first
                    got = None
                    self.stop.wait(C.POLL_MIN)
                continue
            if got is not State.RUNNING:
                self.report.final_state = got
                self._closing.set()
                return
            got = None
            # nothing to lease yet: until the board rings (the planner added a task, one
            # came back, the run stopped); a retry's delay ends unrung, so look again anyway
            self.board.wait(Wake.WORK, seen, C.POLL_MAX)
        if isinstance(got, Lease):  # stopped with a fresh lease in hand: give it back
            self.board.release(got.task.id, got.token, self.name)

    def _work(self, lease: Lease) -> Lease | State | None:
        """Execute one task; returns the next lease when the board handed one out with the
        acknowledgement (None: ask for one)."""
        task = lease.task
        with self._lock:
            self._held[task.id] = lease.token
        nxt: Lease | State | None = None
        try:
            with tab(self.board, self.name, lease) as bill:  # told before fail or release
                # from memory once, not once per prompt try
                context = self.ctx.memory.query(task.text, self.ctx.settings.context_k)
                done = execute(self.ctx, lease, context, self.tools)
                text = done.text
                self.ctx.memory.add(task.id, task.text, text, token=lease.token, worker=self.name)
                outcome, nxt = self._complete(lease, text, done.flaw, bill)
            if outcome is Outcome.STALE:
                log.warning("task #%d: lease lost before completion; result discarded", task.id)
            else:
                with self._lock:  # slot threads share the report
                    self.report.completed += 1
                log.info("task #%d done by %s: %s", task.id, self.name, one_line(task.text, 80))
        except LeaseLost as exc:  # its result would be refused: nothing to report
            log.warning("%s; this attempt stops", exc)
        except LLMFatalError as exc:
            self.report.fatal = str(exc)
            log.error("%s", exc)
            self.board.stop(Reason.FAILED, str(exc))
            self.board.release(task.id, lease.token, self.name)
            self._closing.set()
        except Exception as exc:  # a failed attempt: the board requeues or dead-letters it
            self._fail(lease, exc)
        finally:
            with self._lock:
                self._held.pop(task.id, None)
                if isinstance(nxt, Lease):
                    self._held[nxt.task.id] = nxt.token
        return nxt

    def _complete(
        self, lease: Lease, text: str, flaw: str, bill: Tab
    ) -> tuple[Outcome, Lease | State | None]:
        """Record the result (`flaw`: what makes it degenerate, kept all the same) with what
        the task ran up since its last call (`bill`), and take the next task in the same
        call, unless stopping; while the journal refuses writes, keep the task and retry (a
        refused call left nothing: the retry carries the same bill)."""
        pause = 0.5
        tid, token, name = lease.task.id, lease.token, self.name
        while True:
            last, embedded = bill.last, tuple(bill.embedded)
            try:
                if self.stop.is_set():
                    done = self.board.complete(tid, token, name, text, flaw, last, embedded)
                    got: tuple[Outcome, Lease | State | None] = done, None
                else:
                    got = self.board.complete_and_lease(
                        tid, token, name, text, self.seat.caps, flaw, last, embedded
                    )
                bill.last, bill.embedded = None, []
                return got
            except JournalError as exc:
                log.warning(
                    "task #%d: result not recorded yet (%s); retrying in %.0fs",
                    lease.task.id,
                    one_line(str(exc), 160),
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, COMPLETE_RETRY_MAX)

    def _fail(self, lease: Lease, exc: Exception) -> None:
        # a model fault's message already starts with its kind (`APITimeoutError: …`)
        said = str(exc) if isinstance(exc, LLMError) else f"{type(exc).__name__}: {exc}"
        reason = scrub(one_line(said, 300))
        with self._lock:
            self.report.failed += 1
        try:
            outcome = self.board.fail(lease.task.id, lease.token, self.name, reason)
        except JournalError:
            log.warning(
                "task #%d failed (%s); not recorded, its lease will expire", lease.task.id, reason
            )
            return
        log.warning("task #%d failed (%s), %s", lease.task.id, reason, outcome.value)

    def _heartbeat(self) -> None:
        """Renew what this worker holds every third of the lease time; the first beat, at
        once, tells the board (and so the planner) how many tasks it can take."""
        interval = max(self.ctx.settings.lease_ttl / 3, 0.2)
        beat = 0.0
        while not self._finished.wait(beat):
            beat = interval
            with self._lock:
                held = list(self._held.items())
            try:
                lost = self.board.heartbeat(self.name, held, self.seat)
            except BoardUnavailable as exc:
                log.warning("heartbeat failed: %s", one_line(str(exc), 120))
                continue
            for tid in lost:
                log.warning("task #%d: lease expired while working on it", tid)

    def _release_held(self) -> None:
        with self._lock:
            held = list(self._held.items())
        for tid, token in held:
            try:
                self.board.release(tid, token, self.name)
            except BoardUnavailable:
                return  # the board is gone: its leases expire on their own
            log.info("task #%d released unfinished", tid)
