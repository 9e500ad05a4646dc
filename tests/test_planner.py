"""End to end with real processes: `coop start` plans, two `coop join` workers execute, against
one local Ray cluster and the HTTP stand-in model server."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from coop import api, cluster, registry
from coop import constants as C
from coop.journal import journal_path
from coop.simulate import Simulator
from coop.testing.cluster import COOP
from coop.testing.standin import MakeStandIn, StandIn
from coop.types import EventKind, Kind, Reason, Snapshot, State
from tests.support.procs import (
    SECRET,
    STATE_DIR,
    coop_env,
    run_coop,
    spawn_coop,
    spawn_start,
    unique,
    wait_for,
    worker_name,
)

HOST = socket.gethostname()


def test_start_plans_and_two_joined_workers_execute(
    ray_cluster: Cluster, standin: StandIn, tmp_path: Path
) -> None:
    standin.latency = 0.3  # long enough that one worker cannot drain every wave alone
    # the seed's completion brings 8 tasks in one call (then one of them 4 more): with a task
    # at a time each, 6 of the 8 wait more than a round of the 2 slots, so their order is
    # worth a prioritization call whatever the timing (3 tasks a call would not always be)
    standin.simulator = Simulator(fanout=8, limit=12)
    objective = unique("Plan a community garden")
    env = coop_env(ray_cluster, standin)
    start, oid = spawn_start(objective, "--workers", "0", env=env, log=tmp_path / "start.log")
    joins = [
        spawn_coop("join", oid[:-3], "--concurrency", "1", env=env, log=tmp_path / f"join{i}.log")
        for i in range(2)
    ]
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    for j in joins:
        assert j.wait(60) == 0, "a worker did not leave when the objective finished"

    board = registry.find(oid)
    snap: Snapshot = board.snapshot()
    assert (snap.state, snap.reason) == (State.FINISHED, Reason.DONE)
    assert snap.completed == 13 and not snap.pending and not snap.dead  # 1 seed + 12 simulated

    # every completed task has exactly one result in memory
    store = cluster.existing_actor(oid, "memory")
    assert store is not None
    results = board.results()
    assert sorted(ray.get(store.task_ids.remote())) == sorted(r.task_id for r in results)
    assert len({r.task_id for r in results}) == len(results)

    # more than one worker process executed tasks; the planner executed none
    join_names = {worker_name(tmp_path / f"join{i}.log") for i in range(2)}
    executors = {r.worker for r in results}
    assert len(join_names) == 2 and executors == join_names

    # only the start process planned (created, prioritized, checked completion); workers
    # only executed
    by_kind: dict[str, set[str]] = {}
    for call in standin.calls:
        by_kind.setdefault(call.kind, set()).add(call.instance)
    planner = {f"{HOST}-{start.pid}"}
    assert by_kind["creation"] == by_kind["prioritization"] == by_kind["completion"] == planner
    assert by_kind["execution"] == executors

    # usage on the board, every kind of call included, is what the server counted
    assert snap.usage["completion-check"].calls >= 1 and snap.usage["embedding"].calls > 13
    board_tokens = sum(u.tokens for u in snap.usage.values())
    assert board_tokens == sum(standin.usage().values())

    # the key appears nowhere: not in any output, the board or the results, nor in any file
    # Ray keeps for the cluster (its logs, the worker actors' logs included)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert SECRET not in logs and SECRET not in repr(snap) and SECRET not in repr(results)
    assert ray_cluster.head_node is not None
    session = Path(ray_cluster.head_node.get_session_dir_path())
    leaked = [f for f in session.rglob("*") if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert not leaked, leaked
    assert "planned" in (tmp_path / "start.log").read_text()


def test_a_whole_objective_keeps_more_than_one_task_in_flight_most_of_the_time(
    ray_cluster: Cluster, make_standin: MakeStandIn, tmp_path: Path
) -> None:
    """4 workers × 2 in flight on a whole objective, the model proposing a fixed 3 tasks per
    creation call: the planner's supply keeps the swarm busy. A property of the run's tape, not
    a timing. With `--planner-calls 1` the same run keeps about a third of its 8 slots busy and
    never fills them; as planned here, more than half, on average."""
    server = make_standin(latency=0.3, simulator=Simulator(per_call=3, limit=10**6))
    objective = unique("Survey the tide pools")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "4", "--concurrency", "2", "--max-tasks", "100")
    start = spawn_coop("start", objective, *flags, env=env, log=tmp_path / "start.log")
    assert start.wait(240) == 3, (tmp_path / "start.log").read_text()  # ends at the cap
    held: set[int] = set()
    timeline: list[tuple[float, int]] = []  # (when, tasks in flight from then on)
    for e in registry.find(objective).all_events():
        if e.kind is EventKind.LEASED:
            held.add(e.data["id"])
        elif e.kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.RELEASED):
            held.discard(e.data["id"])
        elif e.kind is EventKind.EXPIRED:
            held.difference_update(e.data["ids"])
        else:
            continue
        timeline.append((e.at, len(held)))
    first = next(i for i, (_, n) in enumerate(timeline) if n)  # from the first lease…
    last = max(i for i, (_, n) in enumerate(timeline) if n == 0)  # …to the last completion
    spans = [
        (t1 - t0, n)
        for (t0, n), (t1, _) in zip(
            timeline[first:last], timeline[first + 1 : last + 1], strict=True
        )
    ]
    seconds = sum(d for d, _ in spans)
    busy = sum(d for d, n in spans if n > 1) / seconds
    assert busy > 0.5, f"more than one task in flight only {busy:.0%} of the time"
    mean = sum(d * n for d, n in spans) / seconds
    assert mean > 4, f"{mean:.1f} of 8 slots busy on average"
    assert max(n for _, n in timeline) == 8  # every slot was used


def test_offline_run_with_local_workers_ends_by_itself(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    objective = unique("Write a haiku about Ray")
    env = coop_env(ray_cluster)
    start = spawn_coop(
        "start",
        objective,
        "--llm",
        "offline",
        "--workers",
        "2",
        env=env,
        log=tmp_path / "start.log",
    )
    assert start.wait(120) == 0
    out = (tmp_path / "start.log").read_text()
    assert "simulated" in out and "finished (done)" in out
    assert "┃ instance ┃ completed ┃ per min ┃ failed ┃ in flight ┃ model calls ┃" in out  # whole
    board = registry.find(objective)
    snap: Snapshot = board.snapshot()
    assert snap.completed == 13 and "simulated" in snap.llm_label
    assert all("[simulated result" in r.text for r in board.results())


def test_max_tasks_stops_the_run(ray_cluster: Cluster, tmp_path: Path) -> None:
    objective = unique("Catalogue every star")
    start = spawn_coop(
        "start",
        objective,
        "--llm",
        "offline",
        "--max-tasks",
        "4",
        env=coop_env(ray_cluster),
        log=tmp_path / "start.log",
    )
    assert start.wait(120) == Reason.MAX_TASKS.exit_code
    board = registry.find(objective)
    snap: Snapshot = board.snapshot()
    assert snap.reason is Reason.MAX_TASKS and snap.completed == 4
    assert "finished (max-tasks)" in (tmp_path / "start.log").read_text()


def test_a_rejected_key_stops_the_objective_at_once(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """A key refused mid-run (revoked, or out of credit): the objective stops at once, not
    after every task has failed. (A key refused from the start never gets that far: `coop
    start` checks it first, see test_cli.py.)"""
    server = make_standin(latency=0.5)
    objective = unique("Spend money carefully")
    env = coop_env(ray_cluster, server)
    start, _ = spawn_start(objective, "--workers", "2", env=env, log=tmp_path / "start.log")
    server.api_key = "a-key-that-is-not-ours"  # revoked while the run goes on
    assert start.wait(120) == 1
    out = (tmp_path / "start.log").read_text()
    assert "refused (401" in out and SECRET not in out and "Traceback" not in out
    refused = [c for c in server.calls if c.status == 401]
    assert 1 <= len(refused) <= 3  # the planner and each local worker at most: no retry storm
    board = registry.find(objective)
    snap: Snapshot = board.snapshot()
    assert snap.reason is Reason.FAILED and not snap.dead and not snap.leased


def test_a_planner_model_refused_mid_run_fails_the_run_and_reports_it(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """The planner's own model withdrawn mid-run (the workers' still served): the planner's
    next call is refused, the run fails in one line, and its report is written, as when a
    worker meets a refusal first."""
    served = (C.DEFAULT_MODEL, C.DEFAULT_EMBEDDING_MODEL)
    server = make_standin(latency=0.1, models=(*served, "planner-model"))
    objective = unique("Plan with a model that goes away")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "1", "--planner-model", "planner-model")
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    server.models = served  # checked at start; gone before the planner's first creation call
    assert start.wait(120) == 1
    out = (tmp_path / "start.log").read_text()
    (error,) = [line for line in out.splitlines() if "coop: error:" in line]
    assert "refused (404" in error and "planner-model" in error and "Traceback" not in out
    assert [c for c in server.calls if c.kind == "execution" and c.status == 200]  # the seed
    snap: Snapshot = registry.find(oid).snapshot()
    assert snap.reason is Reason.FAILED and not snap.leased
    report = STATE_DIR / "reports" / f"{oid}.md"
    assert f"report: {report}" in out and "failed" in report.read_text()


def test_a_standby_planner_takes_over_when_the_planner_dies(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=0.3)
    objective = unique("Restock the pantry")
    env = coop_env(ray_cluster, server)
    ttl = 4.0  # --planner-ttl: the claim's life unrenewed, the board's for every planner
    first, oid = spawn_start(
        objective, "--workers", "0", "--planner-ttl", str(ttl), env=env, log=tmp_path / "first.log"
    )
    board = registry.find(oid)
    wait_for(lambda: board.snapshot().planner, 30, "the planner claim")
    standby = spawn_coop(
        "start", objective, "--standby", "--workers", "0", env=env, log=tmp_path / "standby.log"
    )
    worker = spawn_coop("join", oid, "--concurrency", "2", env=env, log=tmp_path / "join.log")
    refused = run_coop("start", "--resume", oid, env=env, timeout=60)  # while those start
    assert refused.returncode == 1 and "another planner" in refused.stderr
    wait_for(lambda: len(board.results()) >= 3, 60, "some results")
    os.kill(first.pid, signal.SIGKILL)
    killed = time.time()
    first.wait(10)
    assert standby.wait(120) == 0, (tmp_path / "standby.log").read_text()
    assert worker.wait(60) == 0
    assert "standing by" in (tmp_path / "standby.log").read_text()
    # the standby took over once the dead planner's claim lapsed (renewed every third of the
    # TTL: some two thirds of it after the kill, less a late renewal), not the default's 10-15 s
    shown = run_coop("events", oid, "--json", env=env).stdout.splitlines()
    claims = [e for e in map(json.loads, shown) if e["event"] == "planner"]
    took = next(e["at"] for e in claims if e["instance"] == f"{HOST}-{standby.pid}")
    assert ttl / 3 <= took - killed < C.DEFAULT_PLANNER_TTL * 2 / 3
    snap: Snapshot = board.snapshot()
    assert snap.reason is Reason.DONE and snap.completed == 13 and not snap.dead
    ids = [r.task_id for r in board.results()]
    assert len(ids) == len(set(ids))
    # every result was planned once, across the takeover: each acknowledged exactly once, in
    # one step with the tasks it produced
    with closing(sqlite3.connect(journal_path(STATE_DIR, oid))) as db:
        planned = [
            json.loads(d)["planned"]
            for (d,) in db.execute("SELECT data FROM events WHERE kind = 'added' ORDER BY seq")
        ]
    acks = [seq for batch in planned if batch is not None for seq in batch]
    assert sorted(acks) == list(range(13))
    planners = {c.instance for c in server.calls if c.kind == "creation"}
    assert f"{HOST}-{standby.pid}" in planners
    assert planners <= {f"{HOST}-{first.pid}", f"{HOST}-{standby.pid}"}


def test_a_model_that_repeats_itself_ends_as_a_loop_not_a_budget_hit(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(simulator=Simulator(stubborn=True))
    objective = unique("Never quite finish")
    start = spawn_coop(
        "start",
        objective,
        "--workers",
        "2",
        env=coop_env(ray_cluster, server),
        log=tmp_path / "start.log",
    )
    code = start.wait(120)
    board = registry.find(objective)
    snap: Snapshot = board.snapshot()
    assert snap.reason in (Reason.LOOP, Reason.STALLED), snap.reason
    assert code == snap.reason.exit_code
    assert snap.completed == 4  # the seed and the three tasks it keeps proposing
    assert snap.progress.exact_duplicates > 0 and snap.progress.checks >= 1


@pytest.mark.parametrize(
    "flag, value, reason",
    [
        ("--max-tokens", "6000", Reason.MAX_TOKENS),
        ("--max-cost", "0.0009", Reason.MAX_COST),  # gpt-4o-mini's list price
    ],
)
def test_budgets_hold_across_workers(
    make_standin: MakeStandIn,
    ray_cluster: Cluster,
    tmp_path: Path,
    flag: str,
    value: str,
    reason: Reason,
) -> None:
    """Two joined workers with two tasks in flight each: the cap is passed by at most the
    work in flight when it was reached, the run stops with the cap as its reason, and not
    before a task of the usual cost (its model calls and embeddings) no longer fit in the
    tasks' share of the cap."""
    server = make_standin(latency=0.1, simulator=Simulator(limit=200))
    objective = unique(f"Spend at most {value}")
    env = coop_env(ray_cluster, server)
    flags = ("--workers", "0", "--max-tasks", "500", flag, value, "--max-prompt-tokens", "1500")
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    joins = [
        spawn_coop("join", oid, "--concurrency", "2", env=env, log=tmp_path / f"join{i}.log")
        for i in range(2)
    ]
    assert start.wait(180) == reason.exit_code, (tmp_path / "start.log").read_text()
    for j in joins:
        assert j.wait(60) == 0
    board = registry.find(oid)
    snap: Snapshot = board.snapshot()
    assert snap.reason is reason and not snap.leased
    calls = [c for c in server.calls if c.status == 200]
    biggest = max(c.prompt_tokens + c.completion_tokens for c in calls)
    spent = sum(u.tokens for u in snap.usage.values())
    cost = sum(u.cost for u in snap.usage.values())
    in_flight = 4 + 1  # two workers x two slots, and the planner
    share = 1 - C.DEFAULT_SYNTHESIS_RESERVE  # of a cap, for tasks; the rest for the answer
    paid = [snap.usage[k.value] for k in (Kind.EXECUTION, Kind.EMBEDDING)]
    runs = snap.usage[Kind.EXECUTION.value].calls
    answer = snap.usage[Kind.SYNTHESIS.value]
    if reason is Reason.MAX_TOKENS:
        each = sum(u.tokens for u in paid) / runs  # what the board reserves for one more
        assert 6000 * share - each < spent - answer.tokens
        assert spent <= 6000 + in_flight * biggest
    else:
        each = sum(u.cost for u in paid) / runs
        assert 0.0009 * share - each < cost - answer.cost
        assert cost <= 0.0009 + in_flight * biggest * 0.60 / 1e6
    assert spent == sum(server.usage().values())  # and the count is the server's


def test_max_minutes_stops_as_timeout(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=0.3, simulator=Simulator(limit=100))
    objective = unique("Take forever")
    start = spawn_coop(
        "start",
        objective,
        "--workers",
        "1",
        "--max-minutes",
        "0.03",
        env=coop_env(ray_cluster, server),
        log=tmp_path / "start.log",
    )
    assert start.wait(120) == Reason.TIMEOUT.exit_code
    assert "finished (timeout)" in (tmp_path / "start.log").read_text()


def test_approve_holds_new_tasks_until_a_person_decides(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    objective = unique("Ask before acting")
    env = coop_env(ray_cluster)
    flags = ("--llm", "offline", "--approve", "--workers", "2")  # no terminal: `coop approve`
    start, oid = spawn_start(objective, *flags, env=env, log=tmp_path / "start.log")
    board = registry.find(oid)
    snap = wait_for(
        lambda: (s := board.snapshot()).awaiting == 3 and s,
        60,
        "tasks awaiting approval",
    )
    time.sleep(1.0)  # two idle workers, and still nothing leased
    snap = board.snapshot()
    assert snap.completed == 1 and not snap.leased and snap.awaiting == 3
    first = board.awaiting_approval()[0]
    dropped = run_coop("approve", oid, "--drop", str(first.id), env=env)
    assert dropped.returncode == 0 and "0 approved, 1 dropped" in dropped.stdout
    approved = run_coop("approve", oid, "--all", env=env)
    assert approved.returncode == 0 and " approved, 0 dropped" in approved.stdout
    run, deadline = api.open(oid), time.monotonic() + 90
    while start.poll() is None and time.monotonic() < deadline:  # a person, approving all
        run.approve()  # as `coop approve --all` does, without a process each time
        time.sleep(0.1)
    assert start.wait(10) == 0
    texts = [r.task for r in board.results()]
    assert first.text not in texts and len(texts) == len(set(texts))


def test_report_and_results_list_every_completed_task_once(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    objective = unique("Report on it")
    env = coop_env(ray_cluster)
    proc = run_coop("start", objective, "--llm", "offline", env=env)
    assert proc.returncode == 0
    path = Path(proc.stdout.rsplit("report: ", 1)[1].split()[0])
    text = path.read_text()
    board = registry.find(objective)
    results = board.results()
    assert text.startswith(f"# {objective}") and "simulated" in text and "**done**" in text
    for r in results:
        assert text.count(f". {r.task}\n") == 1
    assert (path.stat().st_mode & 0o777) == 0o600
    lines = run_coop("results", objective, "--format", "jsonl", env=env).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["task_id"] for row in rows] == [r.task_id for r in results]
    assert all(row["simulated"] for row in rows)

    # the tape is exported beside the report: every event, in order, as `coop events --json`
    tape = path.with_name(path.name.replace(".md", ".events.jsonl"))
    exported = tape.read_text().splitlines()
    events = run_coop("events", objective, "--json", env=env).stdout.splitlines()
    assert exported and exported == events[: len(exported)]
    assert [json.loads(e)["seq"] for e in exported] == list(range(1, len(exported) + 1))
    assert sum(json.loads(e)["event"] == "completed" for e in exported) == len(results)
    assert (tape.stat().st_mode & 0o777) == 0o600


def test_approve_in_a_terminal_asks_for_each_new_task(ray_cluster: Cluster, tmp_path: Path) -> None:
    """`coop start --approve` on a terminal prompts for every new task; the person drops the
    first one (and so its whole subtree) and approves the rest."""
    objective = unique("Ask me first")
    master, slave = pty.openpty()
    log = (tmp_path / "start.log").open("w")
    start = subprocess.Popen(
        [str(COOP), "start", objective, "--llm", "offline", "--approve", "--workers", "1"],
        stdin=slave,
        stdout=log,
        stderr=log,
        env=coop_env(ray_cluster),
    )
    os.write(master, b"d\n" + b"a\n" * 8)  # typed ahead: the terminal keeps it for the prompts
    try:
        assert start.wait(120) == 0, (tmp_path / "start.log").read_text()
    finally:
        os.close(master)
        os.close(slave)
    out = (tmp_path / "start.log").read_text()
    assert out.count("await approval") >= 2 and "[a]pprove / [d]rop / [l]ater" in out
    board = registry.find(objective)
    texts = [r.task for r in board.results()]
    assert len(texts) == 9 and not any(t.startswith("Step 1:") for t in texts)
