"""A deterministic stand-in for a language model, for runs and tests with no network and no key.

It answers each of coop's agent prompts in its format. By default tasks form a finite tree —
task `Step k` begets `Step k*fanout+1 … k*fanout+fanout`, up to `limit` — so a simulated
objective always terminates, with a predictable number of tasks and no duplicates of its own
making. Two other ways of proposing tasks stand in for the models a benchmark wants: a fixed
number of new tasks per creation call (`per_call`), or as many as the prompt asks for
(`as_asked`). The same answers back the offline provider in-process and the HTTP stand-in
(coop/testing/standin.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coop.config import TOOL_CHOICES
from coop.constants import OFFLINE_EMBEDDING_DIM, PROMPT_MARKERS
from coop.text import one_line

TEMPLATES = (
    "Research the background of",
    "Outline an approach to",
    "Collect concrete examples of",
    "Draft a section on",
    "Review the draft about",
    "Summarize the findings on",
)
ASPECTS = (
    "costs",
    "risks",
    "tools",
    "history",
    "schedules",
    "materials",
    "suppliers",
    "safety",
    "quality checks",
    "training",
    "budgets",
    "regulations",
    "maintenance",
    "logistics",
    "stakeholders",
    "metrics",
    "testing",
    "documentation",
    "accessibility",
    "pricing",
)
AUDIENCES = ("beginners", "experts", "managers", "volunteers", "students")
MORE_TEMPLATES = (
    "Estimate the effort for",
    "Interview people about",
    "Compare options for",
    "Test assumptions about",
    "Map dependencies of",
    "Write guidance on",
)
MORE_ASPECTS = (
    "irrigation",
    "lighting",
    "ventilation",
    "storage",
    "transport",
    "packaging",
    "insurance",
    "licensing",
    "hiring",
    "scheduling software",
    "waste",
    "energy use",
    "noise",
    "security",
    "parking",
    "signage",
    "catering",
    "translation",
    "outreach",
    "feedback",
)
MORE_AUDIENCES = ("newcomers", "specialists", "directors", "neighbours", "apprentices")
VOCABULARIES = list(
    itertools.product(
        (TEMPLATES, MORE_TEMPLATES), (ASPECTS, MORE_ASPECTS), (AUDIENCES, MORE_AUDIENCES)
    )
)
"""Blocks of 600 distinct wordings each (the first is the original one): 4,800 in all."""
STUBBORN = ("Gather requirements", "Write the plan", "Review the plan")
_STEP = re.compile(r"\bStep (\d+)\b")
_WORD = re.compile(r"\w+", re.UNICODE)
_ASKED = re.compile(r"\bup to (\d+) new tasks\b")
_ABLE = re.compile(r"The team's workers can use: ([^.]+)\.")


@dataclass
class Simulator:
    """`fanout` new tasks per completed task, `limit` tasks in all. With `per_call`, each
    creation call proposes that many fresh tasks whatever it was shown (and with `as_asked`,
    as many as the prompt asks for, `per_call` when it does not say), and judges the objective
    met only once all `limit` are proposed and done: a swarm that outruns its planner has an
    empty list, not a finished objective. A `stubborn` simulator instead proposes the same three
    tasks forever and never agrees the objective is met: the model that loop and stall
    detection exist for."""

    fanout: int = 3
    limit: int = 12
    stubborn: bool = False
    per_call: int = 0
    as_asked: bool = False
    _next: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _issued: int = field(default=0, repr=False)  # the last task a supply proposed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def instance(self, schema: dict[str, Any], prompt: str) -> Any:
        """A value matching `schema`, as a server holding a model to it (structured outputs)
        answers: the simulated answer's first line for its strings, the task ids the prompt
        shows cited in the first, 1 for its numbers."""
        ids = re.findall(r"^\[#(\d+)\]", prompt, re.MULTILINE)
        said = one_line(self._synthesize(prompt), 80) + "".join(f" [#{i}]" for i in ids[:3])
        return _instance(schema, schema, said)

    def reply(self, prompt: str) -> str:
        kind = next((k for k, m in PROMPT_MARKERS.items() if prompt.startswith(m)), "execution")
        if kind in ("creation", "replan") and self.stubborn:
            return "\n".join(f"{i}. {t}" for i, t in enumerate(STUBBORN, 1))
        if kind == "creation":
            return self._create(prompt)
        if kind == "replan":
            return "Nothing is left to plan."
        if kind == "prioritization":
            return self._prioritize(prompt)
        if kind == "synthesis":
            return self._synthesize(prompt)
        if kind == "completion":
            left = re.search(r"still pending: (\d+)\. .* not yet planned from: (\d+)", prompt)
            met = not self.stubborn and left is not None and left.groups() == ("0", "0")
            if self.per_call or self.as_asked:  # a supply runs dry only when it is spent
                with self._lock:
                    met = met and self._issued >= self.limit
            return json.dumps({"met": met, "reason": "simulated judgement"})
        return self._execute(prompt)

    def chat(
        self, messages: Sequence[dict[str, Any]], specs: Sequence[dict[str, Any]]
    ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        """A turn of a conversation, with the tools offered (OpenAI tools API specs): (the
        answer, []) or ("", [the tool call to make]).

        With tools, a task uses them the same way every time, one call a turn: it reads the
        notes its parent task left in the workspace, a `Collect concrete examples` task runs
        Python, it calls each of the user's own tools (not a built-in, not an MCP server's)
        whose arguments it can fill from their schema, and every task leaves its own notes;
        then it answers with what they gave."""
        asked = [m for m in messages if m.get("role") != "system"]  # not the instructions
        prompt = str(asked[0].get("content", "")) if asked else ""
        if not specs or not prompt.startswith(PROMPT_MARKERS["execution"]):
            return self.reply(prompt), []
        answer = self._execute(prompt)
        task = prompt.rsplit("Your task:", 1)[-1].split("\n", 1)[0].strip()
        step = _step(task)
        tools = [t["function"]["name"] for t in specs if "function" in t]
        plan = self._tool_plan(step, answer, tools)
        own = [t["function"] for t in specs if "function" in t and _own(t["function"]["name"])]
        for spec in own:
            filled = _fill(spec.get("parameters") or {}, task, step)
            if filled is not None:
                plan.insert(len(plan) - ("workspace_write" in tools), (spec["name"], filled))
        made = sum(len(m.get("tool_calls") or ()) for m in messages if m.get("role") == "assistant")
        if made < len(plan):
            return "", [plan[made]]
        said = [str(m.get("content", "")) for m in messages if m.get("role") == "tool"]
        quoted = [
            " / ".join(t.strip() for t in text.splitlines() if t.strip())[:120] for text in said
        ]
        return answer + "".join(f"\n- tool: {line}" for line in quoted), []

    def _tool_plan(
        self, step: int, answer: str, tools: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        calls: list[tuple[str, dict[str, Any]]] = []
        if "workspace_read" in tools and step:
            calls.append(("workspace_read", {"path": f"notes/step-{(step - 1) // self.fanout}.md"}))
        if "python" in tools and step and TEMPLATES[step % len(TEMPLATES)] == TEMPLATES[2]:
            calls.append(("python", {"code": f"print(sum(range({step * 10})))"}))
        if "workspace_write" in tools:
            calls.append(("workspace_write", {"path": f"notes/step-{step}.md", "content": answer}))
        return calls

    def _create(self, prompt: str) -> str:
        if self.per_call or self.as_asked:
            return self._supply(prompt)
        done = _section(prompt, "Just completed:")
        steps = [
            int(m.group(1)) if (m := _STEP.search(line)) else 0
            for line in done.splitlines()
            if line.lstrip().startswith("- Task:")
        ]
        children = [
            c
            for k in steps
            for c in range(k * self.fanout + 1, k * self.fanout + self.fanout + 1)
            if c <= self.limit
        ]
        lines = [f"{i}. {task_text(c)}{_needs(c, prompt)}" for i, c in enumerate(children, 1)]
        return "New tasks:\n" + "\n".join(lines) if lines else "No new tasks are needed."

    def _supply(self, prompt: str) -> str:
        asked = _ASKED.search(prompt) if self.as_asked else None
        count = int(asked.group(1)) if asked else self.per_call or self.fanout
        with self._lock:
            steps = [n for n in itertools.islice(self._next, count) if n <= self.limit]
            self._issued = max([self._issued, *steps])
        lines = [f"{i}. {task_text(n)}{_needs(n, prompt)}" for i, n in enumerate(steps, 1)]
        return "New tasks:\n" + "\n".join(lines) if lines else "No new tasks are needed."

    def _synthesize(self, prompt: str) -> str:
        """An answer (or notes) that cites every task and file it was shown, in its order."""
        objective = _section(prompt, "Objective: ").strip()
        results = re.findall(r"^\[#(\d+)\] (.+)$", prompt, re.MULTILINE)  # cited results
        notes = re.findall(r"^- (.+) \[#(\d+)\]$", prompt, re.MULTILINE)  # earlier notes
        files = re.findall(r"^\[file (.+)\]$", prompt, re.MULTILINE)
        files += re.findall(r"^- a workspace file \[file (.+)\]$", prompt, re.MULTILINE)
        lines = [f"- {task} [#{tid}]" for tid, task in results]
        lines += [f"- {task} [#{tid}]" for task, tid in notes]
        lines += [f"- a workspace file [file {path}]" for path in files]
        if "(notes, part" in prompt.split("\n", 1)[0]:
            return "\n".join(lines)
        met = "yes" if "How the run ended: done" in prompt else "no"  # as its check judged
        return (
            f"# {objective}\n\n[simulated answer] What the team found, task by task:\n\n"
            + "\n".join(lines)
            + f"\n\nObjective met: {met}"
        )

    def _prioritize(self, prompt: str) -> str:
        items = re.findall(r"^#(\d+): (.+)$", prompt, re.MULTILINE)
        ranked = sorted(items, key=lambda it: (_step(it[1]), int(it[0])))
        return "\n".join(f"{i}. #{tid}: {text}" for i, (tid, text) in enumerate(ranked, 1))

    def _execute(self, prompt: str) -> str:
        task = prompt.rsplit("Your task:", 1)[-1].split("\n", 1)[0].strip()
        digest = hashlib.sha256(task.encode()).hexdigest()[:8]
        return (
            f"[simulated result {digest}] Completed: {task}. A real model would write the "
            f"work here; this text stands in for it."
        )


def task_text(step: int) -> str:
    """Distinct wording per step (template, aspect, audience), so that near-duplicate
    detection, which compares meaning, does not take one simulated task for another."""
    block, i = divmod(step, len(TEMPLATES) * len(ASPECTS) * len(AUDIENCES))
    templates, aspects, audiences = VOCABULARIES[block % len(VOCABULARIES)]
    template = templates[i % len(templates)]
    aspect = aspects[i // len(templates) % len(aspects)]
    audience = audiences[i // (len(templates) * len(aspects)) % len(audiences)]
    return f"Step {step}: {template} {aspect} for {audience}"


def _needs(step: int, prompt: str) -> str:
    """`Draft a section` tasks need the first named capability the workers have (not a
    built-in tool's), when the prompt lists one: the simulated planner's routing."""
    listed = _ABLE.search(prompt)
    names = [n.strip() for n in listed.group(1).split(",")] if listed else []
    named = [n for n in names if n not in TOOL_CHOICES]
    return f" [needs: {named[0]}]" if named and step % len(TEMPLATES) == 3 else ""


def _own(name: str) -> bool:
    """A tool of the user's own: not a built-in, not an MCP server's (`server__tool`)."""
    builtin = name in TOOL_CHOICES or name.startswith("workspace_")
    return not builtin and "__" not in name


def _fill(schema: dict[str, Any], task: str, step: int) -> dict[str, Any] | None:
    """Arguments for a tool from its JSON schema, as a model would pick them from the task:
    text for a string, the step for a number; None when a required one is of no simple type."""
    simple: dict[str, Any] = {
        "string": task,
        "integer": step,
        "number": float(step),
        "boolean": True,
        "array": [],
        "object": {},
    }
    args: dict[str, Any] = {}
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        kind = (properties.get(name) or {}).get("type")
        if kind not in simple:
            return None
        args[name] = simple[kind]
    return args


def _step(text: str) -> int:
    m = _STEP.search(text)
    return int(m.group(1)) if m else 0


def _section(prompt: str, header: str) -> str:
    """Text after `header` up to the next blank line."""
    _, _, rest = prompt.partition(header)
    return rest.split("\n\n", 1)[0]


def lexical_embedding(text: str, dim: int = OFFLINE_EMBEDDING_DIM) -> list[float]:
    """A deterministic hashed bag of words: similar wording gives similar vectors."""
    vec = np.zeros(dim, dtype=np.float32)
    for word in _WORD.findall(text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = float(np.linalg.norm(vec))
    result: list[float] = (vec / norm if norm else vec).tolist()
    return result


def _instance(schema: Any, root: dict[str, Any], said: str) -> Any:
    """The simplest value `schema` admits (references into `root`'s `$defs` followed), its
    strings `said`."""
    if not isinstance(schema, dict):
        return said
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _instance(target, root, said)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], root, said)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _instance(v, root, said) for k, v in props.items()}
    if kind == "array":
        return [_instance(schema.get("items", {}), root, said)] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return said
