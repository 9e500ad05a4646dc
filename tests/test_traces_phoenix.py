"""A whole objective's trace in a real receiver: `coop start` with two workers and tools sends
its spans live to Arize Phoenix on loopback; Phoenix's own API then shows the tree the
journal says, with the board's token counts; `coop events --otlp` of the same run sends the
same spans again and Phoenix keeps one of each."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from coop import registry, tracing
from coop.simulate import Simulator
from coop.testing.standin import MakeStandIn
from coop.traces import SpanRecord
from coop.types import EventKind, Reason
from tests.support import phoenix as phx
from tests.support.procs import SECRET, coop_env, run_coop, spawn_coop, unique, wait_for

pytestmark = [
    pytest.mark.receiver,
    pytest.mark.skipif(not phx.available(), reason="arize-phoenix is not installed"),
]


def _journal_spans(oid: str) -> list[SpanRecord]:
    """What the converter makes of the finished run's tape (the board read as `coop events`)."""
    board = registry.find(oid)
    convert = tracing.converter(board, content=False)
    return convert.feed(list(board.all_events()))


def _stored(receiver: phx.Phoenix, trace: str, count: int) -> list[dict[str, Any]]:
    """Phoenix's spans of `trace` once it has inserted `count` (it writes in batches)."""
    found: list[dict[str, Any]] = wait_for(
        lambda: (spans := receiver.spans(trace)) and len(spans) >= count and spans,
        60,
        f"{count} spans in Phoenix",
        receiver.log.read_text,
    )
    return found


def test_a_run_with_two_workers_is_one_trace_in_phoenix(
    receiver: phx.Phoenix, make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    # one task at a time per worker, each longer than an idle worker's longest wait between
    # two looks at the board (POLL_MAX; a task is at least two chats): while one worker is
    # busy, a task the planner adds goes to the other, so both workers lease. With two slots
    # each and quick tasks, one worker could hold every task (it did once, in CI).
    server = make_standin(latency=0.3, simulator=Simulator(fanout=2, limit=5))
    objective = unique("Write a short guide to growing tomatoes")
    env = coop_env(ray_cluster, server, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
    flags = ("--workers", "2", "--concurrency", "1", "--tools", "workspace,python")
    start = spawn_coop("start", objective, *flags, env=env, log=tmp_path / "start.log")
    assert start.wait(180) == 0, (tmp_path / "start.log").read_text()
    board = registry.find(objective)
    snap = board.snapshot()
    assert snap.reason is Reason.DONE
    events = list(board.all_events())
    expected = _journal_spans(board.objective_id)
    trace = f"{expected[0].trace_id:032x}"
    stored = _stored(receiver, trace, len(expected))

    # the same spans, ids and parents as the journal's, once each
    by_id = {s["context"]["span_id"]: s for s in stored}
    assert len(by_id) == len(stored) == len(expected)
    assert {
        f"{s.span_id:016x}": f"{s.parent_id:016x}" if s.parent_id else None for s in expected
    } == {sid: s["parent_id"] for sid, s in by_id.items()}
    (root,) = [s for s in stored if s["parent_id"] is None]
    assert root["name"] == "invoke_agent coop" and root["attributes"]["coop.answer.met"] is True

    # a span per task attempt, each under the run, by the worker and token of its lease
    leases = [e.data for e in events if e.kind is EventKind.LEASED]
    attempts = {
        s["context"]["span_id"]: s["attributes"]
        for s in stored
        if s["attributes"].get("coop.lease.token") is not None
    }
    assert len(attempts) == len(leases) >= snap.completed
    assert all(by_id[sid]["parent_id"] == root["context"]["span_id"] for sid in attempts)
    assert sorted(
        (a["coop.task.id"], a["coop.lease.token"], a["gen_ai.agent.name"])
        for a in attempts.values()
    ) == sorted((d["id"], d["token"], d["worker"]) for d in leases)
    workers = {a["gen_ai.agent.name"] for a in attempts.values()}
    assert len(workers) == 2  # both workers leased

    # every model and tool call, each worker's under its own task's attempt
    calls = [s for s in stored if "gen_ai.usage.input_tokens" in s["attributes"]]
    tools = [s for s in stored if s["name"].startswith("execute_tool ")]
    assert len(tools) == sum(t.calls for t in snap.tools.values()) > 0
    assert {s["name"][len("execute_tool ") :] for s in tools} >= {"python"} | {"workspace_write"}
    for span in [*tools, *calls]:
        a = span["attributes"]
        parent = attempts.get(span["parent_id"] or "")
        if a.get("coop.task.id") is not None and a["coop.worker"] in workers:
            assert parent is not None, span
            assert parent["coop.task.id"] == a["coop.task.id"]
            assert parent["gen_ai.agent.name"] == a["coop.worker"]
    # with token counts equal to the board's
    usage = snap.total
    assert len(calls) == usage.calls
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in calls) == usage.prompt_tokens
    assert (
        sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in calls) == usage.completion_tokens
    )
    kinds = Counter(s["attributes"]["coop.call.kind"] for s in calls)
    assert {k: u.calls for k, u in snap.usage.items() if u.calls} == dict(kinds)
    assert SECRET not in repr(stored) and SECRET[8:20] not in repr(stored)

    # the journal's export of the same run: the same spans, not doubled
    again = run_coop(
        "events", board.objective_id, "--otlp", "--otlp-endpoint", receiver.url, env=env
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(expected)} spans of {board.objective_id} sent" in again.stderr
    after = receiver.spans(trace)
    assert sorted(s["context"]["span_id"] for s in after) == sorted(by_id)
