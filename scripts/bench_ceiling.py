#!/usr/bin/env python
"""The board ceiling: tasks a second one board sustains when N simulated workers run a task's
whole call pattern against it (no model, no memory), this tree against an earlier commit.

    python -m scripts.bench_ceiling                      # this tree against 950d2f4
    python -m scripts.bench_ceiling --against HEAD~3     # any commit
    python -m scripts.bench_ceiling --smoke              # seconds: checks the harness

A board is one thread, so the calls a task costs set an objective's ceiling. Each simulated
worker is a Ray actor of its own doing, per task, what a worker's one-step task without tools
sends the board: before (950d2f4) the embedding usage of the memory query (not waited for),
the step that takes the rate limit, the last step and the usage of the memory write (neither
waited for) and the completion that leases the next; after, the step that takes the rate
limit and the completion carrying the last step and both embedding calls' usage. Every call goes
through `Board.invoke` with a request id, as the client sends it, on a journaled board with
a rate limit and a token cap set, so that every part a real task touches is paid for.

Each version runs in its own process and Ray instance started in its own tree (`git archive`
of the commit): the working directory is what puts a version's `coop` first, for the driver
and for its actors (see scripts/before_after.py). The pattern is chosen by what the board
takes: a board whose `complete` takes `embedded` gets the new one.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import argparse
import inspect
import itertools
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "950d2f4"
QUERY_TOKENS, WRITE_TOKENS = 12, 40  # a memory query's and a memory write's embedding tokens


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default=BEFORE, help="the commit to compare with")
    p.add_argument("--workers", type=int, default=8, help="simulated workers")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeats", type=int, default=3, help="runs per version, interleaved")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one version
    a = p.parse_args()
    if a.smoke:
        a.workers, a.seconds, a.repeats = 2, 1.0, 1
    return a


def measure(workers: int, seconds: float) -> dict[str, Any]:
    """Run the call pattern of the `coop` this process imports; tasks per second."""
    import ray

    import coop
    from coop import cluster
    from coop.board import Board
    from coop.config import RunSettings
    from coop.types import Lease, Step, StepKind

    new = "embedded" in inspect.signature(Board.complete).parameters

    @ray.remote(num_cpus=0)
    class Simulated:
        """One worker's board calls for one-step tasks, back to back, for `seconds`."""

        def run(self, board: Any, name: str, seconds: float) -> int:
            prefix, count = uuid.uuid4().hex[:16], itertools.count()

            def call(method: str, *args: Any, wait: bool = True) -> Any:
                ref = board.invoke.remote(f"{prefix}-{next(count)}", method, args, {})
                return ray.get(ref) if wait else None

            done, end = 0, time.monotonic() + seconds
            got = call("lease", name, ())
            while isinstance(got, Lease) and time.monotonic() < end:
                tid, token = got.task.id, got.token
                last = Step(1, StepKind.MODEL, "r" * 400, prompt=900, completion=200, latency=0.5)
                if new:
                    call("step", tid, token, name, None, 1200, "")
                    _, got = call(
                        "complete_and_lease", tid, token, name, "r" * 400, (), "", last,
                        (QUERY_TOKENS, WRITE_TOKENS),
                    )  # fmt: skip
                else:
                    call("record_usage", name, "embedding", QUERY_TOKENS, 0, wait=False)
                    call("step", tid, token, name, None, 1200, "")
                    call("step", tid, token, name, last, wait=False)
                    call("record_usage", name, "embedding", WRITE_TOKENS, 0, wait=False)
                    _, got = call("complete_and_lease", tid, token, name, "r" * 400, ())
                done += 1
            return done

    # its own instance, never a cluster already running on the machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="coop-ceiling-") as state:
            oid = f"ceiling-{uuid.uuid4().hex[:8]}"
            run = RunSettings(
                llm="offline", lease_ttl=120, max_tasks=10**9, rpm=10**7, tpm=10**12,
                max_tokens=10**12,
            ).validate()  # fmt: skip
            board = cluster.named_actor(Board, oid, "board", oid, "ceiling", run, "bench", state)
            ray.get(board.add.remote([f"task {i}" for i in range(int(4000 * seconds))]))
            sims = [Simulated.remote() for _ in range(workers)]  # type: ignore[attr-defined]
            pid = ray.get(board.__ray_call__.remote(lambda self: os.getpid()))
            began, cpu = time.monotonic(), cpu_seconds(pid)
            counts = ray.get([s.run.remote(board, f"w{i}", seconds) for i, s in enumerate(sims)])
            took, cpu = time.monotonic() - began, cpu_seconds(pid) - cpu
            snap = ray.get(board.snapshot.remote())
    finally:
        ray.shutdown()
    embedded = snap.usage["embedding"].calls
    assert embedded == 2 * sum(counts), "an embedding call not charged once"  # the books hold
    tasks = sum(counts)
    return {"rate": tasks / took, "capacity": tasks / cpu, "package": coop.__file__, "new": new}


def cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_version(tree: Path, a: argparse.Namespace) -> dict[str, Any]:
    """`measure` run in `tree`'s own process, with its own `coop` first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import runpy, sys; "
        f"sys.argv = ['bench_ceiling', '--measure', '--workers', '{a.workers}', "
        f"'--seconds', '{a.seconds}']; "
        f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"the run in {tree} failed:\n{out.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(found["package"]).startswith(str(tree)):
        raise SystemExit(f"the run in {tree} imported {found['package']}")
    return found


def main() -> int:
    a = parse()
    if a.measure:
        print(json.dumps(measure(a.workers, a.seconds)))
        return 0
    with tempfile.TemporaryDirectory(prefix="coop-before-") as tmp:
        before = Path(tmp)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", a.against], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for _ in range(a.repeats):  # interleaved: drift on the machine hits both alike
            if a.smoke:  # the harness only, no figures to keep: both versions at once
                with ThreadPoolExecutor(2) as pool:
                    pair = [pool.submit(one_version, tree, a) for tree in (before, ROOT)]
                runs["before"].append(pair[0].result())
                runs["after"].append(pair[1].result())
                continue
            runs["before"].append(one_version(before, a))
            runs["after"].append(one_version(ROOT, a))
    print("| measure | before | after | target | verdict |")
    print("|---|---|---|---|---|")
    for key, what in (
        ("rate", "tasks/s sustained (all processes on this machine's cores)"),
        ("capacity", "tasks per CPU-second of the board's process (its ceiling)"),
    ):
        was = statistics.median(r[key] for r in runs["before"])
        now = statistics.median(r[key] for r in runs["after"])
        verdict = "met" if now >= 2 * was else "not met"
        print(
            f"| board ceiling: {what}, {a.workers} simulated workers (before = {a.against}) "
            f"| {was:.0f} | {now:.0f} ({now / was:.2f}×) | ≥ 2× | {verdict} |"
        )
    print(f"runs: {json.dumps(runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
