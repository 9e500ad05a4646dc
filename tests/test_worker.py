"""Workers as real `coop join` processes: waiting for work, SIGKILL mid-task, SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from conftest import (
    STATE_DIR,
    MakeStandIn,
    coop_env,
    spawn_coop,
    spawn_start,
    unique,
    wait_for,
    worker_name,
)
from ray.cluster_utils import Cluster
from standin import Faults

from coop import agents, cluster, registry
from coop.config import RunSettings
from coop.llm import Completion, LLMContextError, OfflineLLM, OpenAILLM
from coop.memory import Hit
from coop.memory.cluster import ClusterMemory
from coop.simulate import Simulator
from coop.types import Kind, Lease, Reason, Snapshot, State
from coop.worker import Worker, ask


def held_by(board: object, worker: str) -> list[int]:
    snap: Snapshot = ray.get(board.snapshot.remote())  # type: ignore[attr-defined]
    return [lease.task.id for lease in snap.leased if lease.worker == worker]


def test_sigkilled_worker_loses_nothing(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=1.0, simulator=Simulator(fanout=3, limit=3))
    objective = unique("Sort the seed library")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "0", "--lease-ttl", "3")
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    _, board = registry.find(oid)
    victim = spawn_coop("join", oid, env=env, log=tmp_path / "victim.log")
    name = worker_name(tmp_path / "victim.log")
    (task_id,) = wait_for(lambda: held_by(board, name), 60, "a lease")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    # the worker actor shares the fate of the process that made it
    actor = cluster.actor_name(oid, f"worker:{name}")
    wait_for(lambda: actor not in cluster.actor_names(), 30, "the worker actor to die")
    rescuer = spawn_coop("join", oid, "--concurrency", "2", env=env, log=tmp_path / "rescuer.log")
    assert start.wait(120) == 0, (tmp_path / "start.log").read_text()
    assert rescuer.wait(60) == 0
    snap: Snapshot = ray.get(board.snapshot.remote())
    assert snap.reason is Reason.DONE and snap.completed == 4 and not snap.dead
    results = {r.task_id: r for r in ray.get(board.results.remote())}
    assert results[task_id].worker == worker_name(tmp_path / "rescuer.log")


def test_worker_waits_for_work_and_sigterm_finishes_in_flight(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=2.0)
    objective = unique("Mend the fence")
    _, board = registry.create_board(objective, RunSettings(lease_ttl=5), STATE_DIR)
    worker = spawn_coop(
        "join", objective, env=coop_env(ray_cluster, server), log=tmp_path / "join.log"
    )
    name = worker_name(tmp_path / "join.log")
    wait_for(
        lambda: any(w.worker == name for w in ray.get(board.snapshot.remote()).workers),
        60,
        "the worker",
    )
    assert worker.poll() is None  # nothing to do yet, and it waits
    ray.get(board.add.remote(["Buy nails", "Buy planks"]))
    (task_id,) = wait_for(lambda: held_by(board, name), 30, "a lease")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    results = ray.get(board.results.remote())
    assert [r.task_id for r in results] == [task_id]  # finished in flight, leased no more
    snap: Snapshot = ray.get(board.snapshot.remote())
    assert [t.text for t in snap.pending] == ["Buy planks"] and not snap.leased
    assert snap.state is State.RUNNING


def test_worker_leaves_when_the_objective_is_stopped(ray_cluster: Cluster, tmp_path: Path) -> None:
    objective = unique("Count the bees")
    oid, board = registry.create_board(objective, RunSettings(llm="offline").validate(), STATE_DIR)
    worker = spawn_coop("join", oid, env=coop_env(ray_cluster), log=tmp_path / "join.log")
    wait_for(lambda: ray.get(board.snapshot.remote()).workers, 60, "the worker")
    ray.get(board.stop.remote(Reason.STOPPED))
    assert worker.wait(60) == 0
    assert "objective finished" in (tmp_path / "join.log").read_text()


def test_a_task_that_keeps_failing_is_dead_lettered_with_its_error(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(faults=Faults(poison="Your task: Step 2:"))
    objective = unique("Bake bread")
    start = spawn_coop(
        "start",
        objective,
        "--workers",
        "2",
        "--max-attempts",
        "3",
        env=coop_env(ray_cluster, server),
        log=tmp_path / "start.log",
    )
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    _, board = registry.find(objective)
    snap: Snapshot = ray.get(board.snapshot.remote())
    (dead,) = snap.dead
    assert dead.text.startswith("Step 2:") and dead.attempts == 3
    assert dead.last_error.startswith("InternalServerError")
    assert snap.reason is Reason.DONE and snap.completed == 9  # 13 less Step 2's subtree
    poisoned = [c for c in server.calls if c.subject.startswith("Step 2:")]
    assert len(poisoned) == 3 * 4  # three attempts, each the first try and 3 client retries


def test_a_prompt_too_long_for_the_model_is_retried_once_with_less_context(
    make_standin: MakeStandIn, ray_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(faults=Faults(context_limit=700))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    settings = RunSettings(max_prompt_tokens=1200, max_completion_tokens=100)
    llm = OpenAILLM(settings, "w")
    _, board = registry.create_board(unique("Context"), settings, STATE_DIR)
    context = [Hit(i, f"earlier task {i}", "a long result " * 200, 1.0) for i in range(8)]

    def build(budget: int) -> str:
        return agents.execution_prompt("o", "Write the summary", context, llm.tokenizer, budget)

    assert ask(llm, board, settings, "w", Kind.EXECUTION, build)
    assert [c.status for c in server.calls] == [400, 200]
    server.faults.context_limit = 100  # now even half the context cannot fit
    with pytest.raises(LLMContextError):
        ask(llm, board, settings, "w", Kind.EXECUTION, build)


def test_a_result_the_journal_cannot_take_is_kept_and_retried(ray_cluster: Cluster) -> None:
    """The disk fills while a worker holds a result: it keeps the task, retries, and the
    result lands once there is space; no new lease is handed out meanwhile."""
    objective = unique("Fill the disk")
    settings = RunSettings(llm="offline", lease_ttl=30).validate()
    oid, board = registry.create_board(objective, settings, STATE_DIR)
    ray.get(board.add.remote(["only task", "second task"]))

    class Verbose(OfflineLLM):  # a long answer: it needs pages the full journal lacks
        def complete(self, prompt: str, max_tokens: int) -> Completion:
            return Completion("a long result " * 1500, 10, 10)

    llm = Verbose()
    stop = threading.Event()
    worker = Worker(
        board, ClusterMemory(oid, llm, str(STATE_DIR)), llm, settings, objective, "w-full", 1, stop
    )

    def cap(pages: int | None) -> None:
        def set_cap(self: Any) -> None:
            db = self._journal._db
            limit = pages or 1_073_741_823
            db.execute(f"PRAGMA max_page_count = {limit}")

        ray.get(board.__ray_call__.remote(set_cap))

    pages = ray.get(
        board.__ray_call__.remote(
            lambda self: self._journal._db.execute("PRAGMA page_count").fetchone()[0]
        )
    )
    cap(pages)  # full: the next journal write fails with SQLITE_FULL
    lease = ray.get(board.lease.remote("w-full"))  # a lease needs no new page yet...
    assert isinstance(lease, Lease)
    runner = threading.Thread(target=worker._work, args=(lease,))
    runner.start()
    time.sleep(2.0)  # ...but the result does: the worker is retrying it
    assert runner.is_alive() and ray.get(board.results.remote()) == []
    assert ray.get(board.lease.remote("someone")) is State.RUNNING  # no new work meanwhile
    cap(None)
    runner.join(60)
    assert [r.task for r in ray.get(board.results.remote())] == ["only task"]
    assert worker.report.completed == 1
