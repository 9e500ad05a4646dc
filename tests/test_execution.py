"""The execution agent's step loop: model calls and tool calls until an answer, in-process and
through the real openai client to the HTTP stand-in speaking `tools` / `tool_calls`; the step
cap; every step on the tape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from coop import agents
from coop.calls import Context
from coop.config import RunSettings
from coop.execution import StepCapReached, execute
from coop.llm import Completion, Message, OfflineLLM, ToolCall
from coop.llm_openai import OpenAILLM
from coop.sandbox import SandboxUnavailable, choose
from coop.testing.standin import MakeStandIn
from coop.tokens import estimating
from coop.tools.box import Toolbox
from coop.tools.python import Python
from coop.tools.workspace import Workspace
from coop.types import EventKind, Lease
from tests.support.board import in_process
from tests.support.memory import InProcessMemory


def leased_task(text: str, **settings: Any) -> tuple[Context, Lease]:
    board = in_process("Act on it", **settings)
    board.add([text])
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    llm = OfflineLLM()
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "Act on it", "w")
    return ctx, lease


def test_without_tools_a_task_is_one_call() -> None:
    ctx, lease = leased_task("Step 5: Summarize the findings on costs for beginners")
    done = execute(ctx, lease, [], None)
    assert done.steps == 1 and done.text.startswith("[simulated result")


def test_with_tools_a_task_reads_acts_and_writes_in_steps(tmp_path: Any) -> None:
    ctx, lease = leased_task("Step 2: Collect concrete examples of costs", state_dir=tmp_path)
    ctx.board.write_file(lease.task.id, lease.token, "w", "notes/step-0.md", "the plan", "seed")
    try:
        tools = Toolbox([Workspace(ctx.board), Python(choose("auto"))])
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox on this node: {exc}")
    done = execute(ctx, lease, [], tools)
    assert done.steps == 7  # read, python, write: three tool calls, each after a model call
    assert "tool: the plan" in done.text and "190" in done.text  # sum(range(20))
    assert ctx.board.read_file("notes/step-2.md") is not None
    tape = [e for e in ctx.board.all_events() if e.kind is EventKind.TOOL]
    assert [(e.data["tool"], e.data["step"], e.data["ok"]) for e in tape] == [
        ("workspace_read", 2, True),
        ("python", 4, True),
        ("workspace_write", 6, True),
    ]
    assert ctx.board.snapshot().usage["execution"].calls == 4  # every model call counted


def test_the_step_cap_ends_a_model_that_keeps_calling_tools() -> None:
    class Looping(OfflineLLM):
        def chat(
            self,
            messages: list[Message],
            max_tokens: int,
            tools: list[dict[str, Any]],
            schema: dict[str, Any] | None = None,
        ) -> Completion:
            return Completion("", 10, 5, (ToolCall("c", "workspace_list", "{}"),))

    ctx, lease = leased_task("Loop forever", max_steps=5)
    ctx = Context(ctx.board, Looping(), ctx.memory, ctx.settings, ctx.objective, ctx.name)
    with pytest.raises(StepCapReached, match="--max-steps 5"):
        execute(ctx, lease, [], Toolbox([Workspace(ctx.board)]))
    assert ctx.board.snapshot().usage["execution"].calls == 3  # model, tool, model, tool, model


def test_the_real_client_and_the_stand_in_speak_tools_and_tool_calls(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    board = in_process("Act over HTTP")
    board.add(["Step 4: Review the draft about costs for beginners"])
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    llm = OpenAILLM(RunSettings(), "w")
    ctx = Context(board, llm, InProcessMemory(OfflineLLM()), RunSettings(), "Act", "w")
    done = execute(ctx, lease, [], Toolbox([Workspace(board)]))
    assert done.steps == 5 and "no file 'notes/step-1.md'" in done.text
    assert board.read_file("notes/step-4.md") == done.text.split("\n- tool:")[0]
    chats = [c for c in server.calls if c.kind == "execution"]
    assert len(chats) == 3 and board.snapshot().usage["execution"].calls == 3


def test_tool_outputs_that_do_not_fit_are_cut_oldest_longest_first() -> None:
    tok = estimating("x")
    history = [
        agents.assistant_turn("", [ToolCall("a", "workspace_read", json.dumps({"path": "x"}))]),
        agents.tool_turn("a", "word " * 3000),
    ]
    messages = agents.execution_messages("o", "t", [], history, tok, 1500)
    assert sum(tok.count(str(m.get("content") or "")) for m in messages) <= 1500
    assert str(messages[-1]["content"]).endswith("[cut to fit the prompt]")
    assert messages[1]["tool_calls"][0]["function"]["name"] == "workspace_read"
