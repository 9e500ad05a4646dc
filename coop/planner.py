"""The main instance: the only one that creates and prioritizes tasks.

It reads completions from the board in order, folds up to `PLANNER_BATCH` of them into one
task-creation call, and hands the new tasks and the acknowledgement of the batch to the board
in one step; then it prioritizes at most once per batch. The board declares the objective done
when everything is acknowledged and nothing is pending or leased, so a run ends by itself.

Planning is a lease on the board, renewed by a heartbeat thread: a second planner is refused
(or waits, with `--standby`), and one whose claim lapsed is fenced out of adding tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
import ray

from coop import agents, cluster, journal, registry
from coop import constants as C
from coop.board import PlannerLost
from coop.config import RunSettings
from coop.llm import LLM, LLMContextError, LLMFatalError, make_llm
from coop.memory.cluster import ClusterMemory
from coop.types import CoopError, Kind, Reason, Result, Snapshot, State
from coop.worker import Worker, ask, instance_name, stop_on_signals

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 2.0
"""Seconds before a planning batch whose model call failed (after the client's retries) is
tried again; the batch is not acknowledged, so no completion goes unplanned. The pause
doubles with each failure in a row, up to RETRY_MAX."""
RETRY_MAX = 60.0


class Planner:
    def __init__(self, board: Any, llm: LLM, settings: RunSettings, objective: str,
                 name: str, stop: threading.Event) -> None:
        self.board = board
        self.llm = llm
        self.settings = settings
        self.objective = objective
        self.name = name
        self.stop = stop
        self._lost: str | None = None
        self._done = threading.Event()

    def claim(self, *, wait: bool) -> None:
        """Become the planner, or fail (or, with `wait`, stand by) while another one is."""
        announced = False
        while (holder := ray.get(self.board.claim_planner.remote(self.name))) is not None:
            if not wait:
                raise CoopError(f"another planner ({holder}) is running this objective; run "
                                "`coop join` to add workers, or `coop start --standby` to wait")
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

    def run(self) -> None:
        """Plan until the board says the objective is finished."""
        try:
            self._loop()
        finally:
            self._done.set()

    def _loop(self) -> None:
        snap: Snapshot = ray.get(self.board.snapshot.remote())
        cursor = snap.completed - snap.unplanned
        idle = C.POLL_MIN
        backoff = RETRY_AFTER_ERROR
        while True:
            if self._lost:
                raise PlannerLost(f"{self._lost} took over planning; this planner stops")
            if self.stop.is_set():
                ray.get(self.board.stop.remote(Reason.STOPPED))
            results: list[Result] = ray.get(self.board.results.remote(cursor, C.PLANNER_BATCH))
            state, _, _ = ray.get(self.board.state.remote())
            if results and state is State.RUNNING:
                try:
                    self._plan(results, cursor + len(results))
                except (openai.APIError, OSError) as exc:
                    log.warning("planning call failed (%s); retrying in %.0fs",
                                type(exc).__name__, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                except LLMContextError:
                    log.error("creation prompt does not fit the model even with half the "
                              "context: %d result(s) acknowledged without new tasks",
                              len(results))
                backoff = RETRY_AFTER_ERROR
            cursor += len(results)
            state = ray.get(self.board.ack_planned.remote(cursor, self.name))
            if state is State.FINISHED:
                return
            if results:
                idle = C.POLL_MIN
            else:
                time.sleep(idle)
                idle = min(idle * 2, C.POLL_MAX)

    def _ask(self, kind: Kind, build: Any) -> str:
        return ask(self.llm, self.board, self.settings, self.name, kind, build)

    def _plan(self, results: Sequence[Result], upto: int) -> None:
        _, window = ray.get(self.board.pending_window.remote(C.PLANNER_TASK_WINDOW))
        answer = self._ask(Kind.CREATION, lambda budget: agents.creation_prompt(
            self.objective, results, [t.text for t in window], self.llm.tokenizer, budget))
        report = ray.get(self.board.add.remote(agents.parse_tasks(answer), results[-1].task_id,
                                               planner=self.name, planned=upto))
        log.info("planned %d result(s): %d new task(s), %d duplicate(s) rejected",
                 len(results), len(report.added), len(report.duplicates))
        version, window = ray.get(self.board.pending_window.remote(C.PLANNER_TASK_WINDOW))
        if len(window) < 2 or not report.added:
            return  # nothing new to place: the existing order stands
        answer = self._ask(Kind.PRIORITIZATION, lambda budget: agents.prioritization_prompt(
            self.objective, window, self.llm.tokenizer, budget))
        order, unknown = agents.parse_order(answer, window)
        if order:
            moved = ray.get(self.board.reorder.remote(version, order))
            log.info("reordered %d task(s)%s", moved.moved,
                     f", ignored {unknown} invented" if unknown else "")


def _open(objective: str, settings: RunSettings, root: Path, *, resume: bool,
          standby: bool) -> tuple[str, Any, str, RunSettings, bool]:
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


def start(objective: str, settings: RunSettings, *, address: str | None, resume: bool,
          standby: bool, workers: int, concurrency: int) -> Snapshot:
    """`coop start`: open the objective, seed it, plan it (with local workers) to the end."""
    name = instance_name()
    root = journal.state_dir()
    if not (resume or standby):
        make_llm(settings, name)  # a missing key fails here, before anything is created
    conn = cluster.connect(address, start_local=True)
    oid, board, objective, settings, new = _open(objective, settings, root, resume=resume,
                                                 standby=standby)
    llm = make_llm(settings, name)
    stop = stop_on_signals()
    log.info("objective %s — model: %s — journal in %s", oid, llm.label, root)
    log.info("Ray cluster %s%s; dashboard %s; add workers with: coop join %s --address %s",
             conn.address, " (started here: it ends with this run)" if conn.started_here else "",
             conn.dashboard or "off", oid, conn.address)
    planner = Planner(board, llm, settings, objective, name, stop)
    planner.claim(wait=standby)
    if new:
        ray.get(board.add.remote([settings.initial_task], planner=name))
    memory = ClusterMemory(oid, llm, str(root))
    crew = [Worker(board, memory, llm, settings, objective, f"{name}-w{i}", concurrency, stop)
            for i in range(workers)]
    threads = [threading.Thread(target=w.run, name=w.name, daemon=True) for w in crew]
    for t in threads:
        t.start()
    try:
        planner.run()
    except LLMFatalError as exc:
        ray.get(board.stop.remote(Reason.FAILED, str(exc)))
        raise
    finally:
        ray.get(board.release_planner.remote(name))
        for t in threads:
            t.join(C.SHUTDOWN_GRACE)
    snapshot: Snapshot = ray.get(board.snapshot.remote())
    return snapshot
