"""The objective's budget: what has been spent, per kind of call, and what in-flight tasks have
reserved, against the caps on tokens and cost.

Its invariant: a cap is passed by at most the work in flight. A lease reserves what its task
will likely spend (`estimate`), every call settles with what the server reported, and no new
task starts when spent + reserved + one more estimate would break a cap; nor does a planner
call (`calls_that_fit`, less the planner's calls in flight). Both keep out of the share of the
caps reserved for the answer.
"""

from __future__ import annotations

from coop.config import RunSettings
from coop.types import Kind, Reason, Usage

PLANNER_KINDS = (Kind.CREATION, Kind.PRIORITIZATION, Kind.COMPLETION_CHECK)
"""The planner's own calls (a replan is a creation call): budgeted like a task, since they
spend the same caps."""


class Budget:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.usage: dict[str, Usage] = {k.value: Usage() for k in Kind}
        self._reserved: dict[int, tuple[int, float]] = {}  # task id -> (tokens, cost)

    def reserve(self, tid: int, tokens: int, cost: float) -> None:
        self._reserved[tid] = (tokens, cost)

    def unreserve(self, tid: int) -> None:
        self._reserved.pop(tid, None)

    def settle(self, kind: str, prompt: int, completion: int) -> float:
        """Count one call; returns its cost."""
        cost = self.settings.cost(kind, prompt, completion)
        self.usage[kind].add(prompt, completion, cost)
        return cost

    def spent(self) -> tuple[int, float]:
        total = Usage.total(self.usage.values())
        return total.tokens, total.cost

    def _committed(self) -> tuple[int, float]:
        """What is spent plus what in-flight tasks have reserved: tokens, cost."""
        tokens, cost = self.spent()
        reserved = self._reserved.values()
        return tokens + sum(r[0] for r in reserved), cost + sum(r[1] for r in reserved)

    def estimate(self) -> tuple[int, float]:
        """What one more execution will likely spend: the mean so far with the embeddings
        made per execution beside it (a task's memory query and write, the novelty check of
        its text), or half the most a prompt and its answer may take before there is any.

        Without the embeddings, a run near its cap leased a task more than it could pay, out
        of the answer's reserve: they are a third of a short task's tokens."""
        done = self.usage[Kind.EXECUTION.value]
        if done.calls:
            embedded = self.usage[Kind.EMBEDDING.value]
            tokens, cost = done.tokens + embedded.tokens, done.cost + embedded.cost
            return tokens // done.calls + 1, cost / done.calls
        return self._unknown(Kind.EXECUTION)

    def call_estimate(self) -> tuple[int, float]:
        """What one more planner call (creation, prioritization, completion check) will
        likely spend: their mean so far, or half the most a prompt and its answer may take
        before there is any."""
        made = Usage.total(self.usage[k.value] for k in PLANNER_KINDS)
        if made.calls:
            return made.tokens // made.calls + 1, made.cost / made.calls
        return self._unknown(Kind.CREATION)

    def _unknown(self, kind: Kind) -> tuple[int, float]:
        """An estimate before any call of the kind: half the most a prompt and answer take."""
        s = self.settings
        tokens = (s.max_prompt_tokens + s.max_completion_tokens) // 2
        return tokens, s.cost(kind.value, tokens, 0)

    def over(self, extra: tuple[int, float] | None) -> Reason | None:
        """With `extra`: the cap that one more task (on top of what is spent and reserved by
        in-flight tasks) would break; tasks may not use the share kept for the answer. Without:
        the cap already reached by what is spent."""
        s = self.settings
        if not (s.max_tokens or s.max_cost):
            return None  # the common case, on every lease: nothing to add up
        tokens, cost = self.spent() if extra is None else self._committed()
        share = 1.0
        if extra is not None:
            tokens, cost = tokens + extra[0], cost + extra[1]
            share -= s.synthesis_reserve

        def breaks(value: float, cap: float) -> bool:  # a plan may fill a cap; spending ends it
            return bool(cap) and (value > cap * share if extra is not None else value >= cap)

        if breaks(tokens, s.max_tokens):
            return Reason.MAX_TOKENS
        if breaks(cost, s.max_cost):
            return Reason.MAX_COST
        return None

    def tasks_that_fit(self) -> int | None:
        """How many more tasks of the usual cost fit beside what is spent and reserved, under
        the share of the caps that tasks may use (None with no cap on tokens or cost). The
        planner adds no task past it: a task that could never be leased is a creation call
        spent from the answer's reserve (a run stopped at a cap lost its answer that way)."""
        return self._fit(self.estimate())

    def calls_that_fit(self) -> int | None:
        """How many more planner calls of the usual cost fit beside what is spent and
        reserved, under the same share as tasks (None with no cap on tokens or cost). The
        planner starts no call past it: its calls, not only its tasks, would otherwise spend
        the answer's reserve (a run stopped at --max-tokens was left without an answer)."""
        return self._fit(self.call_estimate())

    def _fit(self, each: tuple[int, float]) -> int | None:
        """How many more spends of `each` fit under the tasks' share of the caps."""
        s = self.settings
        if not (s.max_tokens or s.max_cost):
            return None
        tokens, cost = self._committed()
        share = 1.0 - s.synthesis_reserve
        each_tokens, each_cost = each
        fit: list[int] = []
        if s.max_tokens:
            fit.append(int(max(0.0, s.max_tokens * share - tokens) // max(each_tokens, 1)))
        if s.max_cost and each_cost > 0:
            fit.append(int(max(0.0, s.max_cost * share - cost) // each_cost))
        return min(fit) if fit else None

    def short(self, prompt: int, completion: int) -> str:
        """Why calls of at most `prompt` + `completion` tokens would not fit in what is left
        of the caps ("" when they would)."""
        s = self.settings
        tokens, cost = self.spent()
        if s.max_tokens and tokens + prompt + completion > s.max_tokens:
            return (
                f"{max(0, s.max_tokens - tokens)} of --max-tokens {s.max_tokens} are left and "
                f"the synthesis may take {prompt + completion}"
            )
        price = s.cost(Kind.SYNTHESIS.value, prompt, completion)
        if s.max_cost and cost + price > s.max_cost:
            return (
                f"${max(0.0, s.max_cost - cost):.4f} of --max-cost ${s.max_cost:g} is left and "
                f"the synthesis may cost ${price:.4f}"
            )
        return ""

    def left(self, completed: int) -> dict[str, float]:
        """What is left of each cap set (tasks always), for the metrics."""
        s = self.settings
        tokens, cost = self.spent()
        left: dict[str, float] = {}
        if s.max_tokens:
            left["tokens"] = s.max_tokens - tokens
        if s.max_cost:
            left["usd"] = s.max_cost - cost
        left["tasks"] = s.max_tasks - completed
        return left
