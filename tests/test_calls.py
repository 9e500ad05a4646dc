"""The model-call discipline every role uses: rate limit, usage, a prompt too long retried
once with less context. The real openai client over HTTP to the stand-in; the board in-process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coop import agents
from coop.calls import Context, ask, metered
from coop.config import RunSettings
from coop.llm import LLMContextError, OfflineLLM
from coop.llm_openai import OpenAILLM
from coop.memory import Hit
from coop.testing.standin import Faults, MakeStandIn
from coop.types import Kind
from tests.support.board import in_process
from tests.support.memory import InProcessMemory


def test_a_prompt_too_long_for_the_model_is_retried_once_with_less_context(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(faults=Faults(context_limit=700))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    settings = RunSettings(max_prompt_tokens=1200, max_completion_tokens=100)
    llm = OpenAILLM(settings, "w")
    board = in_process("Context", max_prompt_tokens=1200, max_completion_tokens=100)
    context = [Hit(i, f"earlier task {i}", "a long result " * 200, 1.0) for i in range(8)]

    def build(budget: int) -> str:
        return agents.execution_prompt("o", "Write the summary", context, llm.tokenizer, budget)

    ctx = Context(board, llm, InProcessMemory(llm), settings, "o", "w")
    answer, _ = ask(ctx, Kind.EXECUTION, build)
    assert answer
    assert [c.status for c in server.calls] == [400, 200]
    server.faults.context_limit = 100  # now even half the context cannot fit
    with pytest.raises(LLMContextError):
        ask(ctx, Kind.EXECUTION, build)


def test_every_call_is_settled_on_the_board_with_what_the_server_counted(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = make_standin()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    settings = RunSettings()
    llm = OpenAILLM(settings, "w")
    board = in_process("Usage", tmp_path)
    ctx = Context(board, llm, InProcessMemory(llm), settings, "o", "w")
    ask(ctx, Kind.CREATION, lambda budget: "# coop task creation agent\nx")
    metered(board, "w")(42)
    snap = board.snapshot()
    assert snap.usage["creation"].calls == 1 and snap.usage["embedding"].prompt_tokens == 42
    assert snap.usage["creation"].tokens == sum(server.usage().values())
    (usage,) = [
        e for e in board.all_events() if e.kind.value == "usage" and e.data["kind"] == "creation"
    ]
    assert usage.data["worker"] == "w" and usage.data["latency"] >= 0


def test_the_cluster_wide_rate_limit_holds_calls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 60 requests per minute, a burst of 60 goes at once and the 61st waits until a second
    after the first: the bucket drains one request a second. Asserted by the waits the board
    asked for, not by how fast the burst ran (a loaded machine only shortens the wait)."""
    settings = RunSettings(llm="offline", rpm=60).validate()
    board = in_process("Rate", rpm=60)
    llm = OfflineLLM()
    ctx = Context(board, llm, InProcessMemory(llm), settings, "o", "w")
    waits: list[float] = []  # what the board answered each ask: 0 to go, else a wait
    acquire = board.acquire

    def counted(tokens: int) -> float:
        waits.append(acquire(tokens))
        return waits[-1]

    monkeypatch.setattr(board, "acquire", counted)
    began = time.monotonic()
    for _ in range(60):
        ask(ctx, Kind.EXECUTION, lambda budget: "Your task: go")
    assert len(waits) == 60 and not any(waits)  # the burst went at once
    ask(ctx, Kind.EXECUTION, lambda budget: "Your task: wait")
    assert waits[60] > 0 and waits[-1] == 0  # the 61st was held back…
    assert 1.0 <= time.monotonic() - began < 3.0  # …until a second after the first
