"""One model call with coop's discipline, for every role: the cluster-wide rate limit first,
usage settled on the board after, and one retry with half the context if the prompt was too
long for the model. Planner and workers both call the model through here, each with its
`Context`: what a role works with."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from coop.agents import house
from coop.board import BoardClient
from coop.config import RunSettings
from coop.llm import LLM, Completion, LLMContextError, Message, said
from coop.memory import Memory
from coop.types import Kind, Lease, Step

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


@dataclass
class Tab:
    """What one task ran up that its board has not been told yet: the tokens of each
    embedding call made for it, and its last step. The embeddings go to the board with the
    task's next call (a `Board.step` before a model call, or the completion), the last step
    with its completion, which settle them first, instead of a call of their own per item."""

    embedded: list[int] = field(default_factory=list)
    last: Step | None = None


_tabs = threading.local()
"""The tab open on this thread. A worker's memory is made once and shared by its slots, each
a thread working one task: its embedding recorder finds the task's tab by thread."""


@contextmanager
def tab(board: BoardClient, name: str, lease: Lease) -> Iterator[Tab]:
    """Open a tab for `lease`'s task on this thread. Whatever no call took when it closes (the
    task failed, or was given up) is told as before, one call per item: nothing paid goes
    uncharged."""
    open_ = _tabs.tab = Tab()
    try:
        yield open_
    finally:
        _tabs.tab = None
        if open_.last is not None:
            board.last_step(lease.task.id, lease.token, name, open_.last)
        for tokens in open_.embedded:
            board.record_usage(name, Kind.EMBEDDING.value, tokens, 0)


def current_tab() -> Tab | None:
    """The tab of the task this thread works on, if a worker's slot opened one."""
    found: Tab | None = getattr(_tabs, "tab", None)
    return found


def metered(board: BoardClient, name: str) -> Callable[[int], None]:
    """A recorder of embedding tokens, for memory and indexes that embed on `name`'s behalf:
    on the tab of the task this thread works on, else told to the board at once."""

    def record(tokens: int) -> None:
        if (open_ := current_tab()) is not None:
            open_.embedded.append(tokens)
        else:
            board.record_usage(name, Kind.EMBEDDING.value, tokens, 0)

    return record
