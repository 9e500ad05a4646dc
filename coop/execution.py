"""The execution agent: one task, done in steps.

Without tools it is BabyAGI's execution agent: one prompt in, one completion out. With tools,
the model is offered them through the OpenAI tools API and the task becomes a loop of steps —
a model call, then the tool calls it asked for, their results back to the model — until the
model answers in text, or `--max-steps` (model calls and tool calls together) is reached, which
fails the attempt like any other fault. Every step is recorded on the board as it ends: model
calls as usage (what they cost), tool calls as `tool` events (tool, ok, latency, size).

Each tool call carries an idempotency key — objective, task and step — that is the same on
every attempt of the task: a tool that can use it (the workspace's keyed writes, `fetch`'s
Idempotency-Key header, MCP request metadata) does not do twice what a crashed attempt did.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coop import agents
from coop.calls import Context, ask, chat
from coop.errors import CoopError
from coop.memory import Hit
from coop.tools import Invocation
from coop.tools.box import Toolbox
from coop.types import Kind, Lease

log = logging.getLogger(__name__)


class StepCapReached(CoopError):
    """The model kept calling tools past `--max-steps`: the attempt fails."""


@dataclass(frozen=True)
class Done:
    text: str  # the model's answer
    steps: int  # model calls and tool calls it took


def execute(ctx: Context, lease: Lease, context: Sequence[Hit], tools: Toolbox | None) -> Done:
    """Do the leased task: its answer once the model gives one."""
    task, tok = lease.task, ctx.llm.tokenizer
    if not tools:
        text = ask(
            ctx,
            Kind.EXECUTION,
            lambda budget: agents.execution_prompt(ctx.objective, task.text, context, tok, budget),
            task.id,
        )
        return Done(text, 1)
    cap = ctx.settings.max_steps
    history: list[dict[str, Any]] = []
    specs = [spec.openai() for spec in tools.specs()]
    step = 0
    while step < cap:
        step += 1
        reply = chat(
            ctx,
            Kind.EXECUTION,
            lambda budget: agents.execution_messages(
                ctx.objective, task.text, context, history, tok, budget
            ),
            specs,
            task.id,
        )
        if not reply.tool_calls:
            return Done(reply.text, step)
        history.append(agents.assistant_turn(reply.text, reply.tool_calls))
        for call in reply.tool_calls:
            if step >= cap:  # the model sees why the rest did not run
                history.append(agents.tool_turn(call.id, f"not run: --max-steps {cap} reached"))
                continue
            step += 1
            at = Invocation(
                f"{ctx.board.objective_id}/{task.id}/{step}",
                task.id,
                lease.token,
                ctx.name,
                tools.timeout,
            )
            ran = tools.run(call.name, call.arguments, at)
            ctx.board.record_tool(
                ctx.name,
                task.id,
                step,
                ran.tool,
                ran.provider,
                ran.output.ok,
                ran.latency,
                ran.size,
            )
            if not ran.output.ok:
                log.info(
                    "task #%d step %d: %s failed: %s",
                    task.id,
                    step,
                    ran.tool,
                    ran.output.text[:120],
                )
            history.append(agents.tool_turn(call.id, ran.output.text))
    raise StepCapReached(f"reached --max-steps {cap} without an answer")
