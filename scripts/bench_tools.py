#!/usr/bin/env python
"""What a Python tool call costs coop: the same small function called directly, as a
`@coop.tool` in the worker's process, and as a placed tool (each call a Ray task), all through
the worker's real Toolbox (arguments validated, the output turned into text, bounded and
scrubbed) with a real board actor behind the ToolContext, interleaved in one run so all three
meet the same machine.

    python -m scripts.bench_tools                 # ~30 s
    python -m scripts.bench_tools --calls 20      # a quick look

It starts a private one-node Ray cluster on loopback with a custom resource the placed tool
asks for, so its calls are scheduled like a GPU tool's on a GPU node (here, the same node).
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray

import coop
from coop import constants as C
from coop import registry
from coop.config import RunSettings
from coop.tools import Invocation
from coop.tools.box import Toolbox
from coop.tools.functions import FunctionProvider

RESOURCE = "bench-accelerator"
"""The custom resource standing in for a GPU: the placed tool needs a bit of it."""


def score(text: str, weights: list[float]) -> dict[str, float]:
    """A small function worth calling: a weighted character score of the text."""
    total = sum(w * (i + 1) for i, w in enumerate(weights))
    return {"length": float(len(text)), "score": total * len(text)}


in_process = coop.tool(name="score")(score)
placed = coop.tool(name="score_placed", resources={RESOURCE: 0.01}, num_cpus=0)(score)


def timed(call: Callable[[], object], calls: int) -> list[float]:
    seconds = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100, help="calls of each kind, per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the kinds")
    a = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="coop-bench-tools-"))
    os.environ["COOP_STATE_DIR"] = str(state)
    ray.init(
        address="local",  # a cluster of its own, never one already running here
        num_cpus=2,
        resources={RESOURCE: 1},
        include_dashboard=False,
        namespace=C.NAMESPACE,
        logging_level=logging.ERROR,
    )
    try:
        board = registry.create_board("bench tool calls", RunSettings(llm="offline"), state)
        box = Toolbox([FunctionProvider(t, board) for t in (in_process, placed)])
        at = Invocation(f"{board.objective_id}/1/1", 1, 1, "bench", timeout=30.0)
        args = {"text": "a tool call's overhead", "weights": [0.5, 1.5, 2.0]}
        raw = json.dumps(args)
        kinds: dict[str, Callable[[], object]] = {
            "direct function call": lambda: score(**args),  # type: ignore[arg-type]
            "@coop.tool in the worker's process": lambda: box.run("score", raw, at),
            "placed @coop.tool (a Ray task)": lambda: box.run("score_placed", raw, at),
        }
        for call in kinds.values():  # warm: the placed tool's first task starts a Ray worker
            ran = call()
            assert not hasattr(ran, "output") or ran.output.ok, ran
        seconds: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for name, call in kinds.items():
                seconds[name] += timed(call, a.calls)
    finally:
        ray.shutdown()
        shutil.rmtree(state, ignore_errors=True)
    print(f"{a.calls} calls of each, {a.rounds} rounds interleaved")
    print("\n| tool call | median | p90 | over a direct call |\n|---|---:|---:|---:|")
    direct = statistics.median(seconds["direct function call"])
    for name, times in seconds.items():
        times.sort()
        median, p90 = statistics.median(times), times[int(len(times) * 0.9) - 1]
        over = f"+{(median - direct) * 1e6:,.0f} µs" if name != "direct function call" else "–"
        print(f"| {name} | {_fmt(median)} | {_fmt(p90)} | {over} |")
    return 0


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    raise SystemExit(main())
