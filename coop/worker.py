"""The worker role: lease → execute → remember → complete, `concurrency` tasks at a time.

A worker never creates or orders tasks. Its leases are renewed by a heartbeat while the model
works; if the process dies, they expire and the board hands the tasks to someone else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from coop import agents, cluster, registry
from coop import constants as C
from coop import memory as memories
from coop.config import RunSettings, configure_logging, forwarded_env, local_endpoint, scrub
from coop.journal import JournalError
from coop.llm import LLM, LLMContextError, LLMFatalError, make_llm
from coop.memory import Memory, open_memory
from coop.text import one_line
from coop.types import Kind, Lease, Objective, Outcome, Reason, State

log = logging.getLogger(__name__)

COMPLETE_RETRY_MAX = 30.0
"""Longest pause between attempts to record a result the journal could not take."""


def instance_name(suffix: str = "") -> str:
    """`host-pid[-suffix]`: unique in a cluster, and says where the process runs."""
    return f"{socket.gethostname()}-{os.getpid()}{suffix}"


def ask(
    llm: LLM,
    board: Any,
    settings: RunSettings,
    name: str,
    kind: Kind,
    build: Callable[[int], str],
    task_id: int | None = None,
) -> str:
    """One model call with coop's discipline: the cluster-wide rate limit first, usage
    recorded on the board after, and one retry with half the context if the prompt was too
    long for the model. `build(budget)` makes the prompt for a token budget."""
    budget = settings.max_prompt_tokens - settings.max_completion_tokens
    retried = False
    while True:
        prompt = build(budget)
        cost = llm.tokenizer.count(prompt) + settings.max_completion_tokens
        while (wait := ray.get(board.acquire.remote(cost))) > 0:
            time.sleep(min(wait, 5.0))
        began = time.monotonic()
        try:
            reply = llm.complete(prompt, settings.max_completion_tokens)
        except LLMContextError:
            if retried:
                raise
            log.warning("%s prompt too long for the model; retrying with less context", kind.value)
            retried, budget = True, budget // 2
            continue
        board.record_usage.remote(
            name,
            kind.value,
            reply.prompt_tokens,
            reply.completion_tokens,
            time.monotonic() - began,
            task_id,
        )
        return reply.text


def metered(board: Any, name: str) -> Callable[[int], None]:
    """A recorder of embedding tokens, for memory and indexes that embed on `name`'s behalf."""

    def record(tokens: int) -> None:
        board.record_usage.remote(name, Kind.EMBEDDING.value, tokens, 0)

    return record


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
        board: Any,
        memory: Memory,
        llm: LLM,
        settings: RunSettings,
        objective: str,
        name: str,
        concurrency: int,
        stop: threading.Event,
    ) -> None:
        self.board = board
        self.memory = memory
        self.llm = llm
        self.settings = settings
        self.objective = objective
        self.report = WorkerReport(name)
        self.concurrency = concurrency
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
        while any(t.is_alive() for t in slots) and not self.stop.is_set():
            time.sleep(C.POLL_MAX)
        deadline = time.monotonic() + C.SHUTDOWN_GRACE
        for t in slots:
            t.join(max(0.0, deadline - time.monotonic()))
        self._release_held()
        self._finished.set()
        return self.report

    def _slot(self) -> None:
        idle = C.POLL_MIN
        got: Lease | State | None = None
        while not (self.stop.is_set() or self._closing.is_set()):
            if got is None:
                got = ray.get(self.board.lease.remote(self.name))
            if isinstance(got, Lease):
                idle = C.POLL_MIN
                got = self._work(got)  # the next lease, when the board gave one with the ack
                continue
            if got is not State.RUNNING:
                self.report.final_state = got
                self._closing.set()
                return
            got = None
            self.stop.wait(idle)  # nothing to lease yet: wait for the planner
            idle = min(idle * 2, C.POLL_MAX)
        if isinstance(got, Lease):  # stopped with a fresh lease in hand: give it back
            ray.get(self.board.release.remote(got.task.id, got.token, self.name))

    def _work(self, lease: Lease) -> Lease | State | None:
        """Execute one task; returns the next lease when the board handed one out with the
        acknowledgement (None: ask for one)."""
        task = lease.task
        with self._lock:
            self._held[task.id] = lease.token
        nxt: Lease | State | None = None
        try:
            context = self.memory.query(task.text, self.settings.context_k)  # once, not per try
            text = ask(
                self.llm,
                self.board,
                self.settings,
                self.name,
                Kind.EXECUTION,
                lambda budget: agents.execution_prompt(
                    self.objective, task.text, context, self.llm.tokenizer, budget
                ),
                task.id,
            )
            self.memory.add(task.id, task.text, text, token=lease.token, worker=self.name)
            outcome, nxt = self._complete(lease, text)
            if outcome is Outcome.STALE:
                log.warning("task #%d: lease lost before completion; result discarded", task.id)
            else:
                self.report.completed += 1
                log.info("task #%d done by %s: %s", task.id, self.name, one_line(task.text, 80))
        except LLMFatalError as exc:
            self.report.fatal = str(exc)
            log.error("%s", exc)
            ray.get(self.board.stop.remote(Reason.FAILED, str(exc)))
            ray.get(self.board.release.remote(task.id, lease.token, self.name))
            self._closing.set()
        except Exception as exc:  # a failed attempt: the board requeues or dead-letters it
            self._fail(lease, exc)
        finally:
            with self._lock:
                self._held.pop(task.id, None)
                if isinstance(nxt, Lease):
                    self._held[nxt.task.id] = nxt.token
        return nxt

    def _complete(self, lease: Lease, text: str) -> tuple[Outcome, Lease | State | None]:
        """Record the result (and take the next task in the same call, unless stopping);
        while the journal refuses writes, keep the task and retry."""
        pause = 0.5
        while True:
            try:
                if self.stop.is_set():
                    outcome: Outcome = ray.get(
                        self.board.complete.remote(lease.task.id, lease.token, self.name, text)
                    )
                    return outcome, None
                both: tuple[Outcome, Lease | State] = ray.get(
                    self.board.complete_and_lease.remote(
                        lease.task.id, lease.token, self.name, text
                    )
                )
                return both
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
        if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
            exc = exc.cause  # the actor's own error, not Ray's wrapper with its traceback
        reason = scrub(f"{type(exc).__name__}: {one_line(str(exc), 300)}")
        self.report.failed += 1
        try:
            outcome = ray.get(self.board.fail.remote(lease.task.id, lease.token, self.name, reason))
        except JournalError:
            log.warning(
                "task #%d failed (%s); not recorded, its lease will expire", lease.task.id, reason
            )
            return
        log.warning("task #%d failed (%s), %s", lease.task.id, reason, outcome.value)

    def _heartbeat(self) -> None:
        interval = max(self.settings.lease_ttl / 3, 0.2)
        while not self._finished.wait(interval):
            with self._lock:
                held = list(self._held.items())
            try:
                lost = ray.get(self.board.heartbeat.remote(self.name, held))
            except ray.exceptions.RayError as exc:
                log.warning("heartbeat failed: %s", one_line(str(exc), 120))
                continue
            for tid in lost:
                log.warning("task #%d: lease expired while working on it", tid)

    def _release_held(self) -> None:
        with self._lock:
            held = list(self._held.items())
        for tid, token in held:
            ray.get(self.board.release.remote(tid, token, self.name))
            log.info("task #%d released unfinished", tid)


class WorkerActor:
    """A Worker as a Ray actor named `coop:<objective>:worker:<host>:<n>` and pinned to a node,
    so the dashboard's Actors view shows who works where. It is owned by the `coop` process
    that made it and dies with it: its leases then expire and go to someone else."""

    def __init__(
        self,
        board: Any,
        objective: Objective,
        name: str,
        settings: RunSettings,
        env: dict[str, str],
        concurrency: int,
        quiet: bool,
    ) -> None:
        os.environ.update(env)  # this process is the actor's own: keys, model and memory URLs
        configure_logging(quiet)  # coop's log format and secret filter
        self.name = name
        self._stop = threading.Event()
        llm = make_llm(settings, name)
        root = Path(ray.get(board.storage.remote()))
        memory = open_memory(settings, objective.id, llm, root, metered(board, name))
        self._worker = Worker(
            board, memory, llm, settings, objective.text, name, concurrency, self._stop
        )
        self._worker.report.node = ray.get_runtime_context().get_node_id()

    def run(self) -> WorkerReport:
        return self._worker.run()

    def stop(self) -> None:
        self._stop.set()

    def __repr__(self) -> str:  # Ray prefixes this actor's log lines with it
        return self.name


@dataclass
class Crew:
    """Worker actors started by one `coop` process, and the runs they are doing."""

    runs: dict[Any, tuple[str, Any]]  # run ref -> (worker name, actor)

    def names(self) -> list[str]:
        return [name for name, _ in self.runs.values()]

    def wait(self, stop: threading.Event) -> list[WorkerReport]:
        """Until every worker has finished; `stop` (a signal) is passed on to them."""
        pending, reports, told = list(self.runs), [], False
        while pending:
            if stop.is_set() and not told:
                for _, actor in self.runs.values():
                    actor.stop.remote()
                told = True
            done, pending = ray.wait(pending, num_returns=1, timeout=C.POLL_MAX)
            for ref in done:
                reports.append(self._report(ref))
        return reports

    def _report(self, ref: Any) -> WorkerReport:
        try:
            report: WorkerReport = ray.get(ref)
        except ray.exceptions.RayError as exc:
            name, cause = self.runs[ref][0], cluster.death_cause(exc)
            log.error("worker %s died: %s", name, cause)
            return WorkerReport(name, fatal=cause)
        return report


def start_crew(
    board: Any, settings: RunSettings, *, count: int, concurrency: int, node: str | None = None
) -> Crew:
    """`count` worker actors on `node` (default: this process's node), each running."""
    if count == 0:
        return Crew({})
    info = ray.get(board.describe.remote())
    if not settings.simulated:  # a missing key or an unreachable memory fails here, in one line
        local_endpoint(settings)
    memories.check(settings, Path(ray.get(board.storage.remote())))
    node_id, host = cluster.resolve_node(node)
    quiet = not log.isEnabledFor(logging.INFO)
    runs: dict[Any, tuple[str, Any]] = {}
    index = 0
    while len(runs) < count:
        name = f"{host}:{index}"
        index += 1
        actor = cluster.pinned_actor(
            WorkerActor,
            cluster.actor_name(info.id, f"worker:{name}"),
            node_id,
            concurrency=2,  # run() and stop()
            args=(board, info, name, settings, forwarded_env(), concurrency, quiet),
        )
        if actor is not None:  # else the name is taken by another `coop` on this host
            runs[actor.run.remote()] = (name, actor)
    crew = Crew(runs)
    log.info("workers %s on node %s", ", ".join(crew.names()), node_id[:8])
    return crew


def join(ref: str, address: str | None, concurrency: int, node: str | None) -> WorkerReport:
    """`coop join`: work on an existing objective until it finishes or we are told to stop."""
    cluster.connect(address, start_local=False, stream_logs=True)
    stop = stop_on_signals()  # after connecting: ray.init installs a SIGTERM handler of its own
    oid, board = registry.find(ref)
    settings: RunSettings = ray.get(board.run_settings.remote())
    crew = start_crew(board, settings, count=1, concurrency=concurrency, node=node)
    log.info("joined %s as %s (%s)", oid, crew.names()[0], settings.label)
    return crew.wait(stop)[0]


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT/SIGTERM; a second SIGINT interrupts at once.

    Call it after `cluster.connect`: ray.init replaces the SIGTERM handler with one that exits.
    """
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("stopping: finishing in-flight tasks (Ctrl-C again to abort)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
