"""The execution agent: one task, done in steps, each kept on the board as it ends.

The model is offered the worker's tools through the OpenAI tools API (with none, a task is
BabyAGI's single call). A task is a loop of steps — a model call, then the tool calls it asked
for, their results back to the model — until the model answers in text, or `--max-steps`
(model calls and tool calls together) is reached, which fails the attempt like any fault.

Each step is recorded in the board's step ledger when it returns, before the next one starts,
in the same round trip that opens the next (`Board.step`). A task leased again after its
worker died replays its recorded steps — model replies and tool outputs — instead of paying
for them or doing their side effects again; only the step in flight at the death runs again.
A tool that is unsafe to repeat is marked as started before it runs: if its worker dies in it,
the model is told the outcome is unknown instead. Each tool call carries an idempotency key —
objective, task, step — the same on every attempt, which the tools pass on (the workspace's
keyed writes, fetch's Idempotency-Key header, MCP request metadata).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coop import agents, degenerate
from coop.calls import RATE_WAIT_MAX, Context, current_tab, fitted
from coop.errors import CoopError
from coop.llm import Message, ToolCall
from coop.memory import Hit
from coop.tools import Invocation, ToolOutput
from coop.tools.box import Toolbox
from coop.types import Kind, Lease, Replays, Step, StepKind

log = logging.getLogger(__name__)

UNKNOWN = (
    "outcome unknown: the worker running this call stopped before it returned, and the tool "
    "is not safe to repeat; check what it did before you try it again"
)
"""What the model reads for an unsafe tool call cut short by its worker's death."""


class StepCapReached(CoopError):
    """The model kept calling tools past `--max-steps`: the attempt fails."""


class LeaseLost(CoopError):
    """The task's lease went to another worker mid-task: this attempt stops, its result would
    be refused anyway."""


@dataclass(frozen=True)
class Done:
    text: str  # the model's answer
    steps: int  # model calls and tool calls it took, replayed ones included
    flaw: str = ""  # what makes the answer degenerate, when it was kept after a second try


@dataclass
class _Task:
    """One attempt at a task: its conversation, its step count, and the ledger's steps."""

    ctx: Context
    lease: Lease
    context: Sequence[Hit]
    tools: Toolbox | None
    recorded: dict[int, Step]
    started: dict[int, str]
    history: list[Message] = field(default_factory=list)
    step: int = 0
    pending: Step | None = None  # finished, and not yet on the board
    saved: Replays = field(default_factory=lambda: Replays(tasks=1))
    nudged: bool = False  # the model was asked once more for a degenerate answer

    def run(self) -> Done:
        cap = self.ctx.settings.max_steps
        specs = [s.openai() for s in self.tools.specs()] if self.tools else []
        while self.step < cap:
            self.step += 1
            text, calls = self._model(specs)
            if not calls:
                flaw = self._flaw(text)
                if flaw and not self.nudged and self.step < cap:  # once more, told why
                    log.info(
                        "task #%d: the model's result %s; asking once more",
                        self.lease.task.id,
                        flaw,
                    )
                    self.nudged = True
                    self.history.append({"role": "assistant", "content": text})
                    self.history.append(
                        {"role": "user", "content": agents.NUDGE.format(flaw=flaw).strip()}
                    )
                    continue
                self._close()
                return Done(text, self.step, flaw)
            self.history.append(agents.assistant_turn(text, calls))
            for call in calls:
                if self.step >= cap:  # the model sees why the rest did not run
                    note = f"not run: --max-steps {cap} reached"
                    self.history.append(agents.tool_turn(call.id, note))
                    continue
                self.step += 1
                self.history.append(agents.tool_turn(call.id, self._tool(call).text))
        self._close()
        raise StepCapReached(f"reached --max-steps {cap} without an answer")

    # -- model steps ---------------------------------------------------------------------

    def _model(self, specs: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
        """This step's reply: the recorded one, or a call to the model now."""
        done = self.recorded.get(self.step)
        if done is not None and done.kind is StepKind.MODEL:
            s = self.saved
            s.steps, s.calls = s.steps + 1, s.calls + 1
            s.tokens += done.prompt + done.completion
            s.cost += self.ctx.settings.cost(Kind.EXECUTION.value, done.prompt, done.completion)
            return done.text, [ToolCall(*c) for c in done.calls]
        reply, latency = fitted(
            self.ctx, Kind.EXECUTION, self._messages, specs, lambda t: self._between(acquire=t)
        )
        calls = tuple((c.id, c.name, c.arguments) for c in reply.tool_calls)
        self.pending = Step(
            self.step,
            StepKind.MODEL,
            reply.text,
            calls,
            prompt=reply.prompt_tokens,
            completion=reply.completion_tokens,
            latency=latency,
        )
        return reply.text, list(reply.tool_calls)

    def _flaw(self, text: str) -> str:
        """What makes an answer degenerate, judged against the execution prompt's own words
        (the same on a replay: the prompt is made without context for it)."""
        ctx, task = self.ctx, self.lease.task
        template = agents.EXECUTION_WITH_TOOLS if self.tools else agents.EXECUTION
        bare = agents.execution_prompt(
            ctx.objective, task.text, [], ctx.llm.tokenizer, 10**9, template
        )
        return degenerate.flaw(text, agents.instructions(bare))

    def _messages(self, budget: int) -> list[Message]:
        ctx, task = self.ctx, self.lease.task
        if not self.tools:  # BabyAGI's execution agent, one prompt (and a nudge, if any)
            prompt = agents.execution_prompt(
                ctx.objective, task.text, self.context, ctx.llm.tokenizer, budget
            )
            return [{"role": "user", "content": prompt}, *self.history]
        return agents.execution_messages(
            ctx.objective, task.text, self.context, self.history, ctx.llm.tokenizer, budget
        )

    # -- tool steps ---------------------------------------------------------------------

    def _tool(self, call: ToolCall) -> ToolOutput:
        """This step's tool output: recorded, unknown (an unsafe call cut short), or run now."""
        done = self.recorded.get(self.step)
        if done is not None and done.kind is StepKind.TOOL:
            self.saved.steps += 1
            return ToolOutput(done.ok, done.text)
        assert self.tools is not None
        spec = self.tools.spec(call.name)
        if self.step in self.started:
            self.saved.unknown += 1
            out = ToolOutput.error(UNKNOWN)
            self._between()
            self.pending = Step(
                self.step, StepKind.TOOL, out.text, call=call.id, tool=call.name, ok=False
            )
            return out
        unsafe = spec is not None and spec.unsafe_to_repeat
        self._between(starting=call.name if unsafe else "")
        ctx, lease = self.ctx, self.lease
        key = f"{ctx.board.objective_id}/{lease.task.id}/{self.step}"
        at = Invocation(key, lease.task.id, lease.token, ctx.name, self.tools.timeout)
        ran = self.tools.run(call.name, call.arguments, at)
        if not ran.output.ok:
            log.info(
                "task #%d step %d: %s: %s", at.task_id, self.step, ran.tool, ran.output.text[:120]
            )
        self.pending = Step(
            self.step,
            StepKind.TOOL,
            ran.output.text,
            call=call.id,
            tool=ran.tool,
            ok=ran.output.ok,
            latency=ran.latency,
            bytes=ran.size,
        )
        return ran.output

    # -- the board, between steps --------------------------------------------------------------

    def _between(self, acquire: int = 0, starting: str = "") -> None:
        """Record the finished step and the embedding calls made since the last (the memory
        query, before the first) and open the next, in one round trip; wait while the
        cluster-wide rate limit holds a model call back."""
        ctx, lease = self.ctx, self.lease
        bill = current_tab()
        while True:
            embedded = tuple(bill.embedded) if bill is not None else ()
            owned, wait = ctx.board.step(
                lease.task.id, lease.token, ctx.name, self.pending, acquire, starting, embedded
            )
            self.pending = None
            if bill is not None:
                bill.embedded.clear()
            if not owned:
                raise LeaseLost(f"task #{lease.task.id}: the lease went to another worker")
            if wait <= 0:
                return
            time.sleep(min(wait, RATE_WAIT_MAX))

    def _close(self) -> None:
        """The last step goes on the task's tab, to ride on its completion (with no tab open,
        to the board with no one waiting: the completion follows it in order), and what
        replaying saved goes on the tape."""
        ctx, lease = self.ctx, self.lease
        if self.pending is not None:
            if (open_ := current_tab()) is not None:
                open_.last = self.pending
            else:
                ctx.board.last_step(lease.task.id, lease.token, ctx.name, self.pending)
            self.pending = None
        s = self.saved
        if s.steps or s.unknown:
            ctx.board.replayed(ctx.name, lease.task.id, s)
            log.info(
                "task #%d: %d step(s) replayed from the ledger, %d model call(s) not paid again",
                lease.task.id,
                s.steps,
                s.calls,
            )


def execute(ctx: Context, lease: Lease, context: Sequence[Hit], tools: Toolbox | None) -> Done:
    """Do the leased task (resuming from its ledger, which a lease after the first carries,
    when it was leased before): its answer."""
    recorded = {s.step: s for s in lease.steps}
    return _Task(ctx, lease, context, tools, recorded, dict(lease.started)).run()
