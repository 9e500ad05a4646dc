"""The main instance: the only one that creates and prioritizes tasks.

It reads completions from the board in order, folds up to `PLANNER_BATCH` of them into one
task-creation call, prioritizes at most once per batch, then acknowledges them. The board
declares the objective done when everything is acknowledged and nothing is pending or leased,
so a run ends by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import openai
import ray

from coop import agents, cluster, registry
from coop import constants as C
from coop.config import RunSettings
from coop.llm import LLM, LLMFatalError, make_llm
from coop.memory.cluster import ClusterMemory
from coop.types import CoopError, Kind, Reason, Result, Snapshot, State
from coop.worker import Worker, instance_name, stop_on_signals

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = 2.0
"""Seconds before a planning batch whose model call failed (after the client's retries) is
tried again; the batch is not acknowledged, so no completion goes unplanned."""


class Planner:
    def __init__(self, board: Any, llm: LLM, settings: RunSettings, objective: str,
                 name: str, stop: threading.Event) -> None:
        self.board = board
        self.llm = llm
        self.settings = settings
        self.objective = objective
        self.name = name
        self.stop = stop
        self._claimed_at = 0.0

    def _budget(self) -> int:
        return self.settings.max_prompt_tokens - self.settings.max_completion_tokens

    def _ask(self, kind: Kind, prompt: str) -> str:
        reply = self.llm.complete(prompt, self.settings.max_completion_tokens)
        self.board.record_usage.remote(self.name, kind.value, reply.prompt_tokens,
                                       reply.completion_tokens)
        return reply.text

    def claim(self) -> None:
        holder = ray.get(self.board.claim_planner.remote(self.name))
        if holder is not None:
            raise CoopError(f"another planner ({holder}) is running this objective; "
                            "run `coop join` to add workers instead")
        self._claimed_at = time.monotonic()

    def run(self) -> None:
        """Plan until the board says the objective is finished."""
        snap: Snapshot = ray.get(self.board.snapshot.remote())
        cursor = snap.completed - snap.unplanned
        idle = C.POLL_MIN
        while True:
            if self.stop.is_set():
                ray.get(self.board.stop.remote(Reason.STOPPED))
            if time.monotonic() - self._claimed_at > C.PLANNER_TTL / 3:
                self.claim()
            results: list[Result] = ray.get(self.board.results.remote(cursor, C.PLANNER_BATCH))
            state, _, _ = ray.get(self.board.state.remote())
            if results and state is State.RUNNING:
                try:
                    self._plan(results)
                except (openai.APIError, OSError) as exc:
                    log.warning("planning call failed (%s); retrying", type(exc).__name__)
                    time.sleep(RETRY_AFTER_ERROR)
                    continue
            cursor += len(results)
            state = ray.get(self.board.ack_planned.remote(cursor))
            if state is State.FINISHED:
                return
            if results:
                idle = C.POLL_MIN
            else:
                time.sleep(idle)
                idle = min(idle * 2, C.POLL_MAX)

    def _plan(self, results: Sequence[Result]) -> None:
        _, window = ray.get(self.board.pending_window.remote(C.PLANNER_TASK_WINDOW))
        prompt = agents.creation_prompt(self.objective, results, [t.text for t in window],
                                        self.llm.tokenizer, self._budget())
        report = ray.get(self.board.add.remote(agents.parse_tasks(self._ask(Kind.CREATION,
                                                                            prompt)),
                                               results[-1].task_id))
        log.info("planned %d result(s): %d new task(s), %d duplicate(s) rejected",
                 len(results), len(report.added), len(report.duplicates))
        version, window = ray.get(self.board.pending_window.remote(C.PLANNER_TASK_WINDOW))
        if len(window) < 2 or not report.added:
            return  # nothing new to place: the existing order stands
        prompt = agents.prioritization_prompt(self.objective, window, self.llm.tokenizer,
                                              self._budget())
        order, unknown = agents.parse_order(self._ask(Kind.PRIORITIZATION, prompt), window)
        if order:
            moved = ray.get(self.board.reorder.remote(version, order))
            log.info("reordered %d task(s)%s", moved.moved,
                     f", ignored {unknown} invented" if unknown else "")


def start(objective: str, settings: RunSettings, *, address: str | None, resume: bool,
          workers: int, concurrency: int) -> Snapshot:
    """`coop start`: open the objective, seed it, plan it (with local workers) to the end."""
    name = instance_name()
    if resume:  # the run's own settings, whatever the flags say
        conn = cluster.connect(address, start_local=True)
        oid, board = registry.find(objective)
        objective = ray.get(board.describe.remote()).text
        settings = ray.get(board.run_settings.remote())
        llm = make_llm(settings, name)
    else:
        llm = make_llm(settings, name)  # a missing key fails here, before anything is created
        conn = cluster.connect(address, start_local=True)
        oid, board = registry.create_board(objective, settings)
    stop = stop_on_signals()
    log.info("objective %s — model: %s", oid, llm.label)
    log.info("Ray cluster %s%s; dashboard %s; add workers with: coop join %s --address %s",
             conn.address, " (started here: it ends with this run)" if conn.started_here else "",
             conn.dashboard or "off", oid, conn.address)
    planner = Planner(board, llm, settings, objective, name, stop)
    planner.claim()
    if not resume:
        ray.get(board.add.remote([settings.initial_task]))
    memory = ClusterMemory(oid, llm)
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
