"""Workers as real `coop join` processes: waiting for work, SIGKILL mid-task, SIGTERM."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import ray
from conftest import STATE_DIR, coop_env, spawn_coop, unique, wait_for
from ray.cluster_utils import Cluster
from standin import StandIn

from coop import registry
from coop.config import RunSettings
from coop.simulate import Simulator
from coop.text import objective_id
from coop.types import Reason, Snapshot, State


def held_by(board: object, pid: int) -> list[int]:
    snap: Snapshot = ray.get(board.snapshot.remote())  # type: ignore[attr-defined]
    return [lease.task.id for lease in snap.leased if lease.worker.endswith(f"-{pid}")]


def test_sigkilled_worker_loses_nothing(ray_cluster: Cluster, tmp_path: Path) -> None:
    server = StandIn(latency=1.0, simulator=Simulator(fanout=3, limit=3))
    server.start()
    try:
        objective = unique("Sort the seed library")
        oid = objective_id(objective)
        env = coop_env(ray_cluster, server)
        start = spawn_coop("start", objective, "--workers", "0", "--lease-ttl", "3",
                           env=env, log=tmp_path / "start.log")
        wait_for(lambda: oid in registry.board_ids(), 60, "the board")
        _, board = registry.find(oid)
        victim = spawn_coop("join", oid, env=env, log=tmp_path / "victim.log")
        (task_id,) = wait_for(lambda: held_by(board, victim.pid), 60, "a lease")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        rescuer = spawn_coop("join", oid, "--concurrency", "2", env=env,
                             log=tmp_path / "rescuer.log")
        assert start.wait(120) == 0, (tmp_path / "start.log").read_text()
        assert rescuer.wait(60) == 0
        snap: Snapshot = ray.get(board.snapshot.remote())
        assert snap.reason is Reason.DONE and snap.completed == 4 and not snap.dead
        results = {r.task_id: r for r in ray.get(board.results.remote())}
        assert results[task_id].worker.endswith(f"-{rescuer.pid}")
    finally:
        server.stop()


def test_worker_waits_for_work_and_sigterm_finishes_in_flight(ray_cluster: Cluster,
                                                              tmp_path: Path) -> None:
    server = StandIn(latency=2.0)
    server.start()
    try:
        objective = unique("Mend the fence")
        _, board = registry.create_board(objective, RunSettings(lease_ttl=5), STATE_DIR)
        worker = spawn_coop("join", objective, env=coop_env(ray_cluster, server),
                            log=tmp_path / "join.log")
        wait_for(lambda: any(w.worker.endswith(f"-{worker.pid}") for w in
                             ray.get(board.snapshot.remote()).workers), 60, "the worker")
        assert worker.poll() is None  # nothing to do yet, and it waits
        ray.get(board.add.remote(["Buy nails", "Buy planks"]))
        (task_id,) = wait_for(lambda: held_by(board, worker.pid), 30, "a lease")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        results = ray.get(board.results.remote())
        assert [r.task_id for r in results] == [task_id]  # finished in flight, leased no more
        snap: Snapshot = ray.get(board.snapshot.remote())
        assert [t.text for t in snap.pending] == ["Buy planks"] and not snap.leased
        assert snap.state is State.RUNNING
    finally:
        server.stop()


def test_worker_leaves_when_the_objective_is_stopped(ray_cluster: Cluster,
                                                     tmp_path: Path) -> None:
    objective = unique("Count the bees")
    oid, board = registry.create_board(objective, RunSettings(llm="offline").validate(),
                                     STATE_DIR)
    worker = spawn_coop("join", oid, env=coop_env(ray_cluster), log=tmp_path / "join.log")
    wait_for(lambda: ray.get(board.snapshot.remote()).workers, 60, "the worker")
    ray.get(board.stop.remote(Reason.STOPPED))
    assert worker.wait(60) == 0
    assert "objective finished" in (tmp_path / "join.log").read_text()
