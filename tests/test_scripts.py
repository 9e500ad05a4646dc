"""The scripts in scripts/ run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ray.cluster_utils import Cluster

from tests.support.procs import ROOT, coop_env


def run_script(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m scripts.<name>` from the repository's root, as the README says (`env`: the
    default is no cluster to find, no model, no key)."""
    return subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", *args],
        env=coop_env(None) if env is None else env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_short_chaos_run_loses_nothing() -> None:
    """Workers SIGKILLed every two seconds, the planner killed and taken over by a standby,
    a model server that throws 429s, 500s and stalls: nothing lost, nothing duplicated."""
    proc = run_script("chaos", "--short", "--kill-planner")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = dict(
        line.strip().split(": ", 1)
        for line in proc.stdout.splitlines()
        if ": " in line and not line.startswith("chaos check")
    )
    assert report["tasks lost"] == "0" and report["results duplicated in memory"] == "0"
    assert report["acknowledged results missing from the journal"] == "0"
    assert int(report["workers SIGKILLed"]) >= 3 and int(report["faults injected"]) > 0
    assert "killed the planner" in proc.stdout and "chaos check: PASSED" in proc.stdout
    # tasks of several steps, killed mid-step: a finished step never ran again
    assert int(report["steps recorded"]) > int(report["tasks completed"])
    assert report["repeated completed calls"] == "0"
    billed = int(report["execution tokens the server billed"])
    assert int(report["execution tokens coop counted (estimates included)"]) >= billed


def test_bench_smoke_runs_every_section(tmp_path: Path) -> None:
    """Benchmarks are not tests: this only checks that the harness works end to end."""
    proc = run_script("bench", "--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "results.md").read_text()
    for section in (
        "board: lease+complete cycle",
        "scaling:",
        "planner: tokens per task",
        "memory: add / top-5 query",
        "board actor,",
        "memory actor,",
        "sandbox: bubblewrap call, this tree",
    ):
        assert section in table
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_ceiling_smoke_runs_before_and_after() -> None:
    """The board ceiling bench runs this tree and 950d2f4 (main before it), each on its own
    package."""
    proc = run_script("bench_ceiling", "--smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| board ceiling: tasks/s sustained" in proc.stdout
    assert "| board ceiling: tasks per CPU-second of the board's process" in proc.stdout


def test_multinode_demo_spreads_work_over_every_worker_node() -> None:
    """A head and two worker nodes (real raylets on 127.0.0.1): each pinned `coop join`
    executed tasks on its own node, and no task ran twice."""
    proc = run_script("multinode_demo", "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(
        line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("coop-node-")
    )
    assert set(rows) == {"coop-node-1", "coop-node-2"} and all(int(n) > 0 for n in rows.values())
    assert "multi-node demo: PASSED" in proc.stdout


def test_bench_traces_smoke_sends_spans_side_by_side() -> None:
    """The traces bench runs tracing off and on, and the receiver counts the spans."""
    proc = run_script("bench_traces", "--smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (on,) = [line for line in proc.stdout.splitlines() if line.startswith("| on |")]
    assert any(line.startswith("| off |") for line in proc.stdout.splitlines())
    assert float(on.split("|")[4]) >= 4  # a task's attempt, its two model calls and its tool


def test_the_python_tool_example_calls_its_tool_in_every_task(ray_cluster: Cluster) -> None:
    """`coop start --tool scripts.example_tool:forecast`, offline: the simulated model calls
    the user's tool in every task and each call answered (the script checks both). On the
    session's cluster: the tool reaches the worker actors of a cluster `coop start` did not
    start (its own local Ray is tested in test_cluster)."""
    proc = run_script("example_tool", env=coop_env(ray_cluster))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "called forecast: {" in proc.stdout
