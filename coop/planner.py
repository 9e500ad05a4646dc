"""The main instance: the only one that creates and prioritizes tasks, and decides when to stop.

It reads completions from the board in order, folds up to `PLANNER_BATCH` of them into one
task-creation call, and hands the new tasks and the acknowledgement of the batch to the board
in one step; then it prioritizes the head of the list at most once per batch.

It keeps a progress ledger in the spirit of Magentic-One's: a batch that adds no task and
whose results say nothing new is a stall; at `STALL_LIMIT` stalls it replans from scratch, and
after `MAX_REPLANS` fruitless replans the objective stops as stalled. Batches that only
re-propose finished work stop it as a loop. Every `CHECK_EVERY` completions, and whenever the
list runs dry, it asks the model whether the objective is met.

Planning is a lease on the board, renewed by a heartbeat thread: a second planner is refused
(or waits, with `--standby`), and one whose claim lapsed is fenced out of adding tasks.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import openai
import ray
from rich.console import Console

from coop import agents, cluster, journal, registry, report, status
from coop import constants as C
from coop import memory as memories
from coop.board import PlannerLost
from coop.config import RunSettings
from coop.llm import LLM, LLMContextError, LLMFatalError, make_llm
from coop.memory import Memory
from coop.text import normalize
from coop.types import (
    CoopError,
    Kind,
    Progress,
    Pulse,
    Reason,
    Result,
    Snapshot,
    State,
    Task,
)
from coop.worker import ask, instance_name, metered, start_crew, stop_on_signals

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 2.0
"""Seconds before a planning step whose model call failed (after the client's retries) is
tried again; the batch is not acknowledged, so no completion goes unplanned. The pause
doubles with each failure in a row, up to RETRY_MAX."""
RETRY_MAX = 60.0


class TaskIndex:
    """Embeddings of every task on the board, to turn away proposals that only reword one.
    Exact repeats are left to the board, which counts them as such."""

    def __init__(self, llm: LLM, on_usage: Callable[[int], None]) -> None:
        self.llm = llm
        self.on_usage = on_usage
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.known: set[str] = set()

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = self.llm.embed(list(texts))
        self.on_usage(out.tokens)
        m = np.asarray(out.vectors, dtype=np.float32)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.where(norms == 0, 1, norms)

    def add(self, texts: Sequence[str]) -> None:
        if texts:
            new = self._embed(texts)
            self.vectors = new if not self.vectors.size else np.vstack([self.vectors, new])
            self.known.update(normalize(t) for t in texts)

    def split(self, proposals: Sequence[str]) -> tuple[list[str], list[str]]:
        """(to add, near-duplicates): a proposal too close to a known task, or to an earlier
        proposal of the same batch, is a near-duplicate."""
        exact = [p for p in proposals if normalize(p) in self.known]
        others = [p for p in proposals if normalize(p) not in self.known]
        if not others:
            return exact, []
        vecs = self._embed(others)
        known = (self.vectors @ vecs.T).max(axis=0) if self.vectors.size else np.zeros(len(vecs))
        fresh: list[str] = exact
        near: list[str] = []
        kept: list[int] = []  # rows of `vecs` accepted so far in this batch
        for i, text in enumerate(others):
            within = float((vecs[kept] @ vecs[i]).max()) if kept else 0.0
            if max(float(known[i]), within) >= C.TASK_SIMILARITY:
                near.append(text)
            else:
                fresh.append(text)
                kept.append(i)
        return fresh, near


class Planner:
    def __init__(
        self,
        board: Any,
        llm: LLM,
        memory: Memory,
        settings: RunSettings,
        objective: str,
        name: str,
        stop: threading.Event,
    ) -> None:
        self.board = board
        self.llm = llm
        self.memory = memory
        self.settings = settings
        self.objective = objective
        self.name = name
        self.stop = stop
        self.index = TaskIndex(llm, metered(board, name))
        self.progress = Progress()
        self.interactive = False  # ask for approvals in this terminal (set by `start`)
        self._lost: str | None = None
        self._done = threading.Event()

    # -- the planner lease ----------------------------------------------------------------

    def claim(self, *, wait: bool) -> None:
        """Become the planner, or fail (or, with `wait`, stand by) while another one is."""
        announced = False
        while (holder := ray.get(self.board.claim_planner.remote(self.name))) is not None:
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
        threading.Thread(target=self._keep_claim, name="planner-claim", daemon=True).start()

    def _keep_claim(self) -> None:
        while not self._done.wait(C.PLANNER_TTL / 3):
            try:
                holder = ray.get(self.board.claim_planner.remote(self.name))
            except ray.exceptions.RayError:
                continue
            if holder is not None:
                self._lost = holder
                return

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Plan until the board says the objective is finished."""
        try:
            self._loop()
        finally:
            self._done.set()

    def _loop(self) -> None:
        snap: Snapshot = ray.get(self.board.snapshot.remote())
        if snap.state is State.FINISHED:
            return  # a resumed run that had already ended: nothing to plan, nothing to embed
        self.progress = snap.progress
        self.index.add([text for _, text in ray.get(self.board.task_texts.remote())])
        cursor = snap.completed - snap.unplanned
        checked = cursor // C.CHECK_EVERY
        deadline = (
            time.monotonic() + self.settings.max_minutes * 60 if self.settings.max_minutes else None
        )
        idle, backoff = C.POLL_MIN, RETRY_AFTER_ERROR
        while True:
            if self._lost:
                raise PlannerLost(f"{self._lost} took over planning; this planner stops")
            if self.stop.is_set():
                ray.get(self.board.stop.remote(Reason.STOPPED))
            if deadline is not None and time.monotonic() > deadline:
                ray.get(
                    self.board.stop.remote(
                        Reason.TIMEOUT, f"ran for --max-minutes {self.settings.max_minutes:g}"
                    )
                )
            results: list[Result] = ray.get(self.board.results.remote(cursor, C.PLANNER_BATCH))
            state, _, _ = ray.get(self.board.state.remote())
            try:
                if results and state is State.RUNNING:
                    self._plan(results, cursor + len(results))
                cursor += len(results)
                state, dry = ray.get(self.board.ack_planned.remote(cursor, self.name))
                if state is State.RUNNING and (dry or cursor // C.CHECK_EVERY > checked):
                    checked = cursor // C.CHECK_EVERY
                    self._review(cursor, dry)
            except (openai.APIError, OSError) as exc:
                log.warning(
                    "planning call failed (%s); retrying in %.0fs", type(exc).__name__, backoff
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = RETRY_AFTER_ERROR
            if state is State.FINISHED:
                return
            if results:
                idle = C.POLL_MIN
            else:
                time.sleep(idle)
                idle = min(idle * 2, C.POLL_MAX)

    def _ask(self, kind: Kind, build: Callable[[int], str]) -> str:
        return ask(self.llm, self.board, self.settings, self.name, kind, build)

    def _propose(
        self, answer: str, parent: int | None, planned: int | None
    ) -> tuple[list[Task], int, int]:
        """Add what a creation or replanning answer proposes. Returns the tasks added, how
        many were proposed, and how many only repeated finished work."""
        proposals = agents.parse_tasks(answer)
        fresh, near = self.index.split(proposals)
        outcome: Any = ray.get(
            self.board.add.remote(
                fresh,
                parent,
                planner=self.name,
                planned=planned,
                hold=self.settings.approve,
                near_duplicates=len(near),
            )
        )
        self.index.add([t.text for t in outcome.added])
        if outcome.added and self.interactive:
            self._approve_here(outcome.added)
        return outcome.added, len(proposals), outcome.repeats + len(near)

    def _plan(self, results: Sequence[Result], upto: int) -> None:
        _, window = ray.get(self.board.pending_window.remote(C.PLANNER_TASK_WINDOW))
        try:
            answer = self._ask(
                Kind.CREATION,
                lambda budget: agents.creation_prompt(
                    self.objective, results, [t.text for t in window], self.llm.tokenizer, budget
                ),
            )
        except LLMContextError:
            log.error(
                "creation prompt does not fit the model even with half the context: "
                "%d result(s) acknowledged without new tasks",
                len(results),
            )
            answer = ""
        added, proposed, repeats = self._propose(answer, results[-1].task_id, upto)
        log.info(
            "planned %d result(s): %d new task(s) of %d proposed",
            len(results),
            len(added),
            proposed,
        )
        novel = any(self._is_news(r) for r in results)
        self._ledger(progress=bool(added) or novel, proposed=proposed, repeats=repeats)
        if added:
            self._prioritize()

    def _is_news(self, result: Result) -> bool:
        """Does a result say something no earlier result said?"""
        hits = self.memory.query(result.text, 2)
        return not any(h.task_id != result.task_id and h.score >= C.RESULT_SIMILARITY for h in hits)

    def _prioritize(self) -> None:
        version, window = ray.get(self.board.pending_window.remote(C.PRIORITIZE_WINDOW))
        if len(window) < 2:
            return
        answer = self._ask(
            Kind.PRIORITIZATION,
            lambda budget: agents.prioritization_prompt(
                self.objective, window, self.llm.tokenizer, budget
            ),
        )
        order, unknown = agents.parse_order(answer, window)
        if order:
            moved = ray.get(self.board.reorder.remote(version, order))
            log.info(
                "reordered %d task(s)%s",
                moved.moved,
                f", ignored {unknown} invented" if unknown else "",
            )

    def _ledger(self, *, progress: bool, proposed: int, repeats: int) -> None:
        p = self.progress
        p.stalls = max(0, p.stalls - 1) if progress else p.stalls + 1
        if proposed and not progress and 2 * repeats >= proposed:
            p.repeating += 1
        elif progress:
            p.repeating = 0
        self._record()
        if p.repeating >= C.LOOP_BATCHES:
            ray.get(
                self.board.stop.remote(
                    Reason.LOOP, f"the model re-proposed finished work {p.repeating} times in a row"
                )
            )
        elif p.stalls >= C.STALL_LIMIT:
            self._replan()

    def _review(self, completed: int, dry: bool) -> None:
        """Ask whether the objective is met; a dry list that is not done gets a fresh plan."""
        recent = ray.get(self.board.results.remote(max(0, completed - 5)))
        pulse: Pulse = ray.get(self.board.pulse.remote())
        answer = self._ask(
            Kind.COMPLETION_CHECK,
            lambda budget: agents.completion_prompt(
                self.objective,
                recent,
                completed,
                pulse.pending + pulse.leased,
                self.llm.tokenizer,
                budget,
            ),
        )
        met, why = agents.parse_completion(answer)
        self.progress.checks += 1
        self._record()
        log.info(
            "completion check after %d task(s): %s%s",
            completed,
            "met" if met else "not met",
            f" ({why})" if why else "",
        )
        if met:
            ray.get(self.board.stop.remote(Reason.DONE, why))
        elif dry:
            self._replan()

    def _record(self) -> None:
        ray.get(self.board.record_progress.remote(self.name, replace(self.progress)))

    def _replan(self) -> None:
        """A fresh plan from the objective and the work done; called with the ledger already
        recorded, so a stop here needs no new record."""
        p = self.progress
        if p.replans >= C.MAX_REPLANS:
            ray.get(
                self.board.stop.remote(Reason.STALLED, f"no progress after {p.replans} fresh plans")
            )
            return
        p.replans, p.stalls = p.replans + 1, 0
        completed = ray.get(self.board.pulse.remote()).completed
        since = max(0, completed - C.REPLAN_HISTORY)  # the prompt keeps the newest that fit
        done = [r.task for r in ray.get(self.board.results.remote(since))]
        answer = self._ask(
            Kind.CREATION,
            lambda budget: agents.replan_prompt(self.objective, done, self.llm.tokenizer, budget),
        )
        added, proposed, repeats = self._propose(answer, None, None)
        log.info("replanned (%d of %d): %d new task(s)", p.replans, C.MAX_REPLANS, len(added))
        if added:
            self._prioritize()
        self._ledger(progress=bool(added), proposed=proposed, repeats=repeats)

    def _approve_here(self, tasks: Sequence[Task]) -> None:
        from coop import status  # a view: imported only when a person is there to see it

        approve, drop = status.review_tasks(tasks)
        if approve:
            ray.get(self.board.approve.remote(approve))
        if drop:
            ray.get(self.board.drop.remote(drop))


def _open(
    objective: str, settings: RunSettings, root: Path, *, resume: bool, standby: bool
) -> tuple[str, Any, str, RunSettings, bool]:
    """The board to plan: created, or (resume/standby) found live or revived from its journal.
    Returns its id, handle, objective text, settings and whether it is new."""
    if resume or standby:
        try:
            oid, board = registry.find_or_revive(objective, root)
        except registry.ObjectiveNotFound:
            if resume:
                raise
        else:
            text = ray.get(board.describe.remote()).text
            return oid, board, text, ray.get(board.run_settings.remote()), False
    oid, board = registry.create_board(objective, settings, root)
    return oid, board, objective, settings, True


def start(
    objective: str,
    settings: RunSettings,
    *,
    address: str | None,
    resume: bool,
    standby: bool,
    workers: int,
    concurrency: int,
    live: bool = False,
) -> tuple[Snapshot, Path]:
    """`coop start`: open the objective, seed it, plan it (with local workers) to the end.
    Returns the final snapshot and the path of the report written about it. `live`: a
    progress line on the terminal while it runs (not with an approval prompt there)."""
    name = instance_name()
    root = journal.state_dir()
    if not (resume or standby):  # a missing key or memory fails here, before anything exists
        make_llm(settings, name)
        memories.check(settings, root)
    conn = cluster.connect(address, start_local=True, stream_logs=True)
    oid, board, objective, settings, new = _open(
        objective, settings, root, resume=resume, standby=standby
    )
    if resume or standby:  # settings from the board: its memory is checked now
        memories.check(settings, root)
    llm = make_llm(settings, name)
    stop = stop_on_signals()
    log.info("objective %s — model: %s — journal in %s", oid, llm.label, root)
    log.info(
        "Ray cluster %s%s; dashboard %s; add workers with: coop join %s --address %s",
        conn.address,
        " (started here: it ends with this run)" if conn.started_here else "",
        conn.dashboard or "off",
        oid,
        conn.address,
    )
    memory = memories.open_memory(settings, oid, llm, root, metered(board, name))
    planner = Planner(board, llm, memory, settings, objective, name, stop)
    planner.interactive = settings.approve and sys.stdin.isatty()
    planner.claim(wait=standby)
    if new:
        ray.get(board.add.remote([settings.initial_task], planner=name))
    crew = start_crew(board, settings, count=workers, concurrency=concurrency)
    showing = (
        status.progress_line(Console(stderr=True), board)
        if live and not planner.interactive
        else contextlib.nullcontext()
    )
    with showing:
        try:
            planner.run()
        except LLMFatalError as exc:
            ray.get(board.stop.remote(Reason.FAILED, str(exc)))
            raise
        except BaseException:
            stop.set()  # leaving early (Ctrl-C, lost claim): our workers stop with us
            raise
        finally:
            ray.get(board.release_planner.remote(name))
            crew.wait(stop)
    snapshot: Snapshot = ray.get(board.snapshot.remote())
    tape = status.events(registry.Reader(handle=board))
    path = report.write(root, snapshot, ray.get(board.results.remote()), tape)
    return snapshot, path
