"""Model providers behind one Protocol: any OpenAI-compatible server (coop/llm_openai.py), or
the offline simulator.

Every way a model call can go wrong ends here as one of three errors, each one line that
names the server and the fault, so no role ever sees the client's own exceptions:
`LLMFatalError` (no retry can fix it: stop the objective), `LLMContextError` (retry once with
less context) and `LLMError` (a later try may succeed: a worker's attempt fails and its task
is requeued, the planner tries again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from coop import constants as C
from coop import tokens
from coop.config import RunSettings
from coop.errors import CoopError
from coop.simulate import Simulator, lexical_embedding


class LLMError(CoopError):
    """A model call failed in a way a later try may fix: the server unreachable or too slow,
    429/5xx after the client's own retries, a reply that is not what the API promises. The
    message starts with the kind of fault (`APIConnectionError: model server …`). A reply
    that breaks the API's promises also has its `fault`, the line without the reply itself
    ("model server … answered embeddings with one vector per token …"), so that the same
    fault twice is told from two faults."""

    def __init__(self, message: str, fault: str = "") -> None:
        super().__init__(message)
        self.fault = fault

    def __reduce__(self) -> tuple[type[LLMError], tuple[str, str]]:  # kept through Ray
        return type(self), (str(self), self.fault)

    @property
    def malformed(self) -> bool:
        return bool(self.fault)


class LLMFatalError(CoopError):
    """A model error no retry can fix (bad key, no permission, unknown model, bad request):
    the objective stops at once instead of burning attempts on every task."""


class NoStructuredOutputs(Exception):
    """The server refused a `response_format` json_schema request: ask in words instead."""


class LLMContextError(Exception):
    """The prompt was longer than the model's context: retry once with less context."""


@dataclass(frozen=True)
class ToolCall:
    """A model's request to run a tool: its id (to answer it by), the tool, and its raw JSON
    arguments (the tool checks them)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[ToolCall, ...] = ()


Message = dict[str, Any]
"""A chat message as the OpenAI API takes it (role, content, tool_calls, tool_call_id)."""


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: int


class LLM(Protocol):
    label: str

    @property
    def tokenizer(self) -> tokens.Tokenizer: ...

    def check(self) -> int:
        """Before a run: the server answers, accepts the key, knows the models and embeds
        as coop needs; else LLMFatalError, in one line. Returns the tokens it spent, for the
        caller to charge to the objective once there is a board."""
        ...

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        """One user prompt in, one answer out."""
        ...

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        tools: list[dict[str, Any]],
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        """A conversation, with tools offered (OpenAI tools API): an answer, or tool calls.
        `schema`: the answer is JSON held to it (structured outputs); NoStructuredOutputs
        when the server does not take them."""
        ...

    def embed(self, texts: list[str]) -> Embeddings: ...


class OfflineLLM:
    """The deterministic simulator, in-process: no network, no key, no cost."""

    def __init__(self, simulator: Simulator | None = None) -> None:
        self.simulator = simulator or Simulator()
        self.tokenizer = tokens.estimating(C.OFFLINE_MODEL)
        self.label = C.SIMULATED_LABEL

    def check(self) -> int:
        """The simulator is always there."""
        return 0

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        text = self.tokenizer.trim(self.simulator.reply(prompt), max_tokens)
        return Completion(text, self.tokenizer.count(prompt), self.tokenizer.count(text))

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        tools: list[dict[str, Any]],
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        """A plain prompt is `complete`'s (or, with a schema, the simulator's value matching
        it); a conversation with tools is the simulator's. The run's instructions (a system
        message) change nothing the simulator says, but count."""
        system = sum(self.tokenizer.count(said(m)) for m in messages if m.get("role") == "system")
        messages = [m for m in messages if m.get("role") != "system"]
        if schema is not None:
            asked_for = str(messages[-1].get("content", ""))
            value = json.dumps(self.simulator.instance(schema, asked_for))
            sent = self.tokenizer.count(asked_for) + system
            return Completion(value, sent, self.tokenizer.count(value))
        if not tools and len(messages) == 1:
            done = self.complete(str(messages[0].get("content", "")), max_tokens)
            return replace(done, prompt_tokens=done.prompt_tokens + system)
        text, calls = self.simulator.chat(messages, tools)
        text = self.tokenizer.trim(text, max_tokens)
        asked = [ToolCall(f"call-{i}", n, json.dumps(args)) for i, (n, args) in enumerate(calls)]
        prompt = self.tokenizer.count(json.dumps(messages)) + system
        return Completion(text, prompt, self.tokenizer.count(text), tuple(asked))

    def embed(self, texts: list[str]) -> Embeddings:
        return Embeddings(
            [lexical_embedding(t) for t in texts], sum(self.tokenizer.count(t) for t in texts)
        )


def said(message: Message) -> str:
    """What a message says to the model: its text and the tool calls it carries."""
    return str(message.get("content") or "") + json.dumps(message.get("tool_calls") or "")


def make_llm(settings: RunSettings, instance: str, role: str) -> LLM:
    """The model client `role` (config.ROLES) calls its model with."""
    if settings.simulated:
        return OfflineLLM()
    from coop.llm_openai import OpenAILLM  # the openai package: loaded only where it is used

    return OpenAILLM(settings, instance, role)
