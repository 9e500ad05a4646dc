#!/usr/bin/env python
"""Chaos run: an objective worked by `coop join` processes that keep getting SIGKILLed in the
middle of multi-step tasks (each reads and writes the shared workspace), against a model server
that rate-limits, errs and stalls — then a check that nothing was lost or duplicated, and that
no finished step (a model call or a tool call the step ledger recorded) ran again.

    python -m scripts.chaos --kill-planner         # the documented run (about a minute)
    python -m scripts.chaos --short                # the short run the tests use (~40 s)
    python -m scripts.chaos --tasks 300            # longer: more tasks, more kills

Everything runs on this machine: a private Ray cluster on 127.0.0.1, the HTTP stand-in on
127.0.0.1, a temporary state dir. Exit status 0 only if every check passes.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import argparse
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import ray

from coop import constants as C
from coop.journal import journal_path
from coop.simulate import Simulator
from coop.testing.cluster import Coop, local_cluster
from coop.testing.standin import Faults, StandIn
from coop.text import objective_id

DONE_LINE = re.compile(r"task #(\d+) done by")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="a quick run for the test suite")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tasks", type=int, default=60, help="tasks in the simulated objective")
    p.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    p.add_argument("--kill-planner", action="store_true")
    p.add_argument(
        "--planner-ttl", type=float, default=15.0, help="seconds before a standby takes over"
    )
    p.add_argument("--rate-429", type=float, default=0.10)
    p.add_argument("--rate-500", type=float, default=0.05)
    p.add_argument("--rate-slow", type=float, default=0.05)
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if a.short:
        a.tasks, a.kill_every, a.timeout, a.planner_ttl = 15, 2.0, 150.0, 5.0
    return a


class Run:
    def __init__(self, a: argparse.Namespace, coop: Coop) -> None:
        self.a = a
        self.coop = coop
        self.rng = random.Random(a.seed)
        self.objective = f"Chaos objective {a.seed}-{int(time.time())}"
        self.oid = objective_id(self.objective)
        self.kills = 0

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return self.coop.spawn(*args)

    def worker(self) -> subprocess.Popen[bytes]:
        return self.spawn("join", self.oid, "--concurrency", "2")

    def go(self, journal: Path) -> bool:
        """Run until a planner finishes the objective; True if one did, by itself."""
        planners = [
            self.spawn(
                "start",
                self.objective,
                "--workers",
                "0",
                "--lease-ttl",
                "4",
                "--planner-ttl",
                str(self.a.planner_ttl),
                "--max-tasks",
                "100000",
                "--max-attempts",
                "4",
                "--tools",
                "workspace",
            )
        ]
        deadline = time.monotonic() + self.a.timeout
        while not journal.exists() and planners[0].poll() is None:
            time.sleep(0.2)
        workers = [self.worker() for _ in range(self.a.workers)]
        next_kill = time.monotonic() + self.a.kill_every
        while (
            time.monotonic() < deadline
            and all(p.poll() != 0 for p in planners)
            and any(p.poll() is None for p in planners)
        ):
            time.sleep(0.2)
            if time.monotonic() < next_kill:
                continue
            next_kill += self.a.kill_every
            victim = self.rng.randrange(len(workers))
            os.kill(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = self.worker()
            self.kills += 1
            if self.a.kill_planner and self.kills == 3:
                planners.append(self.spawn("start", self.oid, "--standby", "--workers", "0"))
                time.sleep(1.0)
                os.kill(planners[0].pid, signal.SIGKILL)
                print("killed the planner; a standby takes over", flush=True)
        finished = any(p.poll() == 0 for p in planners)
        self.coop.stop_all([*workers, *planners])
        return finished


def check(run: Run, state: Path, server: StandIn) -> bool:
    path = journal_path(state, run.oid)
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT kind, data, at FROM events ORDER BY seq")
        events = [(k, json.loads(d), at) for k, d, at in rows]
    added = {t[0] for k, d, _ in events if k == "added" for t in d["tasks"]}
    completed = [d["id"] for k, d, _ in events if k == "completed"]
    dead = {d["id"]: d["error"] for k, d, _ in events if k == "failed" and d["dead"]}
    acknowledged = {
        int(m.group(1))
        for log in run.coop.logs.glob("*.log")
        for m in DONE_LINE.finditer(log.read_text(errors="replace"))
    }
    store = ray.get_actor(f"coop:{run.oid}:memory", namespace=C.NAMESPACE)
    in_memory = ray.get(store.task_ids.remote())
    board = ray.get_actor(f"coop:{run.oid}:board", namespace=C.NAMESPACE)
    state_now = ray.get(board.state.remote())
    lost = added - set(completed) - set(dead)
    repeats = repeated(events, server)
    billed = sum(
        c.prompt_tokens + c.completion_tokens
        for c in server.calls
        if c.status == 200 and c.kind == "execution"
    )
    counted = sum(
        d["prompt"] + d["completion"]
        for k, d, _ in events
        if k == "usage" and d["kind"] == "execution"
    )
    figures = {
        "state": f"{state_now[0].value} ({state_now[1].value if state_now[1] else '-'})",
        "tasks added": len(added),
        "tasks completed": len(completed),
        "tasks lost": len(lost),
        "completions duplicated": len(completed) - len(set(completed)),
        "results duplicated in memory": len(in_memory) - len(set(in_memory)),
        "completed without a result in memory": len(set(completed) - set(in_memory)),
        "acknowledged results missing from the journal": len(acknowledged - set(completed)),
        "workers SIGKILLed": run.kills,
        "steps recorded": sum(1 for k, _, _ in events if k == "step"),
        "steps replayed": sum(d["steps"] for k, d, _ in events if k == "replayed"),
        **repeats,
        "execution tokens the server billed": billed,
        "execution tokens coop counted (estimates included)": counted,
        "model calls": len(server.calls),
        "faults injected": sum(c.status != 200 for c in server.calls),
    }
    for name, value in figures.items():
        print(f"{name:>50}: {value}")
    for tid, reason in sorted(dead.items()):
        print(f"{'dead letter':>50}: #{tid} {reason}")
    zeros = (
        "tasks lost",
        "completions duplicated",
        "results duplicated in memory",
        "completed without a result in memory",
        "acknowledged results missing from the journal",
        "repeated completed calls",
    )
    ok = (
        state_now[1] is not None
        and state_now[1].value == "done"
        and all(figures[z] == 0 for z in zeros)
        and bool(completed)
        and counted >= billed  # a cap stays a cap: what killed workers paid is counted too
    )
    print("chaos check:", "PASSED" if ok else "FAILED", flush=True)
    return ok


def repeated(events: list[tuple[str, dict[str, Any], float]], server: StandIn) -> dict[str, int]:
    """How often model and tool calls ran more than once, and why.

    A model call is known by its task and its turn (the simulator asks for one tool a turn, so
    turn t is step 2t+1), a tool call by its task and step. A repeat is allowed only for a call
    in flight when its worker was killed: a model call the board then charged by estimate, or
    a tool call whose step had not been recorded. A call made after the step ledger recorded
    its step is a repeat of a finished step: that must never happen."""
    task_ids = {t[1]: t[0] for k, d, _ in events if k == "added" for t in d["tasks"]}
    recorded = {(d["task"], d["step"]): at for k, d, at in events if k == "step"}
    calls: dict[tuple[int, int], list[float]] = {}
    for c in server.calls:
        if c.status == 200 and c.kind == "execution" and c.subject in task_ids:
            calls.setdefault((task_ids[c.subject], 2 * c.turn + 1), []).append(c.at)
    for k, d, at in events:
        if k == "tool":
            calls.setdefault((d["task"], d["step"]), []).append(at)
    after = sum(
        1 for key, times in calls.items() for t in times if key in recorded and t > recorded[key]
    )
    return {
        "repeated calls": sum(len(times) - 1 for times in calls.values()),
        "calls in flight at a kill, charged by estimate": sum(
            1 for k, d, _ in events if k == "usage" and d.get("estimated")
        ),
        "repeated completed calls": after,
    }


def main() -> int:
    a = parse()
    server = StandIn(
        latency=a.latency,
        seed=a.seed,
        simulator=Simulator(fanout=3, limit=a.tasks),
        faults=Faults(
            rate_429=a.rate_429,
            rate_500=a.rate_500,
            rate_slow=a.rate_slow,
            slow_seconds=2.0,
            retry_after=0.2,
        ),
    )
    server.start()
    with tempfile.TemporaryDirectory(prefix="coop-chaos-") as tmp, local_cluster() as cluster:
        state, logs = Path(tmp) / "state", Path(tmp) / "logs"
        logs.mkdir()
        try:
            run = Run(a, Coop(cluster.address, server, state, logs))
            finished = run.go(journal_path(state, run.oid))
            print(f"{'planner finished by itself':>50}: {finished}")
            ok = check(run, state, server) and finished
            if not ok:  # the logs go with the temp dir: the planners' ends say why
                for log in sorted(logs.glob("*-start.log")):
                    print(f"--- {log.name}", *log.read_text().splitlines()[-15:], sep="\n")
        finally:
            server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
