#!/usr/bin/env python
"""Benchmarks: coordination overhead, the step ledger's cost, scaling against the ideal on a
pre-filled board and on a whole objective, planner cost per task, memory at scale, and the
actors' footprint — side by side in one run, medians over repeats.

    pip install -e ".[dev]"
    python -m scripts.bench                 # the full run (about 15 minutes on 2 cores)
    python -m scripts.bench --smoke         # seconds: checks the harness works (CI)

Everything runs here: a private Ray cluster on 127.0.0.1 and the HTTP stand-in model server
(`--latency` seconds per chat completion). Prints a Markdown table, writes it and a plot of
scaling against the ideal to `--out` (default: bench-out/).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import ray
from weaviate.classes.data import DataObject

from coop import cluster
from coop.board import Board, budget
from coop.config import RunSettings, new_settings
from coop.memory.cluster import VectorStore
from coop.memory.weaviate import client as weaviate_client
from coop.memory.weaviate import (
    close_all,
    drop_tenant,
    ensure_tenant,
    result_uuid,
)
from coop.memory.weaviate import where as weaviate_where
from coop.simulate import Simulator
from coop.testing.cluster import Coop, local_cluster
from coop.testing.standin import StandIn
from coop.text import objective_id
from coop.types import Lease, Snapshot, Step, StepKind
from scripts import bench_sandbox

PLANNER_KINDS = tuple(k.value for k in budget.PLANNER_KINDS)
"""The planner's usage kinds, as the board's usage table and journals name them."""
SECTIONS = ("standin", "board", "scaling", "whole", "planner", "memory", "footprint", "sandbox")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--dim", type=int, default=1536, help="vector size for the memory section")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument(
        "--whole", default="1x1,1x4,2x4,4x4,8x4", help="workers x in flight, for a whole objective"
    )
    sections = ", ".join(SECTIONS)
    p.add_argument("--only", default="", help=f"sections to run, comma-separated: {sections}")
    p.add_argument(
        "--sandbox-before", default="", help="an earlier commit whose sandbox is timed beside"
    )
    a = p.parse_args()
    a.cycles, a.workers, a.concurrency = 2000, (1, 2, 4, 8), (1, 4)
    a.callers, a.plan_sizes, a.memory_sizes = (1, 2, 4, 8, 16), (50, 500), (1_000, 10_000, 100_000)
    a.footprint_sizes, a.seconds = (10_000, 100_000), 8.0
    a.whole = tuple(tuple(int(n) for n in wc.split("x")) for wc in a.whole.split(","))
    a.whole_repeats = 2
    a.whole_modes = (("3 per call", False), ("as asked", True))  # the model proposes ... tasks
    a.least_tasks = {"scaling": 20, "whole": 40}  # per run, however small the ideal rate
    a.capacity_seconds = 3.0
    if a.smoke:
        a.repeats, a.cycles, a.workers, a.concurrency, a.callers = 1, 100, (1,), (1,), (1,)
        a.whole_modes = a.whole_modes[:1]  # the harness is the same in both: one checks it
        a.plan_sizes, a.memory_sizes, a.footprint_sizes = (12,), (1_000,), (1_000,)
        a.seconds, a.latency, a.dim = 1.0, 0.1, 64
        a.whole, a.whole_repeats = ((1, 2),), 1
        a.least_tasks, a.capacity_seconds = {"scaling": 10, "whole": 12}, 0.25
    return a


def median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


class Cpu:
    """The machine's CPU use, sampled from /proc/stat in the background: how busy all cores
    were between two wall-clock times. On 2 cores, a scaling figure under its target with the
    cores near 100% busy is the machine's limit, not coop's."""

    def __init__(self, every: float = 0.25) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (time, busy jiffies, all jiffies)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            with open("/proc/stat") as stat:
                fields = [int(n) for n in stat.readline().split()[1:]]
            idle = fields[3] + fields[4]  # idle + iowait
            self.samples.append((time.time(), sum(fields) - idle, sum(fields)))

    def busy(self, since: float, until: float) -> float:
        """The share of all cores' time spent busy between `since` and `until`."""
        inside = [s for s in self.samples if since <= s[0] <= until]
        if len(inside) < 2:
            return float("nan")
        (_, b0, a0), (_, b1, a1) = inside[0], inside[-1]
        return (b1 - b0) / max(a1 - a0, 1)

    def stop(self) -> None:
        self._stop.set()


def new_board(tag: str, state: Path, **settings: Any) -> Any:
    oid = objective_id(f"bench {tag} {time.time_ns()}")
    run = RunSettings(llm="offline", max_tasks=10**9, lease_ttl=120, **settings).validate()
    return cluster.named_actor(Board, oid, "board", oid, tag, run, "bench", str(state))


def start_actor(cls: type) -> Any:
    """An actor of `cls` that takes no CPU (Ray's typing of handles is too loose to check)."""
    return ray.remote(cls).options(num_cpus=0).remote()


class Bare:
    def ping(self) -> None:
        return None


class Caller:
    """Drives lease → complete cycles against a board from its own process."""

    def cycles(self, board: Any, seconds: float) -> int:
        """As a busy worker does: each acknowledgement brings the next lease."""
        done, end = 0, time.monotonic() + seconds
        got = ray.get(board.lease.remote("caller"))
        while isinstance(got, Lease) and time.monotonic() < end:
            _, got = ray.get(
                board.complete_and_lease.remote(got.task.id, got.token, "caller", "r" * 200)
            )
            done += 1
        return done


def board_overhead(a: argparse.Namespace, state: Path, rows: list[list[str]]) -> None:
    bare = start_actor(Bare)
    ray.get(bare.ping.remote())
    board = new_board("overhead", state)
    ray.get(board.add.remote([f"task {i}" for i in range(2 * a.cycles * a.repeats + 10)]))
    cycle_ms, split_ms, bare_ms = [], [], []
    lease = ray.get(board.lease.remote("w"))
    for _ in range(a.cycles * a.repeats):
        t = time.perf_counter()
        ray.get(bare.ping.remote())
        bare_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()  # a worker's steady state: one call acknowledges and leases
        _, lease = ray.get(
            board.complete_and_lease.remote(lease.task.id, lease.token, "w", "r" * 200)
        )
        cycle_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()  # the same work as two calls, as a first lease is
        ray.get(board.complete.remote(lease.task.id, lease.token, "w", "r" * 200))
        lease = ray.get(board.lease.remote("w"))
        split_ms.append((time.perf_counter() - t) * 1e3)
    bare_med = statistics.median(bare_ms)
    for name, times in (("one call", cycle_ms), ("two calls", split_ms)):
        med, p99 = statistics.median(times), float(np.percentile(times, 99))
        ratio = med / bare_med
        rows.append(
            [
                f"board: lease+complete cycle ({name}), median / p99",
                f"{med:.2f} / {p99:.2f} ms",
                "≤ 2.5× a bare call",
                f"{ratio:.2f}× (bare call {bare_med:.2f} ms)",
                _verdict(ratio <= 2.5),
            ]
        )
    best = 0.0
    pool = [start_actor(Caller) for _ in range(max(a.callers))]  # each run takes the first n
    for n in a.callers:
        callers = pool[:n]
        board = new_board(f"rate{n}", state)
        ray.get(board.add.remote([f"t{i}" for i in range(int(3000 * a.seconds))]))

        def run(board: Any = board, callers: list[Any] = callers) -> float:
            done: list[int] = ray.get([c.cycles.remote(board, a.seconds) for c in callers])
            return sum(done) / float(a.seconds)

        rate = median_of(a.repeats, run)
        best = max(best, rate)
        rows.append([f"board: cycles/s with {n} concurrent caller(s)", f"{rate:.0f}", "", "", ""])
    rows.append(["board: most cycles/s", f"{best:.0f}", "≥ 1,000", "", _verdict(best >= 1000)])


def ledger_overhead(a: argparse.Namespace, state: Path, rows: list[list[str]]) -> None:
    """The step ledger's one round trip per step: `Board.step` recording a model step (reply
    and usage) and opening the next (the rate limit), against a bare actor call."""
    bare = start_actor(Bare)
    board = new_board("ledger", state)
    ray.get(board.add.remote(["a task of many steps"]))
    lease = ray.get(board.lease.remote("w"))
    steps_ms, bare_ms = [], []
    reply = "r" * 400  # a short model reply, as a tool-calling turn is
    for n in range(1, a.cycles * a.repeats + 1):
        done = Step(
            n, StepKind.MODEL, reply, (("c", "workspace_read", '{"path": "x"}'),), prompt=900
        )
        t = time.perf_counter()
        ray.get(bare.ping.remote())
        bare_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        ray.get(board.step.remote(lease.task.id, lease.token, "w", done, 1200, ""))
        steps_ms.append((time.perf_counter() - t) * 1e3)
    med, bare_med = statistics.median(steps_ms), statistics.median(bare_ms)
    rows.append(
        [
            "step ledger: one round trip per step (record + open next), median / p99",
            f"{med:.2f} / {float(np.percentile(steps_ms, 99)):.2f} ms",
            "one board call a step",
            f"{med / bare_med:.2f}× a bare call ({bare_med:.2f} ms)",
            "met",
        ]
    )


def whole_objective(
    a: argparse.Namespace,
    coop: Coop,
    server: StandIn,
    cpu: Cpu,
    executed: dict[tuple[int, int], float],
    rows: list[list[str]],
) -> None:
    """A whole objective: `coop start --workers 0` plus W `coop join --concurrency C`, the
    stand-in proposing a fixed 3 tasks per creation call, then as many as the prompt asks.
    Beside each figure: execution only at the same W × C in this run (what the planner could
    at best feed) and how busy the machine's cores were."""
    for mode, asked in a.whole_modes:
        for w, c in a.whole:
            ideal = w * c / a.latency
            tasks = max(a.least_tasks["whole"], int(ideal * a.seconds))

            def one_run(
                w: int = w, c: int = c, tasks: int = tasks, asked: bool = asked
            ) -> dict[str, float]:
                server.simulator = Simulator(per_call=3, as_asked=asked, limit=10**6)
                objective = f"Whole objective {w}x{c} {time.time_ns()}"
                oid = objective_id(objective)
                start = coop.spawn("start", objective, "--workers", "0", "--max-tasks", str(tasks))
                while oid not in [n.split(":")[1] for n in cluster.actor_names()]:
                    time.sleep(0.1)
                joins = [coop.spawn("join", oid, "--concurrency", str(c)) for _ in range(w)]
                start.wait()
                coop.stop_all(joins)
                board = ray.get_actor(f"coop:{oid}:board")
                snap: Snapshot = ray.get(board.snapshot.remote())
                done = ray.get(board.results.remote())
                events = ray.get(board.events.remote(0, 10**7))
                first = min(e.at for e in events if e.kind.value == "leased")
                planner = [snap.usage[k] for k in PLANNER_KINDS]
                rate, since, until = _steady(done)
                return {
                    "rate": rate,
                    "calls": sum(u.calls for u in planner) / len(done),
                    "tokens": sum(u.tokens for u in planner) / len(done),
                    "near": snap.progress.near_duplicates,
                    "first": first - snap.created,
                    "busy": cpu.busy(since, until),
                }

            runs = [one_run() for _ in range(a.whole_repeats)]
            m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            share = m["rate"] / ideal
            beside = executed.get((w, c))
            rows.append(
                [
                    f"whole objective ({mode}): {w} worker(s) × {c} in flight",
                    f"{m['rate']:.1f} tasks/s",
                    f"≥ 85% of {ideal:.0f}/s" if mode == "3 per call" else "",
                    f"{share:.0%} of ideal"
                    + (f", {m['rate'] / beside:.0%} of execution only" if beside else "")
                    + f"; cores {m['busy']:.0%} busy; planner {m['calls']:.2f} calls, "
                    f"{m['tokens']:.0f} tokens a task; {m['near']:.0f} near-duplicates; first "
                    f"lease {m['first']:.1f} s after creation",
                    _verdict(share >= 0.85) if mode == "3 per call" else "",
                ]
            )


def standin_capacity(a: argparse.Namespace, server: StandIn, rows: list[list[str]]) -> None:
    """How many requests a second the stand-in itself answers, to tell whether it, rather
    than coop, could be what limits the scaling figures."""
    rate = server.capacity(a.capacity_seconds)
    rows.append(["stand-in model server: requests/s it answers", f"{rate:.0f}", "", "", ""])


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _steady(snap_results: list[Any]) -> tuple[float, float, float]:
    """`steady` over a board's results."""
    return steady(r.finished_at for r in snap_results)


def steady(finished: Iterable[float]) -> tuple[float, float, float]:
    """(completions per second, from, until) between the 10th and 90th percentile of finishing
    times: the steady state, without start-up and tail. Takes bare times so that a reader of
    any version's journal (scripts/before_after.py) measures it the same way."""
    times = sorted(finished)
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9) - 1
    return (hi - lo) / max(times[hi] - times[lo], 1e-9), times[lo], times[hi]


def scaling(
    a: argparse.Namespace, coop: Coop, state: Path, cpu: Cpu, rows: list[list[str]]
) -> list[tuple[int, int, float, float]]:
    """Execution only: a board filled in advance, W `coop join` processes, C in flight each."""
    points = []
    for c in a.concurrency:
        for w in a.workers:
            ideal = w * c / a.latency
            tasks = max(a.least_tasks["scaling"], int(ideal * a.seconds))

            def one_run(w: int = w, c: int = c, tasks: int = tasks) -> tuple[float, float]:
                settings = new_settings(llm="openai", max_tasks=10**9, lease_ttl=60)
                oid = objective_id(f"scaling {w}x{c} {time.time_ns()}")
                board = cluster.named_actor(
                    Board, oid, "board", oid, oid, settings, "b", str(state)
                )
                ray.get(board.add.remote([f"Scaling task {i}" for i in range(tasks)]))
                procs = [coop.spawn("join", oid, "--concurrency", str(c)) for _ in range(w)]
                while len(ray.get(board.results.remote())) < tasks:  # the rate is read from
                    time.sleep(0.1)  # the results' own times: this only ends the run sooner
                ray.get(board.stop.remote())
                coop.stop_all(procs)
                rate, since, until = _steady(ray.get(board.results.remote()))
                return rate, cpu.busy(since, until)

            runs = sorted(one_run() for _ in range(a.repeats))
            rate, busy = runs[len(runs) // 2]  # the median run, with its own CPU figure
            share = rate / ideal
            points.append((w, c, rate, ideal))
            rows.append(
                [
                    f"scaling: {w} worker(s) × {c} in flight",
                    f"{rate:.1f} tasks/s",
                    f"≥ 90% of {ideal:.0f}/s" if w * c <= 32 else "",
                    f"{share:.0%} of ideal; cores {busy:.0%} busy",
                    _verdict(share >= 0.9),
                ]
            )
    return points


def planner_cost(a: argparse.Namespace, coop: Coop, server: StandIn, rows: list[list[str]]) -> None:
    """A whole objective: the planner and 8 tasks in flight (2 workers × 4)."""
    for size in a.plan_sizes:

        def one_run(size: int = size) -> tuple[float, float, dict[str, float]]:
            server.simulator = Simulator(fanout=3, limit=size)
            objective = f"Planner cost {size} {time.time_ns()}"
            oid = objective_id(objective)
            start = coop.spawn("start", objective, "--workers", "0", "--max-tasks", "100000")
            while oid not in [n.split(":")[1] for n in cluster.actor_names()]:
                time.sleep(0.2)
            joins = [coop.spawn("join", oid, "--concurrency", "4") for _ in range(2)]
            start.wait()
            coop.stop_all(joins)
            snap: Snapshot = ray.get(ray.get_actor(f"coop:{oid}:board").snapshot.remote())
            calls = sum(snap.usage[k].calls for k in PLANNER_KINDS)
            tokens = sum(snap.usage[k].tokens for k in PLANNER_KINDS)
            each = {k: snap.usage[k].calls / snap.completed for k in PLANNER_KINDS}
            return calls / snap.completed, tokens / snap.completed, each

        runs = [one_run() for _ in range(a.repeats)]
        calls = statistics.median(r[0] for r in runs)
        tokens = statistics.median(r[1] for r in runs)
        kinds = ", ".join(
            f"{k} {statistics.median(r[2][k] for r in runs):.2f}" for k in PLANNER_KINDS
        )
        rows.append(
            [
                f"planner: calls per task at {size} tasks",
                f"{calls:.2f}",
                "≤ 0.5",
                kinds,
                _verdict(calls <= 0.5),
            ]
        )
        rows.append(
            [
                f"planner: tokens per task at {size} tasks",
                f"{tokens:.0f}",
                "≤ 300",
                "",
                _verdict(tokens <= 300),
            ]
        )


def rss_mb(actor: Any) -> tuple[float, float]:
    """(current, peak) resident memory of an actor's process, in MB."""

    def read(_self: Any) -> tuple[float, float]:
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)

    result: tuple[float, float] = ray.get(actor.__ray_call__.remote(read))
    return result


def memory(a: argparse.Namespace, rows: list[list[str]], footprint: list[list[str]]) -> None:
    rng = np.random.default_rng(0)
    for size in a.memory_sizes:
        store = start_actor(VectorStore)
        vectors = rng.standard_normal((size, a.dim), dtype=np.float32)
        for start in range(0, size, 1000):  # pipelined: a thousand calls in flight at a time
            ray.get(
                [
                    store.upsert.remote(i, 1, vectors[i].tolist(), f"t{i}", "r" * 200, "w")
                    for i in range(start, min(start + 1000, size))
                ]
            )
        probe = rng.standard_normal((200, a.dim), dtype=np.float32)
        add_ms, query_ms = [], []
        for i, vec in enumerate(probe):
            t = time.perf_counter()
            ray.get(store.upsert.remote(size + i, 1, vec.tolist(), "probe", "r" * 200, "w"))
            add_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            ray.get(store.query.remote(vec.tolist(), 5))
            query_ms.append((time.perf_counter() - t) * 1e3)
        rows.append(
            [
                f"memory: add / top-5 query at {size:,} results ({a.dim}-d)",
                f"{statistics.median(add_ms):.2f} / {statistics.median(query_ms):.2f} ms",
                "",
                "",
                "",
            ]
        )
        now, peak = rss_mb(store)
        footprint.append(
            [f"memory actor, {size:,} results ({a.dim}-d)", f"{now:.0f} MB", f"{peak:.0f} MB"]
        )
        ray.kill(store)


def weaviate_memory(a: argparse.Namespace, state: Path, rows: list[list[str]]) -> None:
    """The same add / top-5 query against a real Weaviate server, when WEAVIATE_URL names one
    (the loopback stand-in of the tests would only measure itself)."""
    if not os.environ.get("WEAVIATE_URL"):
        print("memory: Weaviate rows skipped (WEAVIATE_URL is not set)")
        return
    settings = RunSettings(memory="weaviate", weaviate_collection="CoopBench")
    db = weaviate_client(weaviate_where(settings, state))
    rng = np.random.default_rng(0)
    for size in a.memory_sizes:
        tenant_name = f"bench-{size}-{os.getpid()}"
        ensure_tenant(db, settings.weaviate_collection, tenant_name)
        tenant = db.collections.use(settings.weaviate_collection).with_tenant(tenant_name)
        vectors = rng.standard_normal((size + 200, a.dim), dtype=np.float32)

        for start in range(0, size, 1000):
            tenant.data.insert_many(
                [_result(tenant_name, i, vectors[i]) for i in range(start, min(start + 1000, size))]
            )
        add_ms, query_ms = [], []
        for i in range(size, size + 200):
            t = time.perf_counter()
            tenant.data.insert_many([_result(tenant_name, i, vectors[i])])
            add_ms.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            tenant.query.near_vector(near_vector=vectors[i].tolist(), limit=5)
            query_ms.append((time.perf_counter() - t) * 1e3)
        rows.append(
            [
                f"memory (Weaviate): add / top-5 query at {size:,} results ({a.dim}-d)",
                f"{statistics.median(add_ms):.2f} / {statistics.median(query_ms):.2f} ms",
                "",
                "",
                "",
            ]
        )
        drop_tenant(db, settings.weaviate_collection, tenant_name)
    close_all()


def _result(tenant: str, i: int, vector: np.ndarray) -> DataObject[Any, Any]:
    return DataObject(
        uuid=result_uuid(tenant, i),
        vector=vector.tolist(),
        properties={"task_id": i, "task": f"t{i}", "result": "r" * 200},
    )


def board_footprint(a: argparse.Namespace, state: Path, footprint: list[list[str]]) -> None:
    """A board with N tasks added, a tenth of them completed with 200-character results."""
    for size in a.footprint_sizes:
        board = new_board(f"footprint{size}", state)
        for start in range(0, size, 1000):
            ray.get(board.add.remote([f"Footprint task {i}" for i in range(start, start + 1000)]))
        for _ in range(size // 10):
            lease = ray.get(board.lease.remote("w"))
            ray.get(board.complete.remote(lease.task.id, lease.token, "w", "r" * 200))
        now, peak = rss_mb(board)
        footprint.append(
            [
                f"board actor, {size:,} tasks ({size // 10:,} completed)",
                f"{now:.0f} MB",
                f"{peak:.0f} MB",
            ]
        )


def plot(points: list[tuple[int, int, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in sorted({p[1] for p in points}):
        mine = [p for p in points if p[1] == c]
        ax.plot([p[0] for p in mine], [p[2] for p in mine], "o-", label=f"coop, {c} in flight")
        ax.plot(
            [p[0] for p in mine],
            [p[3] for p in mine],
            "--",
            color="grey",
            alpha=0.6,
            label=f"ideal, {c} in flight",
        )
    ax.set_xlabel("worker processes")
    ax.set_ylabel("finished tasks per second")
    ax.set_title("Scaling against the ideal (W × C / latency)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> int:
    a = parse()
    a.out.mkdir(parents=True, exist_ok=True)
    server = StandIn(latency=a.latency)
    server.start()
    rows: list[list[str]] = []
    footprint: list[list[str]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="coop-bench-") as tmp, local_cluster() as c:
        state, logs = Path(tmp) / "state", Path(tmp) / "logs"
        logs.mkdir()
        coop = Coop(c.address, server, state, logs)
        wanted = set(a.only.split(",")) if a.only else set(SECTIONS)
        points: list[tuple[int, int, float, float]] = []
        cpu = Cpu()
        if "standin" in wanted:
            standin_capacity(a, server, rows)
        if "board" in wanted:
            board_overhead(a, state, rows)
            ledger_overhead(a, state, rows)
        if "scaling" in wanted:
            points = scaling(a, coop, state, cpu, rows)
        if "whole" in wanted:
            executed = {(w, c): rate for w, c, rate, _ in points}
            whole_objective(a, coop, server, cpu, executed, rows)
        if "planner" in wanted:
            planner_cost(a, coop, server, rows)
        if "memory" in wanted:
            memory(a, rows, footprint)
            weaviate_memory(a, state, rows)
        if "footprint" in wanted:
            board_footprint(a, state, footprint)
        if "sandbox" in wanted:
            calls, rounds = (2, 1) if a.smoke else (30, a.repeats)
            for measure, result, note in bench_sandbox.rows(a.sandbox_before, calls, rounds):
                rows.append([measure, result, "", note, ""])
        cpu.stop()
    server.stop()
    if points:
        plot(points, a.out / "scaling.png")
    report = (
        table(["measure", "result", "target", "against target", "verdict"], rows)
        + "\n\n"
        + table(["actor", "resident", "peak"], footprint)
        + "\n"
    )
    (a.out / "results.md").write_text(report)
    print(report)
    print(f"({time.monotonic() - began:.0f} s; plot: {a.out / 'scaling.png'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
