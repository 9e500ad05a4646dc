"""One model call with coop's discipline, for every role: the cluster-wide rate limit first,
usage settled on the board after, and one retry with half the context if the prompt was too
long for the model. Planner and workers both call the model through here, each with its
`Context`: what a role works with."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coop.board import BoardClient
from coop.config import RunSettings
from coop.llm import LLM, Completion, LLMContextError, Message
from coop.memory import Memory
from coop.types import Kind

log = logging.getLogger(__name__)

RATE_WAIT_MAX = 5.0
"""Longest single sleep while the cluster-wide rate limit holds a call back."""


@dataclass(frozen=True)
class Context:
    """What a role (planner or worker) works with: the objective's board, memory and
    settings, this process's model client, and the role's own name (the instance name on
    the board, the tape and the model server's logs)."""

    board: BoardClient
    llm: LLM
    memory: Memory
    settings: RunSettings
    objective: str
    name: str


def ask(
    ctx: Context,
    kind: Kind,
    build: Callable[[int], str],
    task_id: int | None = None,
    answer_tokens: int | None = None,
) -> str:
    """One completion. `build(budget)` makes the prompt for a token budget, so that a retry
    with less context can rebuild it. `answer_tokens`: the most the answer may take (default:
    `--max-completion-tokens`)."""

    def turn(budget: int) -> list[Message]:
        return [{"role": "user", "content": build(budget)}]

    return chat(ctx, kind, turn, [], task_id, answer_tokens).text


def chat(
    ctx: Context,
    kind: Kind,
    build: Callable[[int], list[Message]],
    tools: list[dict[str, Any]],
    task_id: int | None = None,
    answer_tokens: int | None = None,
) -> Completion:
    """One turn of a conversation, with `tools` offered: the model's answer or its tool calls.
    `build(budget)` makes the messages for a token budget."""
    llm, board, settings = ctx.llm, ctx.board, ctx.settings
    most = answer_tokens or settings.max_completion_tokens
    budget = settings.max_prompt_tokens - settings.max_completion_tokens
    retried = False
    while True:
        messages = build(budget)
        cost = _tokens(llm, messages) + most
        while (wait := board.acquire(cost)) > 0:
            time.sleep(min(wait, RATE_WAIT_MAX))
        began = time.monotonic()
        try:
            reply = llm.chat(messages, most, tools)
        except LLMContextError:
            if retried:
                raise
            log.warning("%s prompt too long for the model; retrying with less context", kind.value)
            retried, budget = True, budget // 2
            continue
        board.record_usage(
            ctx.name,
            kind.value,
            reply.prompt_tokens,
            reply.completion_tokens,
            time.monotonic() - began,
            task_id,
        )
        return reply


def _tokens(llm: LLM, messages: list[Message]) -> int:
    """What the messages will likely count as: their text, and the calls they carry."""
    text = [str(m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in messages]
    return sum(llm.tokenizer.count(t) for t in text)


def metered(board: BoardClient, name: str) -> Callable[[int], None]:
    """A recorder of embedding tokens, for memory and indexes that embed on `name`'s behalf."""

    def record(tokens: int) -> None:
        board.record_usage(name, Kind.EMBEDDING.value, tokens, 0)

    return record
