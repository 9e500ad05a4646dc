"""An objective's journal as OpenTelemetry GenAI spans (`coop.traces`): a small run driven
on a real board with a journal, read back from the file, converted; the export's bad input
and an unreachable collector through the real `coop` command. The trace in a real receiver
is tests/test_traces_phoenix.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from ray.cluster_utils import Cluster

from coop import otlp, registry, tracing
from coop.board import Board, BoardClient
from coop.config import RunSettings
from coop.constants import OFFLINE_MODEL
from coop.journal import Journal, journal_path
from coop.simulate import Simulator
from coop.testing.standin import MakeStandIn
from coop.text import objective_id
from coop.traces import Converter, SpanRecord, node_of, span_id, trace_id
from coop.types import Answer, EventKind, Lease, Reason, Replays, Step, StepKind
from tests.support.board import Clock
from tests.support.procs import (
    SECRET,
    assert_one_line_error,
    closed_port,
    coop_env,
    run_coop,
    spawn_coop,
    unique,
)

OID = "trace-0a1b2c3d"
BAD_ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:port"}
"""A standard variable set wrong: `coop start` refuses it before anything runs."""
A, B, PLANNER = "host-a:0", "host-b:1", "host-p-303"


def _lease(board: BoardClient, worker: str) -> Lease:
    got = board.lease(worker)
    assert isinstance(got, Lease), got
    return got


def _model(step: int, prompt: int, completion: int, *calls: tuple[str, str, str]) -> Step:
    return Step(
        step, StepKind.MODEL, "thinking", calls, prompt=prompt, completion=completion, latency=0.5
    )


def _run(tmp_path: Path) -> tuple[BoardClient, Clock]:
    """Two tasks, two workers on two hosts: a model call that asks for a tool, the tool's
    call, a lease that expires under one worker and is finished by the other with a replay,
    a failed attempt requeued, planner calls, an embedding, and the answer."""
    clock = Clock()
    run = RunSettings(llm="offline", lease_ttl=10, max_tasks=10).validate()
    board = BoardClient.in_process(
        Board(OID, "the objective", run, "n", str(tmp_path), clock=clock)
    )
    board.claim_planner(PLANNER)
    board.add(["Sort the seeds", "Label the jars"], planner=PLANNER)
    board.record_usage(PLANNER, "creation", 40, 12, latency=0.3)
    first = _lease(board, A)
    tid = first.task.id
    board.step(tid, first.token, A, None, acquire=50)
    call = ("c1", "python", '{"code": "print(1)"}')
    board.step(tid, first.token, A, _model(1, 30, 7, call), starting="")
    tool = Step(
        2, StepKind.TOOL, f"printed 1 {SECRET}", call="c1", tool="python", latency=0.2, bytes=9
    )
    board.step(tid, first.token, A, tool)
    board.record_usage(A, "embedding", 11, 0, latency=0.05, task_id=tid)
    board.complete(tid, first.token, A, "sorted")
    second = _lease(board, B)
    board.step(second.task.id, second.token, B, _model(1, 20, 5))
    clock.now += 11  # B falls silent: its lease expires
    board.pulse()
    again = _lease(board, A)
    assert again.task.id == second.task.id
    board.replayed(A, again.task.id, Replays(tasks=1, steps=1, calls=1, tokens=25))
    board.step(again.task.id, again.token, A, _model(2, 25, 6))
    board.fail(again.task.id, again.token, A, f"Boom: key {SECRET}")
    clock.now += 60
    last = _lease(board, B)
    board.step(last.task.id, last.token, B, _model(3, 22, 4))
    board.complete(last.task.id, last.token, B, "labelled")
    board.claim_planner(PLANNER)  # renewed, as a planner does while it plans
    board.record_usage(PLANNER, "synthesis", 60, 30, latency=0.8)
    board.record_answer(PLANNER, Answer(text="the answer", cited=[1, 2], met=True))
    return board, clock


def _spans(tmp_path: Path, *, content: bool = False, chunks: int = 1) -> list[SpanRecord]:
    """The journal file, read back and converted (in `chunks` batches, cut between calls)."""
    journal = Journal(journal_path(tmp_path, OID), OID, readonly=True)
    events = list(journal.events())
    convert = Converter(OID, "the objective", journal.info.created,
                        journal.info.settings, content=content)  # fmt: skip
    cuts = [i for i, e in enumerate(events) if e.kind is not EventKind.STEP][1::3][: chunks - 1]
    out: list[SpanRecord] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=True):
        out += convert.feed(events[lo:hi])
    return out


@pytest.fixture
def run(tmp_path: Path) -> BoardClient:
    board, _ = _run(tmp_path)
    return board


def test_the_tree_of_a_run(run: BoardClient, tmp_path: Path) -> None:
    spans = _spans(tmp_path)
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)  # no span twice
    assert {s.trace_id for s in spans} == {trace_id(OID)}
    (root,) = [s for s in spans if s.parent_id is None]
    assert root.name == "invoke_agent coop" and root.attributes["coop.answer.met"] is True
    attempts = [s for s in spans if s.name.startswith("invoke_agent host-")]
    assert [(s.attributes["coop.task.id"], s.attributes["coop.outcome"]) for s in attempts] == [
        (1, "completed"),
        (2, "expired"),
        (2, "requeued"),
        (2, "completed"),
    ]
    assert all(s.parent_id == root.span_id for s in attempts)
    assert attempts[0].span_id == span_id(
        OID, "attempt", 1, attempts[0].attributes["coop.lease.token"]
    )
    assert [s.attributes["coop.node"] for s in attempts] == ["host-a", "host-b", "host-a", "host-b"]
    assert [s.attributes["coop.lease.attempt"] for s in attempts[1:]] == [1, 2, 3]
    assert attempts[1].error and [e[0] for e in attempts[1].events] == ["lease expired"]
    assert [e[0] for e in attempts[2].events] == ["replayed", "requeued"]
    # each step under the attempt of its worker and token, its time from its latency
    children = {a.span_id: [s for s in spans if s.parent_id == a.span_id] for a in attempts}
    assert [c.name for c in children[attempts[0].span_id]] == [
        f"chat {OFFLINE_MODEL}",
        "execute_tool python",
        f"embeddings {OFFLINE_MODEL}",
    ]
    chat, tool, _ = children[attempts[0].span_id]
    assert chat.end - chat.start == pytest.approx(0.5)
    assert chat.attributes["gen_ai.usage.input_tokens"] == 30
    assert chat.attributes["gen_ai.usage.output_tokens"] == 7
    assert chat.attributes["coop.tool_calls"] == 1
    assert tool.attributes["gen_ai.tool.call.id"] == "c1"
    assert tool.attributes["coop.tool.output_bytes"] == 9 and tool.attributes["coop.tool.ok"]
    assert [len(children[a.span_id]) for a in attempts[1:]] == [1, 1, 1]
    planner = [s for s in spans if s.parent_id == root.span_id and s not in attempts]
    assert [s.attributes["coop.call.kind"] for s in planner] == ["creation", "synthesis"]
    # the tokens of the spans are the board's
    usage = run.snapshot().total
    calls = [s for s in spans if "gen_ai.usage.input_tokens" in s.attributes]
    assert len(calls) == usage.calls
    assert sum(int(s.attributes["gen_ai.usage.input_tokens"]) for s in calls) == usage.prompt_tokens
    assert (
        sum(int(s.attributes["gen_ai.usage.output_tokens"]) for s in calls)
        == usage.completion_tokens
    )


def test_ids_do_not_depend_on_how_the_tape_is_read(run: BoardClient, tmp_path: Path) -> None:
    """The live export reads the tape in pieces, `coop events --otlp` whole: the same spans."""
    whole = _spans(tmp_path)
    pieces = _spans(tmp_path, chunks=5)
    assert [(s.span_id, s.parent_id, s.name, s.attributes) for s in whole] == [
        (s.span_id, s.parent_id, s.name, s.attributes) for s in pieces
    ]


def test_content_only_when_asked_and_never_a_key(run: BoardClient, tmp_path: Path) -> None:
    plain, full = _spans(tmp_path), _spans(tmp_path, content=True)
    assert not any("output.value" in s.attributes for s in plain)
    (tool,) = [s for s in full if s.name == "execute_tool python"]
    assert str(tool.attributes["gen_ai.tool.call.result"]).startswith("printed 1")
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"code": "print(1)"}'
    (root,) = [s for s in full if s.parent_id is None]
    assert root.attributes["output.value"] == "the answer"
    assert root.attributes["input.value"] == "the objective"
    for span in plain + full:
        text = repr((span.name, span.attributes, span.events, span.error))
        assert SECRET not in text and SECRET[8:20] not in text


def test_an_open_run_is_ended_now_and_marked(tmp_path: Path) -> None:
    clock = Clock()
    run = RunSettings(llm="offline", lease_ttl=10).validate()
    board = BoardClient.in_process(Board(OID, "o", run, "n", str(tmp_path), clock=clock))
    board.add(["Sort the seeds"])
    _lease(board, A)
    events = list(board.all_events())
    convert = Converter(OID, "o", events[0].at, {})
    assert convert.feed(events) == []  # nothing has ended yet
    run_span, attempt = convert.unfinished(events[-1].at + 1)
    assert run_span.parent_id is None and attempt.parent_id == run_span.span_id
    assert attempt.attributes["coop.open"] is True and attempt.end == events[-1].at + 1


def test_node_of_an_instance_name() -> None:
    assert node_of("gpu-box-2-4411") == "gpu-box-2"
    assert node_of("10.0.0.7:3") == "10.0.0.7"
    assert node_of("someone") == "someone"


def test_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(otlp.ExportError, match="no OTLP endpoint"):
        otlp.endpoint_of(None)
    assert otlp.endpoint_of("http://h:4318") == "http://h:4318/v1/traces"
    assert otlp.endpoint_of("http://h:4318/v1/traces") == "http://h:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example/otlp/")
    assert otlp.endpoint_of(None) == "https://c.example/otlp/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")
    assert otlp.endpoint_of(None) == "http://t:1/x"
    for bad in ("localhost:4318", "ftp://h:1", "http://h:port", "http://"):
        with pytest.raises(otlp.ExportError, match="bad OTLP endpoint"):
            otlp.endpoint_of(bad)


def test_events_otlp_bad_input_is_one_line(run: BoardClient, tmp_path: Path) -> None:
    """A bad endpoint or timeout, an unreachable collector, an unknown objective: one line,
    non-zero."""
    env = coop_env(None, COOP_STATE_DIR=str(tmp_path))
    bad = run_coop("events", OID, "--otlp", "--otlp-endpoint", "localhost:4318", env=env)
    assert_one_line_error(bad, "bad OTLP endpoint")
    start = run_coop("start", "ok", "--llm", "offline", env={**env, **BAD_ENDPOINT})
    assert_one_line_error(start, "bad OTLP endpoint 'http://h:port'")
    url = f"http://127.0.0.1:{closed_port()}"
    slow = {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}
    bad = run_coop("events", OID, "--otlp", "--otlp-endpoint", url, env={**env, **slow})
    assert_one_line_error(bad, "bad OTEL_EXPORTER_OTLP_TIMEOUT 'soon'")
    slow = {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": url}
    start = run_coop("start", "ok", "--llm", "offline", env={**env, **slow})
    assert_one_line_error(start, "bad OTEL_EXPORTER_OTLP_TRACES_TIMEOUT '0'")
    assert not journal_path(tmp_path, objective_id("ok")).exists()  # refused before anything
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1"  # the closed port is tried for a second, not ten
    down = run_coop("events", OID, "--otlp", "--otlp-endpoint", url, env=env)
    assert down.returncode != 0 and "Traceback" not in down.stderr + down.stdout
    assert down.stderr.strip().splitlines()[-1] == (
        f"coop: error: the OTLP collector at {url}/v1/traces did not take the spans"
    )
    unknown = run_coop("events", "no-such-objective", "--otlp", "--otlp-endpoint", url, env=env)
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_an_unreachable_collector_does_not_break_a_run(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """One warning line; the run finishes as without traces."""
    server = make_standin(simulator=Simulator(fanout=1, limit=2))
    env = coop_env(ray_cluster, server, OTEL_EXPORTER_OTLP_TIMEOUT="1")  # not 5 s a try
    url = f"http://127.0.0.1:{closed_port()}"
    objective = unique("Mend the fence")
    start = spawn_coop("start", objective, "--otlp-endpoint", url, env=env, log=tmp_path / "s.log")
    assert start.wait(120) == 0, (tmp_path / "s.log").read_text()
    log = (tmp_path / "s.log").read_text()
    assert log.count("did not take the spans") == 1 and "Traceback" not in log
    assert "no more spans are sent during this run" in log
    assert registry.find(objective).snapshot().reason is Reason.DONE


def test_without_an_endpoint_nothing_of_the_sdk_is_loaded() -> None:
    """Off and costless: `coop start` imports neither the exporter nor the SDK."""
    probe = (
        "import sys, coop.cli, coop.planner, coop.crew, coop.tracing\n"
        "print(sorted(m for m in sys.modules if m == 'coop.otlp' "
        "or m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint that keeps each request's headers and decoded body."""

    got: ClassVar[list[tuple[dict[str, str], ExportTraceServiceRequest]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        _Receiver.got.append((headers, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_standard_variables_name_headers_and_service(
    run: BoardClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_HEADERS reach the receiver (Langfuse's key pair rides there), and
    OTEL_SERVICE_NAME names the service; the spans arrive with their derived ids."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20cGs6c2s=,x-team=seeds")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "garden")
    try:
        sent = tracing.export(run, None, content=False)
    finally:
        server.shutdown()
        server.server_close()
    headers, request = _Receiver.got[-1]
    assert headers["authorization"] == "Basic cGs6c2s=" and headers["x-team"] == "seeds"
    (resource,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "garden"
    spans = [s for scope in resource.scope_spans for s in scope.spans]
    assert len(spans) == sent == len(_spans(tmp_path))
    assert {int.from_bytes(s.span_id, "big") for s in spans} == {
        s.span_id for s in _spans(tmp_path)
    }


@pytest.mark.parametrize(
    "variables, seconds",
    [
        ({}, 5.0),  # coop's own wait
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5"}, 2.5),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7"}, 7.0),
    ],
)
def test_the_standard_timeout_variables_replace_coops_wait(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], seconds: float
) -> None:
    for name in otlp.TIMEOUT_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert otlp.timeout_of(5.0) == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", value)
    with pytest.raises(otlp.ExportError, match=f"bad OTEL_EXPORTER_OTLP_TIMEOUT '{value}'"):
        otlp.timeout_of(5.0)
