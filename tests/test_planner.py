"""End to end with real processes: `coop start` plans, two `coop join` workers execute, against
one local Ray cluster and the HTTP stand-in model server."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import ray
from conftest import SECRET, STATE_DIR, coop_env, run_coop, spawn_coop, unique, wait_for
from ray.cluster_utils import Cluster
from standin import StandIn

from coop import cluster, registry
from coop.journal import journal_path
from coop.text import objective_id
from coop.types import Reason, Snapshot, State

HOST = socket.gethostname()


def test_start_plans_and_two_joined_workers_execute(ray_cluster: Cluster, standin: StandIn,
                                                    tmp_path: Path) -> None:
    standin.latency = 0.05
    objective = unique("Plan a community garden")
    oid = objective_id(objective)
    env = coop_env(ray_cluster, standin)
    start = spawn_coop("start", objective, "--workers", "0", env=env, log=tmp_path / "start.log")
    wait_for(lambda: oid in registry.board_ids(), 60, "the board")
    joins = [spawn_coop("join", oid[:-3], "--concurrency", "2", env=env,
                        log=tmp_path / f"join{i}.log") for i in range(2)]
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    for j in joins:
        assert j.wait(60) == 0, "a worker did not leave when the objective finished"

    _, board = registry.find(oid)
    snap: Snapshot = ray.get(board.snapshot.remote())
    assert (snap.state, snap.reason) == (State.FINISHED, Reason.DONE)
    assert snap.completed == 13 and not snap.pending and not snap.dead  # 1 seed + 12 simulated

    # every completed task has exactly one result in memory
    store = cluster.existing_actor(oid, "memory")
    results = ray.get(board.results.remote())
    assert sorted(ray.get(store.task_ids.remote())) == sorted(r.task_id for r in results)
    assert len({r.task_id for r in results}) == len(results)

    # more than one worker process executed tasks; the planner executed none
    join_names = {f"-{j.pid}" for j in joins}
    executors = {r.worker for r in results}
    assert len(executors) == 2 and all(any(w.endswith(n) for n in join_names) for w in executors)

    # only the start process made creation and prioritization calls; workers only executed
    by_kind: dict[str, set[str]] = {}
    for call in standin.calls:
        by_kind.setdefault(call.kind, set()).add(call.instance)
    assert by_kind["creation"] == by_kind["prioritization"] == {f"{HOST}-{start.pid}"}
    assert by_kind["execution"] == executors

    # usage on the board matches what the server counted for chat calls
    chat = [c for c in standin.calls if c.kind in ("creation", "prioritization", "execution")]
    board_tokens = sum(u.tokens for u in snap.usage.values())
    assert board_tokens == sum(c.prompt_tokens + c.completion_tokens for c in chat)

    # the key appears nowhere: not in any output, the board or the results
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert SECRET not in logs and SECRET not in repr(snap) and SECRET not in repr(results)
    assert "planned" in (tmp_path / "start.log").read_text()


def test_offline_run_with_local_workers_ends_by_itself(ray_cluster: Cluster,
                                                       tmp_path: Path) -> None:
    objective = unique("Write a haiku about Ray")
    env = coop_env(ray_cluster)
    start = spawn_coop("start", objective, "--llm", "offline", "--workers", "2",
                       env=env, log=tmp_path / "start.log")
    assert start.wait(120) == 0
    out = (tmp_path / "start.log").read_text()
    assert "simulated" in out and "finished (done)" in out
    _, board = registry.find(objective)
    snap: Snapshot = ray.get(board.snapshot.remote())
    assert snap.completed == 13 and "simulated" in snap.llm_label
    assert all("[simulated result" in r.text for r in ray.get(board.results.remote()))


def test_max_tasks_stops_the_run(ray_cluster: Cluster, tmp_path: Path) -> None:
    objective = unique("Catalogue every star")
    start = spawn_coop("start", objective, "--llm", "offline", "--max-tasks", "4",
                       env=coop_env(ray_cluster), log=tmp_path / "start.log")
    assert start.wait(120) == 0
    _, board = registry.find(objective)
    snap: Snapshot = ray.get(board.snapshot.remote())
    assert snap.reason is Reason.MAX_TASKS and snap.completed == 4
    assert "finished (max-tasks)" in (tmp_path / "start.log").read_text()


def test_a_rejected_key_stops_the_objective_at_once(ray_cluster: Cluster,
                                                    tmp_path: Path) -> None:
    server = StandIn(api_key="the-only-valid-key")
    server.start()
    try:
        objective = unique("Spend money carefully")
        start = spawn_coop("start", objective, "--workers", "2",
                           env=coop_env(ray_cluster, server), log=tmp_path / "start.log")
        assert start.wait(120) == 1
        out = (tmp_path / "start.log").read_text()
        assert "finished (failed)" in out and "refused (401" in out and SECRET not in out
        assert "Traceback" not in out
        assert len(server.calls) <= 2  # one per local worker at most: no retry storm
        _, board = registry.find(objective)
        snap: Snapshot = ray.get(board.snapshot.remote())
        assert snap.reason is Reason.FAILED and not snap.dead and not snap.leased
    finally:
        server.stop()


def test_a_standby_planner_takes_over_when_the_planner_dies(ray_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    server = StandIn(latency=0.3)
    server.start()
    try:
        objective = unique("Restock the pantry")
        oid = objective_id(objective)
        env = coop_env(ray_cluster, server)
        first = spawn_coop("start", objective, "--workers", "0", env=env,
                           log=tmp_path / "first.log")
        wait_for(lambda: oid in registry.board_ids(), 60, "the board")
        _, board = registry.find(oid)
        wait_for(lambda: ray.get(board.snapshot.remote()).planner, 30, "the planner claim")
        refused = run_coop("start", "--resume", oid, env=env, timeout=60)
        assert refused.returncode == 1 and "another planner" in refused.stderr
        standby = spawn_coop("start", objective, "--standby", "--workers", "0", env=env,
                             log=tmp_path / "standby.log")
        worker = spawn_coop("join", oid, "--concurrency", "2", env=env,
                            log=tmp_path / "join.log")
        wait_for(lambda: len(ray.get(board.results.remote())) >= 3, 60, "some results")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert standby.wait(120) == 0, (tmp_path / "standby.log").read_text()
        assert worker.wait(60) == 0
        assert "standing by" in (tmp_path / "standby.log").read_text()
        snap: Snapshot = ray.get(board.snapshot.remote())
        assert snap.reason is Reason.DONE and snap.completed == 13 and not snap.dead
        ids = [r.task_id for r in ray.get(board.results.remote())]
        assert len(ids) == len(set(ids))
        # every batch was planned once: acknowledgements only ever move forward, in one step
        # with the tasks they produced
        with closing(sqlite3.connect(journal_path(STATE_DIR, oid))) as db:
            planned = [json.loads(d)["planned"] for (d,) in db.execute(
                "SELECT data FROM events WHERE kind = 'added' ORDER BY seq")]
        acks = [p for p in planned if p is not None]
        assert acks == sorted(set(acks)) and acks[-1] <= 13
        planners = {c.instance for c in server.calls if c.kind == "creation"}
        assert f"{HOST}-{standby.pid}" in planners
        assert planners <= {f"{HOST}-{first.pid}", f"{HOST}-{standby.pid}"}
    finally:
        server.stop()
