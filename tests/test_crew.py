"""Worker actors started by real `coop join` processes: waiting for work, SIGKILL mid-task,
SIGTERM, leaving when the objective stops, dead-lettering."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ray.cluster_utils import Cluster

from coop import api, cluster, registry
from coop.board import BoardClient
from coop.config import RunSettings
from coop.simulate import Simulator
from coop.testing.standin import Faults, MakeStandIn
from coop.types import EventKind, Lease, Reason, Snapshot, State
from tests.support.procs import (
    SECRET,
    STATE_DIR,
    assert_one_line_error,
    coop_env,
    run_coop,
    spawn_coop,
    spawn_start,
    unique,
    wait_for,
    worker_name,
)


def held_by(board: BoardClient, worker: str) -> list[Lease]:
    return [lease for lease in board.snapshot().leased if lease.worker == worker]


def test_sigkilled_worker_loses_nothing(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=1.0, simulator=Simulator(fanout=3, limit=3))
    objective = unique("Sort the seed library")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "0", "--lease-ttl", "3")
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    board = registry.find(oid)
    victim = spawn_coop("join", oid, env=env, log=tmp_path / "victim.log")
    name = worker_name(tmp_path / "victim.log")
    (lost,) = wait_for(lambda: held_by(board, name), 60, "a lease")
    task_id = lost.task.id
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    server.latency = 0.2  # the victim's call was in flight: the rest of the run may be quick
    # the worker actor shares the fate of the process that made it
    actor = cluster.actor_name(oid, f"worker:{name}")
    wait_for(lambda: actor not in cluster.actor_names(), 30, "the worker actor to die")
    rescuer = spawn_coop("join", oid, "--concurrency", "2", env=env, log=tmp_path / "rescuer.log")
    assert start.wait(120) == 0, (tmp_path / "start.log").read_text()
    assert rescuer.wait(60) == 0
    snap: Snapshot = board.snapshot()
    assert snap.reason is Reason.DONE and snap.completed == 4 and not snap.dead
    results = {r.task_id: r for r in board.results()}
    assert results[task_id].worker == worker_name(tmp_path / "rescuer.log")
    # under a lease of its own (the rescuer may reuse the dead worker's name)
    done = [e.data for e in board.all_events() if e.kind is EventKind.COMPLETED]
    assert [d["token"] > lost.token for d in done if d["id"] == task_id] == [True]


def test_worker_waits_for_work_and_sigterm_finishes_in_flight(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=2.0)
    objective = unique("Mend the fence")
    board = registry.create_board(objective, RunSettings(lease_ttl=5), STATE_DIR)
    worker = spawn_coop(
        "join", objective, env=coop_env(ray_cluster, server), log=tmp_path / "join.log"
    )
    name = worker_name(tmp_path / "join.log")
    wait_for(
        lambda: any(w.worker == name for w in board.snapshot().workers),
        60,
        "the worker",
    )
    assert worker.poll() is None  # nothing to do yet, and it waits
    board.add(["Buy nails", "Buy planks"])
    (held,) = wait_for(lambda: held_by(board, name), 30, "a lease")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    results = board.results()
    assert [r.task_id for r in results] == [held.task.id]  # finished in flight, leased no more
    snap: Snapshot = board.snapshot()
    assert [t.text for t in snap.pending] == ["Buy planks"] and not snap.leased
    assert snap.state is State.RUNNING


def test_a_join_whose_key_the_model_refuses_is_one_line_and_leases_nothing(
    make_standin: MakeStandIn, ray_cluster: Cluster
) -> None:
    """`coop join` checks the model from its worker actor, where the worker will call it: a
    key the server refuses ends the join with one line before the worker leases anything,
    and the objective goes on without it."""
    server = make_standin(api_key=SECRET)
    board = registry.create_board(unique("Label the jars"), RunSettings(lease_ttl=5), STATE_DIR)
    board.add(["Buy labels"])
    wrong = "sk-not-the-servers-key-93b1"
    said = run_coop(
        "join", board.objective_id, env=coop_env(ray_cluster, server, OPENAI_API_KEY=wrong)
    )
    assert_one_line_error(said, "refused (401")
    assert wrong not in said.stdout + said.stderr
    snap: Snapshot = board.snapshot()
    assert [t.text for t in snap.pending] == ["Buy labels"] and not snap.leased
    assert not snap.workers and snap.state is State.RUNNING
    assert [c.status for c in server.calls] == [401]  # the check's first request; no retry


def test_worker_leaves_when_the_objective_is_stopped(ray_cluster: Cluster, tmp_path: Path) -> None:
    objective = unique("Count the bees")
    board = registry.create_board(objective, RunSettings(llm="offline").validate(), STATE_DIR)
    oid = board.objective_id
    worker = spawn_coop("join", oid, env=coop_env(ray_cluster), log=tmp_path / "join.log")
    wait_for(lambda: board.snapshot().workers, 60, "the worker")
    board.stop(Reason.STOPPED)
    assert worker.wait(60) == 0
    assert "objective finished" in (tmp_path / "join.log").read_text()


def test_a_task_that_keeps_failing_is_dead_lettered_with_its_error(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(faults=Faults(poison="Your task: Step 2:", poison_retry_after=0.05))
    objective = unique("Bake bread")
    start = spawn_coop(
        "start",
        objective,
        "--workers",
        "2",
        "--max-attempts",
        "3",
        "--retry-delay",
        "0.2",
        env=coop_env(ray_cluster, server),
        log=tmp_path / "start.log",
    )
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    board = registry.find(objective)
    snap: Snapshot = board.snapshot()
    (dead,) = snap.dead
    assert dead.text.startswith("Step 2:") and dead.attempts == 3
    failed = [e for e in board.all_events() if e.kind is EventKind.FAILED]
    waits = [round(e.data["retry_at"] - e.at, 1) for e in failed if not e.data["dead"]]
    assert waits == [0.2, 0.4]  # --retry-delay, doubled for the third attempt
    assert dead.last_error.startswith("InternalServerError")
    assert snap.reason is Reason.DONE and snap.completed == 9  # 13 less Step 2's subtree
    poisoned = [c for c in server.calls if c.subject.startswith("Step 2:")]
    assert len(poisoned) == 3 * 4  # three attempts, each the first try and 3 client retries


def test_offline_agents_act_a_task_writes_a_file_and_a_later_one_reads_it(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    """The README's tool demo: the simulated model calls the workspace and python tools; every
    read finds the notes an earlier task wrote, and the workspace is exported at the end."""
    objective = unique("Write a short guide to growing tomatoes")
    env = coop_env(ray_cluster)
    flags = ("--llm", "offline", "--workers", "2", "--tools", "workspace,python")
    start = spawn_coop("start", objective, *flags, env=env, log=tmp_path / "start.log")
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    board = registry.find(objective)
    events = list(board.all_events())
    written = {e.data["path"]: e.seq for e in events if e.kind is EventKind.WROTE}
    reads = [e for e in events if e.kind is EventKind.TOOL and e.data["tool"] == "workspace_read"]
    assert "notes/step-0.md" in written and len(reads) >= 3
    assert all(e.data["ok"] for e in reads)  # each read found its file: written before it
    pythons = [e for e in events if e.kind is EventKind.TOOL and e.data["tool"] == "python"]
    assert pythons and all(e.data["ok"] for e in pythons)
    snap = board.snapshot()
    assert snap.tools["workspace_write"].calls == len(written) == snap.completed
    folder = STATE_DIR / "reports" / f"{board.objective_id}.workspace"
    assert (folder / "notes" / "step-0.md").read_text() == board.read_file("notes/step-0.md")
    report = (STATE_DIR / "reports" / f"{board.objective_id}.md").read_text()
    assert "## Tools" in report and "`notes/step-0.md`" in report


def test_a_task_that_needs_a_capability_goes_only_to_a_worker_that_has_it(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """The planner tags tasks with what they need (the simulator: `Draft a section` needs the
    workers' named capability); only a worker that has it leases them. New tasks wait for
    approval until the plain worker is there too (the gpu one does the seed alone), so that
    both are asking when the tasks are let go."""
    server = make_standin(latency=0.3, simulator=Simulator(fanout=3, limit=12))
    objective = unique("Train and write")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "0", "--approve")
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    board = registry.find(oid)
    gpu = spawn_coop("join", oid, "--cap", "gpu", env=env, log=tmp_path / "gpu.log")
    gpu_name = worker_name(tmp_path / "gpu.log")
    wait_for(lambda: any("gpu" in w.caps for w in board.snapshot().workers), 60, "the gpu worker")
    plain = spawn_coop("join", oid, "--concurrency", "2", env=env, log=tmp_path / "plain.log")
    plain_name = worker_name(tmp_path / "plain.log")
    wait_for(
        lambda: plain_name in {w.worker for w in board.snapshot().workers}, 60, "the plain worker"
    )
    run, deadline = api.open(oid), time.monotonic() + 120
    while start.poll() is None and time.monotonic() < deadline:  # a person, approving all
        run.approve()
        time.sleep(0.1)
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    assert gpu.wait(60) == 0 and plain.wait(60) == 0
    tasks = {t.id: t for t in board.snapshot().pending}
    results = board.results()
    needing = [r for r in results if "Draft a section" in r.task]
    assert needing and all(r.worker == gpu_name for r in needing)
    assert any(r.worker == plain_name for r in results)  # the other one did other work
    leased_by_plain = [
        e.data["id"]
        for e in board.all_events()
        if e.kind is EventKind.LEASED and e.data["worker"] == plain_name
    ]
    drafts = {r.task_id for r in needing}
    assert not drafts & set(leased_by_plain) and not tasks
