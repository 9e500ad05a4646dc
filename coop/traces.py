"""An objective's tape as OpenTelemetry GenAI spans: the one converter both exports use.

The board's journal already holds everything a trace shows — each lease (task, token,
worker), each model call (tokens, latency, step) and tool call (outcome, size, step), each
expiry, replay, planner call and answer — so a trace is computed from events, never recorded
beside them. Span ids are derived from what identifies a span (the objective, a task and its
lease token, a step), not drawn at random: the live export and a later `coop events --otlp`
of the same journal produce the same ids, and a receiver keeps one copy of each span.

This module knows nothing of OpenTelemetry's packages (`coop.otlp` sends its spans): it is
imported, and tested, without them. Every attribute value passes through the secret scrub.
A span is given out once, when the event that ends it is read; a step's start is its end
less its latency (the tape records when calls end).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coop.journal import Event
from coop.secrets import scrub
from coop.types import EventKind, Kind

Value = str | int | float | bool
"""An attribute value as OTLP carries it (scalars only: lists are sent as JSON text)."""

AGENT = "coop"
"""`gen_ai.agent.name` of the run's root span: the system as a whole."""

_HOST = re.compile(r"^(?P<host>.+)[:-]\d+$")
"""A worker's name, `host:n` (`crew.launch_crew`), or a planner's, `host-pid`
(`cluster.instance_name`): the host is the node it runs on."""


@dataclass
class SpanRecord:
    """One finished span, as the receiver will see it (times in epoch seconds)."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start: float
    end: float
    attributes: dict[str, Value]
    events: list[tuple[str, float, dict[str, Value]]] = field(default_factory=list)
    error: str = ""  # non-empty: the span's status is ERROR with this description


def trace_id(objective_id: str) -> int:
    """The objective's trace: 128 bits of a digest of its id (never 0, which OTLP forbids)."""
    return _digest(objective_id, bits=128)


def span_id(objective_id: str, *parts: object) -> int:
    """A span's id: 64 bits of a digest of the objective and what identifies the span."""
    return _digest("|".join(map(str, (objective_id, *parts))), bits=64)


def _digest(text: str, *, bits: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1


def node_of(instance: str) -> str:
    """The host an instance runs on, from its name (the name itself if it is not coop's)."""
    match = _HOST.match(instance)
    return match["host"] if match else instance


def _clean(attrs: dict[str, Any]) -> dict[str, Value]:
    """Attributes with None dropped, strings scrubbed and lists as JSON text."""
    out: dict[str, Value] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, list | tuple | dict):
            value = json.dumps(value)
        out[key] = scrub(value) if isinstance(value, str) else value
    return out


class Converter:
    """Feeds on one objective's events in order, from the first; gives out each span once,
    when the event that ends it is fed. `content`: also the model's replies, tool outputs and
    the answer (the journal holds no prompts)."""

    def __init__(
        self,
        objective_id: str,
        objective: str,
        created: float,
        settings: dict[str, Any],
        *,
        content: bool = False,
    ) -> None:
        self.objective_id = objective_id
        self.objective = objective
        self.trace = trace_id(objective_id)
        self.content = content
        self._models = {
            "chat": str(settings.get("model", "")),
            "embeddings": str(settings.get("embedding_model", "")),
        }
        self._provider = str(settings.get("llm", ""))
        self._runs = 0
        self._answered = False  # the current run has its answer: its span was given out
        self._run = self._open_run(created)
        self._texts: dict[int, str] = {}  # task id -> its text
        self._attempts: dict[tuple[int, int], SpanRecord] = {}  # open: (task, token) -> span
        self._held: dict[tuple[int, str], int] = {}  # (task, worker) -> its newest token
        self._tries: dict[int, int] = {}  # task -> leases granted
        self._args: dict[tuple[int, str], str] = {}  # (task, a model's tool call id) -> arguments

    # -- spans --------------------------------------------------------------------------

    def _span(
        self, sid: int, parent: int | None, name: str, start: float, attrs: dict[str, Any]
    ) -> SpanRecord:
        return SpanRecord(self.trace, sid, parent, name, start, start, _clean(attrs))

    def _open_run(self, start: float) -> SpanRecord:
        self._runs += 1
        self._answered = False
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENT,
            "gen_ai.conversation.id": self.objective_id,
            "coop.objective.id": self.objective_id,
            "coop.run": self._runs,
            "openinference.span.kind": "AGENT",
        }
        if self.content:
            attrs["input.value"] = self.objective
        name = f"invoke_agent {AGENT}"
        return self._span(span_id(self.objective_id, "run", self._runs), None, name, start, attrs)

    def _token(self, task: Any, worker: str) -> int | None:
        """The newest lease `worker` was granted on `task` (None for calls outside a task)."""
        return self._held.get((task, worker)) if isinstance(task, int) else None

    def _attempt_of(self, task: Any, worker: str) -> SpanRecord | None:
        token = self._token(task, worker)
        return None if token is None else self._attempts.get((task, token))

    def _parent(self, task: Any, worker: str) -> tuple[int, tuple[object, ...] | None]:
        """The span a call belongs under — its task's attempt by this worker, else the run —
        and the key its own id is derived from within that attempt (None: use the seq)."""
        token = self._token(task, worker)
        if token is None:
            return self._run.span_id, None
        return span_id(self.objective_id, "attempt", task, token), ("step", task, token)

    # -- the feed -------------------------------------------------------------------------

    def feed(self, events: Sequence[Event]) -> list[SpanRecord]:
        """The spans these events end, in the order they end. A step's record follows its
        call's usage or tool event in the same board call: it is read along with it."""
        out: list[SpanRecord] = []
        for i, event in enumerate(events):
            after = events[i + 1] if i + 1 < len(events) else None
            step = after.data if after is not None and after.kind is EventKind.STEP else None
            out.extend(self._one(event, step))
        return out

    def _one(self, e: Event, step: dict[str, Any] | None) -> list[SpanRecord]:
        d, kind = e.data, e.kind
        if kind is EventKind.ADDED:
            for row in d["tasks"]:
                self._texts[row[0]] = row[1]
        elif kind is EventKind.LEASED:
            self._lease(e)
        elif kind is EventKind.USAGE:
            return [self._call(e, step)]
        elif kind is EventKind.TOOL:
            return [self._tool(e, step)]
        elif kind is EventKind.STEP and d.get("kind") == "model":
            if self.content:
                for call_id, _, arguments in d.get("calls", ()):
                    self._args[(d["task"], call_id)] = arguments
        elif kind in (EventKind.COMPLETED, EventKind.FAILED, EventKind.RELEASED):
            return self._end_attempt(e)
        elif kind is EventKind.EXPIRED:
            return [s for tid in d["ids"] for s in self._expire(tid, e.at)]
        elif kind is EventKind.REPLAYED:
            self._note(d["task"], d["worker"], "replayed", e.at, d)
        elif kind is EventKind.WROTE:
            self._note(d["task"], d["worker"], "wrote", e.at, {"path": d["path"]})
        elif kind in (EventKind.STOPPING, EventKind.UNREADABLE):
            attrs = {k: v for k, v in d.items() if k != "text" or self.content}
            self._run.events.append((kind.value, e.at, _clean(attrs)))
        elif kind is EventKind.ANSWER:
            return [self._answer(e)]
        elif kind is EventKind.REOPENED and d.get("reopen"):
            self._run = self._open_run(e.at)
        return []

    def _lease(self, e: Event) -> None:
        d = e.data
        tid, token, worker = d["id"], d["token"], d["worker"]
        self._tries[tid] = self._tries.get(tid, 0) + 1
        self._held[(tid, worker)] = token
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": worker,
            "gen_ai.agent.id": worker,
            "gen_ai.agent.description": self._texts.get(tid),
            "coop.task.id": tid,
            "coop.lease.token": token,
            "coop.lease.attempt": self._tries[tid],
            "coop.node": node_of(worker),
            "host.name": node_of(worker),
            "openinference.span.kind": "AGENT",
        }
        sid = span_id(self.objective_id, "attempt", tid, token)
        span = self._span(sid, self._run.span_id, f"invoke_agent {worker}", e.at, attrs)
        self._attempts[(tid, token)] = span

    def _note(self, task: Any, worker: str, name: str, at: float, attrs: dict[str, Any]) -> None:
        """A span event on the task's open attempt by `worker` (dropped if there is none)."""
        attempt = self._attempt_of(task, worker)
        if attempt is not None:
            keep = {k: v for k, v in attrs.items() if k not in ("worker", "task")}
            attempt.events.append((name, at, _clean(keep)))

    def _call(self, e: Event, step: dict[str, Any] | None) -> SpanRecord:
        d = e.data
        embedding = d["kind"] == Kind.EMBEDDING.value
        operation = "embeddings" if embedding else "chat"
        model = self._models[operation]
        parent, key = self._parent(d.get("task"), d["worker"])
        step_no = d.get("step")
        ident = (*key, step_no) if key is not None and step_no is not None else ("event", e.seq)
        latency = float(d.get("latency") or 0.0)
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": self._provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": d["prompt"],
            "gen_ai.usage.output_tokens": d["completion"],
            "coop.call.kind": d["kind"],
            "coop.worker": d["worker"],
            "coop.task.id": d.get("task"),
            "coop.step": step_no,
            "coop.usage.estimated": bool(d.get("estimated")),
            "openinference.span.kind": "EMBEDDING" if embedding else "LLM",
            "llm.model_name": model,
            "llm.token_count.prompt": d["prompt"],
            "llm.token_count.completion": d["completion"],
            "llm.token_count.total": d["prompt"] + d["completion"],
        }
        if step is not None:
            attrs["coop.tool_calls"] = len(step.get("calls", ()))
            if self.content:
                attrs["output.value"] = step.get("text", "")
                attrs["gen_ai.output.messages"] = _messages(step)
        span = self._span(
            span_id(self.objective_id, *ident),
            parent,
            f"{operation} {model}",
            e.at - latency,
            attrs,
        )
        span.end = e.at
        return span

    def _tool(self, e: Event, step: dict[str, Any] | None) -> SpanRecord:
        d = e.data
        parent, key = self._parent(d["task"], d["worker"])
        ident = (*key, d["step"]) if key is not None else ("event", e.seq)
        call_id = step.get("call") if step is not None else None
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": d["tool"],
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
            "coop.tool.ok": d["ok"],
            "coop.tool.output_bytes": d.get("bytes", 0),
            "coop.worker": d["worker"],
            "coop.task.id": d["task"],
            "coop.step": d["step"],
            "openinference.span.kind": "TOOL",
            "tool.name": d["tool"],
        }
        if self.content and call_id:
            attrs["gen_ai.tool.call.arguments"] = self._args.pop((d["task"], call_id), None)
        if self.content and step is not None:
            attrs["gen_ai.tool.call.result"] = step.get("text", "")
        start = e.at - float(d["latency"])
        span = self._span(
            span_id(self.objective_id, *ident), parent, f"execute_tool {d['tool']}", start, attrs
        )
        span.end = e.at
        span.error = "" if d["ok"] else "the tool call failed"
        return span

    def _end_attempt(self, e: Event) -> list[SpanRecord]:
        d = e.data
        tid = d["id"]
        token = d.get("token") or self._held.get((tid, d.get("worker", "")))
        if token is None:  # released: the task's only open lease
            token = next((k[1] for k in self._attempts if k[0] == tid), None)
        span = self._attempts.pop((tid, token), None) if token is not None else None
        if span is None:
            return []
        span.end = e.at
        outcome = e.kind.value
        if e.kind is EventKind.FAILED:
            outcome = "dead-lettered" if d["dead"] else "requeued"
            span.error = scrub(d["error"])
            span.events.append((outcome, e.at, _clean({"error": d["error"]})))
        span.attributes["coop.outcome"] = outcome
        if d.get("flaw"):
            span.attributes["coop.flaw"] = scrub(d["flaw"])
        if self.content and e.kind is EventKind.COMPLETED:
            span.attributes["output.value"] = scrub(d["text"])
        return [span]

    def _expire(self, tid: int, at: float) -> list[SpanRecord]:
        ended = [k for k in self._attempts if k[0] == tid]
        out = []
        for key in ended:
            span = self._attempts.pop(key)
            span.end = at
            span.events.append(("lease expired", at, {}))
            span.attributes["coop.outcome"] = "expired"
            span.error = "the lease expired: the task was requeued"
            out.append(span)
        return out

    def _answer(self, e: Event) -> SpanRecord:
        d = e.data
        run = self._run
        run.end = e.at
        self._answered = True
        run.attributes.update(
            _clean(
                {
                    "coop.answer.revision": d.get("revision"),
                    "coop.answer.met": d.get("met"),
                    "coop.answer.cited": len(d.get("cited", ())),
                    "coop.answer.missing": d.get("missing") or None,
                    "output.value": d.get("text") if self.content else None,
                }
            )
        )
        return run

    def unfinished(self, at: float) -> list[SpanRecord]:
        """The spans still open (a running objective's run and its leases), ended at `at` and
        marked `coop.open`: what an export of a running objective shows of them."""
        spans = list(self._attempts.values())
        if not self._answered:
            spans.insert(0, self._run)
        out = []
        for span in spans:
            copy = SpanRecord(**{**span.__dict__, "attributes": dict(span.attributes)})
            copy.end = max(at, span.start)
            copy.attributes["coop.open"] = True
            out.append(copy)
        return out


def _messages(step: dict[str, Any]) -> list[dict[str, Any]]:
    """A model step's reply as GenAI output messages: its text and the tool calls it asked."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": step.get("text", "")}]
    parts += [
        {"type": "tool_call", "id": cid, "name": name, "arguments": args}
        for cid, name, args in step.get("calls", ())
    ]
    return [{"role": "assistant", "parts": parts}]
