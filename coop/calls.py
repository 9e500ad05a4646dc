"""One model call with coop's discipline, for every role: the cluster-wide rate limit first,
usage settled on the board after, and one retry with half the context if the prompt was too
long for the model. Planner and workers both call the model through here, each with its
`Context`: what a role works with."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coop.agents import house
from coop.board import BoardClient
from coop.config import RunSettings
from coop.llm import LLM, Completion, LLMContextError, Message, said
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
    schema: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """One completion: the answer, and the prompt it answers (a reply is judged against its
    own prompt's instructions). `build(budget)` makes the prompt for a token budget, so that
    a retry with less context can rebuild it. `answer_tokens`: the most the answer may take
    (default: `--max-completion-tokens`); `schema`: the answer is JSON held to it where the
    server takes structured outputs (NoStructuredOutputs where not)."""
    sent = ""

    def wait_turn(tokens: int) -> None:
        while (wait := ctx.board.acquire(tokens)) > 0:
            time.sleep(min(wait, RATE_WAIT_MAX))

    def turn(budget: int) -> list[Message]:
        nonlocal sent
        sent = build(budget)
        return [{"role": "user", "content": sent}]

    reply, latency = fitted(ctx, kind, turn, [], wait_turn, answer_tokens, schema)
    ctx.board.record_usage(
        ctx.name, kind.value, reply.prompt_tokens, reply.completion_tokens, latency, task_id
    )
    return reply.text, sent


def fitted(
    ctx: Context,
    kind: Kind,
    build: Callable[[int], list[Message]],
    tools: list[dict[str, Any]],
    before: Callable[[int], None],
    answer_tokens: int | None = None,
    schema: dict[str, Any] | None = None,
) -> tuple[Completion, float]:
    """One model call whose prompt fits: the run's instructions first (agents.house), then
    what `build(budget)` makes for the room they leave, `before(tokens)`
    runs once they are made (the rate limit; for a task, its step ledger too), and a prompt
    too long for the model is made again, once, with half the context. Returns the reply and
    how long it took."""
    most = answer_tokens or ctx.settings.max_completion_tokens
    head = house(ctx.settings.instructions)  # in every prompt, within its budget
    budget = ctx.settings.max_prompt_tokens - ctx.settings.max_completion_tokens
    budget -= tokens_of(ctx.llm, head)
    retried = False
    while True:
        messages = [*head, *build(budget)]
        before(tokens_of(ctx.llm, messages) + most)
        began = time.monotonic()
        try:
            if schema is None:
                return ctx.llm.chat(messages, most, tools), time.monotonic() - began
            return ctx.llm.chat(messages, most, tools, schema), time.monotonic() - began
        except LLMContextError:
            if retried:
                raise
            log.warning("%s prompt too long for the model; retrying with less context", kind.value)
            retried, budget = True, budget // 2


def tokens_of(llm: LLM, messages: list[Message]) -> int:
    """What the messages will likely count as: their text, and the calls they carry."""
    return sum(llm.tokenizer.count(said(m)) for m in messages)


def metered(board: BoardClient, name: str) -> Callable[[int], None]:
    """A recorder of embedding tokens, for memory and indexes that embed on `name`'s behalf."""

    def record(tokens: int) -> None:
        board.record_usage(name, Kind.EMBEDDING.value, tokens, 0)

    return record
