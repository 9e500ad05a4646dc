"""coop's metrics, read back from Ray's own metrics endpoint as Prometheus would."""

from __future__ import annotations

import re
import urllib.request

import ray
from ray.cluster_utils import Cluster

from coop import registry
from coop.board import Board
from coop.config import RunSettings
from coop.text import objective_id
from tests.support.procs import coop_env, run_coop, unique, wait_for


def scrape() -> str:
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    (head,) = [n for n in nodes if n["Alive"] and "node:__internal_head__" in n["Resources"]]
    url = f"http://127.0.0.1:{head['MetricsExportPort']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def value(text: str, name: str, **tags: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"ray_{name}{{") and all(f'{k}="{v}"' in line for k, v in tags.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_run_shows_in_rays_metrics_endpoint(ray_cluster: Cluster) -> None:
    objective = unique("Count me in")
    oid = objective_id(objective)
    env = coop_env(ray_cluster)
    proc = run_coop("start", objective, "--llm", "offline", "--max-tokens", "1000000", env=env)
    assert proc.returncode == 0

    seen: list[str] = []  # the endpoint's last lines about this objective, for a failure
    board = registry.find(oid)
    snap = board.snapshot()  # what the endpoint must show: the board's own numbers
    done, executed = snap.completed, snap.usage["execution"].calls
    assert done >= 10 and executed == done  # the offline model: one call a task

    def settled() -> str | None:
        # Ray (2.60) ages out a gauge series not reported for two export intervals (its
        # open_telemetry_metric_recorder.py); a finished board sets its gauges only when it
        # is called, as `coop status` calls it. Counters and histograms are cumulative.
        board.pulse()
        text = scrape()
        seen[:] = [line for line in text.splitlines() if oid in line and "_bucket{" not in line]
        shown = value(text, "coop_tasks", objective=oid, state="completed")
        # the counters too: once, in a full-suite run, a scrape that already showed the gauge
        # had no series yet for the calls counter (exported from the same board process)
        calls = value(text, "coop_model_calls_total", objective=oid, kind="execution")
        return text if shown == done and calls is not None else None

    try:
        text = wait_for(settled, 90, "coop_tasks and coop_model_calls in the metrics endpoint")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its lines about {oid}:\n" + "\n".join(seen[:30])) from None
    assert value(text, "coop_tasks", objective=oid, state="pending") == len(snap.pending)
    assert value(text, "coop_leases_in_flight", objective=oid) == 0
    assert value(text, "coop_model_calls_total", objective=oid, kind="execution") == executed
    tokens = value(text, "coop_tokens_total", objective=oid, kind="execution")
    assert tokens is not None and tokens > 0
    left = value(text, "coop_budget_left", objective=oid, budget="tokens")
    assert left is not None and 0 < left < 1_000_000
    assert re.search(rf'ray_coop_model_latency_seconds_bucket{{[^}}]*objective="{oid}"', text)


def test_a_board_outside_an_actor_exports_nothing() -> None:
    board = Board("plain-12345678", "o", RunSettings(llm="offline").validate(), "n")
    assert not board._metrics.on
    board.add(["a"])  # and works all the same
