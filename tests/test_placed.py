"""Placed Python tools and `coop join --tool` on a local cluster of real raylets (a head and a
node B that alone has the `coop-node-1` resource): a worker on the head offers a tool whose
every call runs on node B as a Ray task named for its objective, task and tool; a worker on
node B offers a tool it imported by path there; a tool past its timeout has its task cancelled;
a resource no node has is one line at start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coop.simulate import Simulator
from coop.testing import raylets
from coop.testing.raylets import LocalCluster
from coop.testing.standin import MakeStandIn
from coop.text import objective_id
from tests.support.procs import (
    assert_one_line_error,
    coop_env,
    run_coop,
    spawn_coop,
    unique,
    wait_for,
)

RAY = Path(sys.executable).with_name("ray")
TOOLS = "tests.support.pytools"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="coop-pt-"))
    try:
        with raylets.running(workers=1, root=root) as running:
            yield running
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tool_steps(events: list[dict[str, Any]], tool: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "step" and e["kind"] == "tool" and e["tool"] == tool]


def _worker(log: Path) -> str:
    """The worker a `coop join` ran, from its last line."""
    return log.read_text().strip().splitlines()[-1].split(" on node ", 1)[0]


def test_placed_tools_run_where_their_resource_is(
    cluster: LocalCluster, make_standin: MakeStandIn, tmp_path: Path
) -> None:
    server = make_standin(
        simulator=Simulator(fanout=3, limit=3),
        tool_args={"where": [{}], "here": [{}], "stuck": [{}]},
    )
    env = cluster.client_env(coop_env(None, server))
    head, node_b = cluster.head.node_id, cluster.workers[0].node_id
    objective = unique("Find where the work runs")
    oid = objective_id(objective)
    # new tasks wait for `coop approve`, so that each worker is sure to get one: the head's
    # does the first task alone, node B's joins while the tasks it planned wait
    start = spawn_coop(
        "start",
        objective,
        "--workers",
        "0",
        "--max-steps",
        "12",
        "--approve",
        env=env,
        log=tmp_path / "start.log",
    )
    wait_for(lambda: oid in (tmp_path / "start.log").read_text(), 60, "the board")
    on_head = spawn_coop(
        "join",
        oid,
        "--node",
        head,
        "--tool",
        f"{TOOLS}:where",
        "--tool",
        f"{TOOLS}:stuck",
        env=env,
        log=tmp_path / "a.log",
    )
    wait_for(
        lambda: '"hold": true' in run_coop("events", oid, "--json", env=env).stdout,
        90,
        "tasks held",
    )
    on_b = spawn_coop(
        "join", oid, "--node", node_b, "--tool", f"{TOOLS}:here", env=env, log=tmp_path / "b.log"
    )
    wait_for(lambda: " here" in run_coop("status", oid, env=env).stdout, 90, "node B's worker")
    deadline = time.monotonic() + 120
    while start.poll() is None and time.monotonic() < deadline:  # a person, approving all
        assert run_coop("approve", oid, "--all", env=env).returncode == 0
    assert start.wait(10) == 0, (tmp_path / "start.log").read_text()
    assert on_head.wait(60) == 0 and on_b.wait(60) == 0
    assert f"on node {head[:8]}" in (tmp_path / "a.log").read_text()
    assert f"on node {node_b[:8]}" in (tmp_path / "b.log").read_text()
    shown = run_coop("events", oid, "--json", env=env)
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    # each tool is a capability: a task that needs one went to the worker offering it
    caps = {_worker(tmp_path / "a.log"): {"where", "stuck"}, _worker(tmp_path / "b.log"): {"here"}}
    needs = {t[0]: set(t[3]) for e in events if e["event"] == "added" for t in e["tasks"]}
    done_by = {e["id"]: e["worker"] for e in events if e["event"] == "completed"}
    assert any(needs.values()) and all(needs[t] <= caps[w] for t, w in done_by.items())
    wheres = _tool_steps(events, "where")
    assert wheres and all(s["ok"] and s["text"] == node_b for s in wheres)
    heres = _tool_steps(events, "here")
    assert heres and all(json.loads(s["text"])["node"] == node_b for s in heres)
    stucks = _tool_steps(events, "stuck")
    assert stucks and all(
        not s["ok"] and "did not answer within 1s; its Ray task was cancelled" in s["text"]
        for s in stucks
    )
    listed = subprocess.run(
        [str(RAY), "list", "tasks", "--detail", "--format", "json", "--limit", "10000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    tasks = [t for t in json.loads(listed.stdout) if t["name"].startswith(f"coop:{oid}:task-")]
    placed = [t for t in tasks if t["name"].endswith(":where")]
    assert len(placed) == len(wheres) and all(t["node_id"] == node_b for t in placed)
    assert all(t["state"] == "FINISHED" for t in placed)
    cut = [t for t in tasks if t["name"].endswith(":stuck")]
    assert len(cut) == len(stucks) and all(t["state"] == "FAILED" for t in cut)
    # a resource no node has: one line at start, naming it, and no objective made
    never = unique("Never")
    said = run_coop(
        "-q", "start", never, "--llm", "offline", "--tool", f"{TOOLS}:needs_tpu", env=env
    )
    assert_one_line_error(said, "'needs_tpu' asks for 4 TPU: no node of the cluster has")
    assert never not in run_coop("list", env=env).stdout
    said = run_coop("-q", "join", oid, "--tool", f"{TOOLS}:needs_tpu", env=env)
    assert_one_line_error(said, "'needs_tpu' asks for 4 TPU")
