"""One model call with coop's discipline, for every role: the cluster-wide rate limit first,
usage settled on the board after, and one retry with half the context if the prompt was too
long for the model. Planner and workers both call the model through here, each with its
`Context`: what a role works with."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from coop.board import BoardClient
from coop.config import RunSettings
from coop.llm import LLM, LLMContextError
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


def ask(ctx: Context, kind: Kind, build: Callable[[int], str], task_id: int | None = None) -> str:
    """One completion. `build(budget)` makes the prompt for a token budget, so that a retry
    with less context can rebuild it."""
    llm, board, settings = ctx.llm, ctx.board, ctx.settings
    budget = settings.max_prompt_tokens - settings.max_completion_tokens
    retried = False
    while True:
        prompt = build(budget)
        cost = llm.tokenizer.count(prompt) + settings.max_completion_tokens
        while (wait := board.acquire(cost)) > 0:
            time.sleep(min(wait, RATE_WAIT_MAX))
        began = time.monotonic()
        try:
            reply = llm.complete(prompt, settings.max_completion_tokens)
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
        return reply.text


def metered(board: BoardClient, name: str) -> Callable[[int], None]:
    """A recorder of embedding tokens, for memory and indexes that embed on `name`'s behalf."""

    def record(tokens: int) -> None:
        board.record_usage(name, Kind.EMBEDDING.value, tokens, 0)

    return record
