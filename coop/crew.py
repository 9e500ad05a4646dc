"""The worker role on a cluster: Worker loops as named Ray actors pinned to a node, owned by
the `coop` process that starts them (`coop join`, or `coop start --workers N`).

Kept apart from worker.py so that the worker's logic runs, and is tested, without Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import ray

from coop import cluster, registry
from coop import constants as C
from coop import memory as memories
from coop.board import BoardClient
from coop.calls import Context, metered
from coop.config import RunSettings, configure_logging, forwarded_env, local_endpoint
from coop.errors import CoopError
from coop.llm import make_llm
from coop.memory import open_memory
from coop.tools.kit import Kit, toolbox
from coop.types import Kind
from coop.worker import Worker, WorkerReport

log = logging.getLogger(__name__)


class WorkerActor:
    """A Worker as a Ray actor named `coop:<objective>:worker:<host>:<n>` and pinned to a node,
    so the dashboard's Actors view shows who works where. It is owned by the `coop` process
    that made it and dies with it: its leases then expire and go to someone else."""

    def __init__(
        self,
        board: BoardClient,
        objective: str,
        name: str,
        settings: RunSettings,
        env: dict[str, str],
        concurrency: int,
        quiet: bool,
        kit: Kit,
        check: bool = False,
    ) -> None:
        os.environ.update(env)  # this process is the actor's own: keys, model and memory URLs
        configure_logging(quiet)  # coop's log format and secret filter
        self.name = name
        self._stop = threading.Event()
        llm = make_llm(settings, name, "worker")
        self._refusal: CoopError | None = None
        if check:  # kept for `checked`: this process's exception would be Ray's, not one line
            try:
                if spent := llm.check():  # its embeddings call is charged
                    board.record_usage(name, Kind.EMBEDDING.value, spent, 0)
            except CoopError as exc:
                self._refusal = exc
                return  # nothing more is started: `run` ends at once with the refusal
        oid = board.objective_id
        memory = open_memory(settings, oid, llm, board.storage(), metered(board, name))
        ctx = Context(board, llm, memory, settings, objective, name)
        self._tools, isolation = toolbox(board, settings, kit)
        if self._tools:
            log.info("%s can use: %s", name, ", ".join(s.name for s in self._tools.specs()))
        self._worker = Worker(ctx, concurrency, self._stop, self._tools, kit.caps, isolation)
        self._worker.report.node = ray.get_runtime_context().get_node_id()

    def checked(self) -> None:
        """Raises why the model cannot be used from here (key, server, models), if it cannot:
        `coop join` checks it where its worker runs, in the process that loads the model's
        client anyway, instead of loading one of its own (0.7 s) only to check."""
        if self._refusal is not None:
            raise self._refusal

    def run(self) -> WorkerReport:
        if self._refusal is not None:  # it does no work; `checked` raises why
            return WorkerReport(self.name, fatal=str(self._refusal))
        try:
            return self._worker.run()
        finally:
            self._tools.close()

    def stop(self) -> None:
        self._stop.set()

    def __repr__(self) -> str:  # Ray prefixes this actor's log lines with it
        return self.name


@dataclass
class Crew:
    """Worker actors started by one `coop` process: made by `launch_crew`, working once
    `begin` runs them."""

    actors: dict[str, Any]  # worker name -> actor
    where: str = ""  # the node they are on, for the log line
    runs: dict[Any, str] = field(default_factory=dict)  # run ref -> worker name, once begun

    def names(self) -> list[str]:
        return list(self.actors)

    def begin(self) -> None:
        """Every worker starts leasing tasks."""
        self.runs = {actor.run.remote(): name for name, actor in self.actors.items()}
        if self.actors:
            log.info("workers %s on %s", ", ".join(self.actors), self.where)

    def dismiss(self) -> None:
        """The workers end without having worked: their objective did not open."""
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)

    def check(self) -> None:
        """Raises the first worker's refusal of the model as its own one-line error; a worker
        that died starting is left to `wait`, which says why."""
        for actor in self.actors.values():
            try:
                cluster.get(actor.checked.remote())
            except ray.exceptions.RayActorError:
                continue

    def wait(self, stop: threading.Event, *, ended: bool = False) -> list[WorkerReport]:
        """Until every worker has finished; `stop` (a signal) is passed on to them. `ended`:
        the objective has finished, and they are told so now, not left to find out at their
        next look at the board (up to POLL_MAX later, which every run's end would wait for)."""
        pending, reports, told = list(self.runs), [], False
        while pending:
            if (ended or stop.is_set()) and not told:
                for ref in pending:  # those done are gone (`_report`)
                    self.actors[self.runs[ref]].stop.remote()
                told = True
            done, pending = ray.wait(pending, num_returns=1, timeout=C.POLL_MIN)
            for ref in done:
                reports.append(self._report(ref))
        return reports

    def _report(self, ref: Any) -> WorkerReport:
        try:
            report: WorkerReport = ray.get(ref)
        except ray.exceptions.RayError as exc:
            name, cause = self.runs[ref], cluster.death_cause(exc)
            log.error("worker %s died: %s", name, cause)
            return WorkerReport(name, fatal=cause)
        # its work is done, its tools closed: ended now, it skips Python's teardown of its
        # modules (0.3–0.5 s of CPU) that Ray's graceful exit, when this process leaves, runs
        ray.kill(self.actors[self.runs[ref]], no_restart=True)
        return report


def launch_crew(
    board: BoardClient,
    settings: RunSettings,
    objective: str,
    *,
    count: int,
    concurrency: int,
    node: str | None = None,
    kit: Kit | None = None,
    check: bool = False,
) -> Crew:
    """`count` worker actors for `objective` (its text) on `node` (default: this process's
    node, or with `kit.resources` any node that has them), starting: they lease nothing until
    `Crew.begin`. Nothing here waits for the board, so a new board's workers start beside it.
    With `check`, each checks the model first, and the first refusal is raised here (see
    `Crew.check`)."""
    kit = kit or Kit()
    if count == 0:
        return Crew({})
    if not settings.simulated:  # a missing key fails here, in one line
        local_endpoint(settings)
    kit.check(settings)
    node_id, host = cluster.resolve_node(node)
    if kit.resources and node is None:
        node_id = ""  # wherever Ray finds the resources
    quiet = not log.isEnabledFor(logging.INFO)
    env = forwarded_env()
    actors: dict[str, Any] = {}
    index = 0
    while len(actors) < count:
        name = f"{host}:{index}"
        index += 1
        actor = cluster.pinned_actor(
            WorkerActor,
            cluster.actor_name(board.objective_id, f"worker:{name}"),
            node_id,
            concurrency=2,  # run() and stop()
            args=(board, objective, name, settings, env, concurrency, quiet, kit, check),
            resources=kit.resources,
        )
        if actor is not None:  # else the name is taken by another `coop` on this host
            actors[name] = actor
    crew = Crew(actors, f"node {node_id[:8]}" if node_id else f"a node with {kit.resources}")
    if check:
        crew.check()
    return crew


def join(
    ref: str, address: str | None, concurrency: int, node: str | None, kit: Kit
) -> WorkerReport:
    """`coop join`: work on an existing objective until it finishes or we are told to stop."""
    cluster.connect(address, start_local=False, stream_logs=True)
    stop = cluster.stop_on_signals()  # after connecting: ray.init has its own SIGTERM handler
    board = registry.find(ref)
    settings = board.run_settings()
    memories.check(settings, board.storage())  # an unreachable memory fails here, in one line
    crew = launch_crew(
        board,
        settings,
        board.describe().text,
        count=1,
        concurrency=concurrency,
        node=node,
        kit=kit,
        check=not settings.simulated,  # this node's own endpoint, key and model: one line if not
    )
    crew.begin()
    log.info("joined %s as %s (%s)", board.objective_id, crew.names()[0], settings.label)
    return crew.wait(stop)[0]
