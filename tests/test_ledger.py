"""The step ledger: a task leased again after its worker vanished resumes from its recorded
steps — model replies and tool outputs are replayed, not paid for or done again; only the step
in flight runs again, and what it cost is charged all the same. In-process, on a fake clock."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from coop.board import Board, BoardClient
from coop.board.ledger import Ledger
from coop.calls import Context
from coop.config import RunSettings
from coop.execution import UNKNOWN, LeaseLost, execute
from coop.llm import Completion, Message, OfflineLLM
from coop.tools import Invocation, ToolOutput, ToolSpec
from coop.tools.box import Toolbox
from coop.tools.workspace import Workspace
from coop.types import EventKind, Lease, Step, StepKind
from tests.support.board import Clock
from tests.support.memory import InProcessMemory
from tests.support.procs import wait_for

TASK = "Step 4: Review the draft about costs for beginners"  # reads, then writes: 5 steps


class Counting(OfflineLLM):
    """The simulator, counting its calls, and holding the `hold`-th one until released (the
    worker that made it then "dies": nobody waits for it any more)."""

    def __init__(self, hold: int = 0) -> None:
        super().__init__()
        self.calls = 0
        self.hold = hold
        self.held = threading.Event()
        self.release = threading.Event()

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        tools: list[dict[str, Any]],
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        self.calls += 1
        if self.calls == self.hold:
            self.held.set()
            self.release.wait(30)
        return super().chat(messages, max_tokens, tools)


class Charge:
    """A tool that is not safe to repeat (it charges a card), counting its runs; it can hold
    its first run until released."""

    name = "card"

    def __init__(self) -> None:
        self.runs = 0
        self.held = threading.Event()
        self.release = threading.Event()

    def tools(self) -> list[ToolSpec]:
        return [ToolSpec("workspace_write", "Charge.", {"type": "object"}, unsafe_to_repeat=True)]

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        self.runs += 1
        if self.runs == 1:
            self.held.set()
            self.release.wait(30)
        return ToolOutput(True, "charged")

    def close(self) -> None:
        pass


def board(clock: Clock, tmp_path: Path | None = None, **settings: Any) -> BoardClient:
    run = RunSettings(llm="offline", lease_ttl=10, max_tasks=100, **settings).validate()
    where = str(tmp_path) if tmp_path else None
    return BoardClient.in_process(Board("ledger-0a1b2c3d", "o", run, "n", where, clock=clock))


def attempt(b: BoardClient, worker: str) -> Lease:
    lease = b.lease(worker)
    assert isinstance(lease, Lease), lease
    return lease


def zombie(c: Context, lease: Lease, tools: Toolbox) -> None:
    """A worker that will stop being waited for: when it wakes, its lease is gone."""

    def work() -> None:
        with contextlib.suppress(LeaseLost):
            execute(c, lease, [], tools)

    threading.Thread(target=work, daemon=True).start()


def ctx(b: BoardClient, llm: OfflineLLM, worker: str) -> Context:
    return Context(b, llm, InProcessMemory(OfflineLLM()), b.run_settings(), "o", worker)


def test_a_task_leased_again_replays_its_steps_and_redoes_only_the_one_in_flight(
    tmp_path: Path,
) -> None:
    clock = Clock()
    b = board(clock, tmp_path)
    b.add([TASK])
    first = Counting(hold=3)  # dies in its third model call (step 5: the answer)
    lease = attempt(b, "dead")
    threading.Thread(
        target=execute,
        args=(ctx(b, first, "dead"), lease, [], Toolbox([Workspace(b)])),
        daemon=True,
    ).start()
    assert first.held.wait(10)
    steps, _ = b.steps(lease.task.id)
    assert [(s.step, s.kind) for s in steps] == [
        (1, "model"),
        (2, "tool"),
        (3, "model"),
        (4, "tool"),
    ]
    clock.now += 11  # the worker is gone: its lease expires
    second = Counting()
    again = attempt(b, "rescuer")
    assert again.task.id == lease.task.id and again.attempt == 2 and again.token > lease.token
    done = execute(ctx(b, second, "rescuer"), again, [], Toolbox([Workspace(b)]))
    assert second.calls == 1 and done.steps == 5  # four replayed, one model call made again
    writes = [e for e in b.all_events() if e.kind is EventKind.WROTE]
    assert len(writes) == 1  # the write of step 4 was not done twice
    snap = b.snapshot()
    assert (snap.replays.tasks, snap.replays.steps, snap.replays.calls) == (1, 4, 2)
    assert snap.replays.tokens > 0
    execution = snap.usage["execution"]
    assert execution.calls == 2 + 1 + 1 and execution.estimated == 1  # the dead call, charged
    first.release.set()  # the zombie's call returns: it finds its lease gone and stops
    wait_for(lambda: first.calls == 3, 5, "the zombie")


def test_a_stale_lease_cannot_append_steps() -> None:
    clock = Clock()
    b = board(clock)
    b.add(["a task"])
    old = b.lease("w1")
    assert isinstance(old, Lease)
    clock.now += 11
    new = b.lease("w2")
    assert isinstance(new, Lease)
    late = Step(1, StepKind.MODEL, "a late reply", prompt=10, completion=5)
    assert b.step(old.task.id, old.token, "w1", late) == (False, 0.0)
    assert b.steps(new.task.id) == ([], {})
    assert b.snapshot().usage["execution"].calls == 1  # it was paid for: counted, not kept
    with pytest.raises(LeaseLost):
        zombie = Counting()
        execute(ctx(b, zombie, "w1"), old, [], Toolbox([Workspace(b)]))


def test_an_unsafe_tool_cut_short_is_an_unknown_outcome_not_a_second_run() -> None:
    clock = Clock()
    b = board(clock)
    b.add(["Step 1: Outline an approach to costs"])  # the simulator writes its notes: step 2
    card = Charge()
    lease = attempt(b, "dead")
    zombie(ctx(b, OfflineLLM(), "dead"), lease, Toolbox([card]))
    assert card.held.wait(10)
    clock.now += 11
    again = attempt(b, "rescuer")
    done = execute(ctx(b, OfflineLLM(), "rescuer"), again, [], Toolbox([card]))
    assert card.runs == 1  # not run again
    assert UNKNOWN.split(":")[0] in done.text
    assert b.snapshot().replays.unknown == 1
    card.release.set()


def test_the_ledger_survives_a_rebuild_from_the_journal(tmp_path: Path) -> None:
    clock = Clock()
    b = board(clock, tmp_path)
    b.add([TASK])
    lease = b.lease("w")
    assert isinstance(lease, Lease)
    b.step(lease.task.id, lease.token, "w", None, acquire=100)
    model = Step(
        1, StepKind.MODEL, "", (("c1", "workspace_read", '{"path": "x"}'),), prompt=9, completion=3
    )
    b.step(lease.task.id, lease.token, "w", model, starting="workspace_write")
    run = RunSettings(llm="offline", lease_ttl=10, max_tasks=100).validate()
    rebuilt = Board("ledger-0a1b2c3d", "o", run, "r", str(tmp_path), clock=Clock(), readonly=True)
    steps, started = rebuilt.steps(lease.task.id)
    assert steps == [model] and started == {2: "workspace_write"}


def test_steps_are_kept_once_in_order() -> None:
    ledger = Ledger()
    ledger.record(3, Step(step=1, kind=StepKind.MODEL, text="t", calls=(("a", "b", "{}"),)))
    ledger.start(3, 2, "card")
    ledger.record(3, Step(step=2, kind=StepKind.TOOL, text="out", call="a", tool="b"))
    assert [s.step for s in ledger.steps(3)] == [1, 2] and ledger.started(3) == {}
    assert ledger.steps(3)[0].calls == (("a", "b", "{}"),) and ledger.next_step(3) == 3
    ledger.fly(3, 3, 500, 0.01)
    assert ledger.landed(3) is not None and ledger.landed(3) is None
    ledger.forget(3)
    assert ledger.steps(3) == []
