#!/usr/bin/env python
"""Benchmark: what traces cost — the same work on a journaled board with tracing off and on,
side by side in one run, and the spans a task makes.

    python -m scripts.bench_traces              # ~1 minute
    python -m scripts.bench_traces --smoke      # seconds: checks the harness works

Workers are threads driving a real `Board` (journal on disk) through its client as coop's
worker does: lease, a model call (`--latency` seconds) that asks for a tool, the tool's call,
a second model call, completion. With tracing on, the real live exporter (`coop.tracing.live`:
a thread tailing the board, converting, sending OTLP/HTTP with the official exporter) sends
to a receiver on loopback: a minimal OTLP/HTTP endpoint here that decodes each request with
OpenTelemetry's own protobuf types and counts the spans, so the figures are coop's cost, not
a viewer's. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from coop import tracing
from coop.board import Board, BoardClient
from coop.config import RunSettings
from coop.types import Answer, Lease, Step, StepKind

PLANNER = "bench-planner-1"
"""The planner instance that claims the board (it records the planner calls and the answer)."""


@dataclass
class Outcome:
    wall: float  # seconds for all tasks
    calls: int  # model calls
    tasks: int
    spans: int = 0  # spans the receiver decoded
    export_seconds: float = 0.0  # the exporter thread's time: read, convert, send


class _Sink(BaseHTTPRequestHandler):
    """OTLP/HTTP's traces endpoint: decode the request, count its spans, answer 200."""

    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with _Sink.lock:
            _Sink.spans += count
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _work(board: BoardClient, worker: str, latency: float, calls: list[int]) -> None:
    """A worker's loop, as coop's: two model calls and a tool call per task."""
    while isinstance(lease := board.lease(worker), Lease):
        tid, token = lease.task.id, lease.token
        board.step(tid, token, worker, None, acquire=100)
        time.sleep(latency)
        ask = Step(
            1, StepKind.MODEL, "", (("c1", "python", '{"code": "1"}'),), prompt=90, completion=20
        )
        board.step(tid, token, worker, ask)
        time.sleep(latency / 10)
        tool = Step(2, StepKind.TOOL, "1", call="c1", tool="python", latency=latency / 10, bytes=1)
        board.step(tid, token, worker, tool, acquire=100)
        time.sleep(latency)
        board.step(tid, token, worker, Step(3, StepKind.MODEL, "done", prompt=120, completion=30))
        board.complete(tid, token, worker, f"result of task {tid}")
        calls.append(2)


def run(tasks: int, workers: int, latency: float, endpoint: str | None) -> Outcome:
    state = Path(tempfile.mkdtemp(prefix="coop-bench-traces-"))
    settings = RunSettings(llm="offline", max_tasks=tasks + 1, lease_ttl=60).validate()
    tag = f"bench-{time.monotonic_ns():x}"
    board = BoardClient.in_process(Board(tag, "bench", settings, "n", str(state)))
    board.claim_planner(PLANNER)
    board.add([f"task {i}" for i in range(tasks)], planner=PLANNER)
    board.record_usage(PLANNER, "creation", 300, 80, latency=latency)
    stats = tracing.Exported()
    exporting = (
        tracing.live(board, endpoint=endpoint, content=False, stats=stats) if endpoint else _Off()
    )
    calls: list[int] = []
    started = time.perf_counter()
    with exporting:
        threads = [
            threading.Thread(target=_work, args=(board, f"bench-{w}-{w}", latency, calls))
            for w in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        board.record_usage(PLANNER, "synthesis", 900, 200, latency=latency)
        board.record_answer(PLANNER, Answer(text="done", met=True))
        wall = time.perf_counter() - started
    return Outcome(wall, sum(calls) + 2, len(calls), stats.spans, stats.seconds)


class _Off:
    """Tracing off: nothing around the run."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the harness only")
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.05, help="seconds per model call")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.smoke:
        a.tasks, a.repeats, a.latency = 6, 1, 0.01
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    off: list[Outcome] = []
    on: list[Outcome] = []
    for _ in range(a.repeats):  # interleaved: both see the same load on a shared machine
        off.append(run(a.tasks, a.workers, a.latency, None))
        before = _Sink.spans
        on.append(run(a.tasks, a.workers, a.latency, endpoint))
        on[-1].spans = _Sink.spans - before
    sink.shutdown()

    def med(xs: list[Outcome], f: Callable[[Outcome], float]) -> float:
        return statistics.median(f(x) for x in xs)

    per_call_off = med(off, lambda o: o.wall / o.calls * 1e3)
    per_call_on = med(on, lambda o: o.wall / o.calls * 1e3)
    print(f"{a.tasks} tasks, {a.workers} workers, {a.latency * 1e3:.0f} ms per model call, "
          f"median of {a.repeats}")  # fmt: skip
    print(
        "\n| tracing | wall (s) | ms per model call | spans per task | exporter ms per model call |"
    )
    print("|---|---:|---:|---:|---:|")
    print(f"| off | {med(off, lambda o: o.wall):.2f} | {per_call_off:.1f} | – | – |")
    print(
        f"| on | {med(on, lambda o: o.wall):.2f} | {per_call_on:.1f} | "
        f"{med(on, lambda o: o.spans / o.tasks):.2f} | "
        f"{med(on, lambda o: o.export_seconds / o.calls * 1e3):.2f} |"
    )
    print(f"\nwall-clock difference per model call: {per_call_on - per_call_off:+.2f} ms")
    spans = on[0].spans
    assert spans > 0 and (not a.smoke or spans >= a.tasks), "the receiver got no spans"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
