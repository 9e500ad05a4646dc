"""The step ledger: each finished step of a task — a model call's reply, a tool call's output —
kept on the board under the task's lease, so that a task leased again after its worker died
resumes from its steps instead of paying for them, or doing their side effects, again.

Its invariants: a step is recorded once, by the holder of the task's newest lease (a stale
lease cannot append); a task's steps are numbered from 1 without gaps; a tool that is unsafe
to repeat is marked as started before it runs, so that a worker's death mid-call is seen as
an outcome unknown, not silently redone. A model call whose reply never came back is "in
flight": if its lease ends that way, its estimated cost is charged (the server billed it).
"""

from __future__ import annotations

from dataclasses import dataclass

from coop.types import Step


@dataclass
class InFlight:
    """A model call granted by the rate limit and not yet recorded: what it likely costs."""

    step: int
    tokens: int
    cost: float


class Ledger:
    def __init__(self) -> None:
        self._steps: dict[int, list[Step]] = {}
        self._started: dict[int, dict[int, str]] = {}  # task -> step -> unsafe tool started
        self._flying: dict[int, InFlight] = {}  # task -> its model call in flight

    def steps(self, task: int) -> list[Step]:
        return list(self._steps.get(task, ()))

    def started(self, task: int) -> dict[int, str]:
        """Unsafe tool calls marked as started and never finished: step -> tool."""
        return dict(self._started.get(task, {}))

    def next_step(self, task: int) -> int:
        return len(self._steps.get(task, ())) + 1

    def record(self, task: int, step: Step) -> None:
        self._steps.setdefault(task, []).append(step)
        self._started.get(task, {}).pop(step.step, None)
        flying = self._flying.get(task)
        if flying is not None and flying.step == step.step:
            del self._flying[task]

    def start(self, task: int, step: int, tool: str) -> None:
        self._started.setdefault(task, {})[step] = tool

    def fly(self, task: int, step: int, tokens: int, cost: float) -> None:
        self._flying[task] = InFlight(step, tokens, cost)

    def landed(self, task: int) -> InFlight | None:
        """The call in flight when the task's lease ended (it is no longer tracked)."""
        return self._flying.pop(task, None)

    def forget(self, task: int) -> None:
        """A finished task's steps: only the journal keeps them."""
        self._steps.pop(task, None)
        self._started.pop(task, None)
        self._flying.pop(task, None)
