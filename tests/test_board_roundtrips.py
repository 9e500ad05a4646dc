"""Board calls per task: one board is one thread, so the calls a task costs set an objective's
ceiling. A one-step task without tools takes at most 3 — its usage rides on its step record
and its completion, its replay lookup on its lease — and the books stay what was spent."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from coop import cluster
from coop.board import Board, BoardClient
from coop.calls import Context, metered
from coop.config import RunSettings
from coop.llm import OfflineLLM
from coop.types import Lease, Outcome, State, Step
from coop.worker import Worker
from tests.support.memory import InProcessMemory

TASKS = 12


class Counting(BoardClient):
    """A board client that counts the calls it sends to the actor, by method."""

    def __init__(self, objective_id: str, handle: Any) -> None:
        super().__init__(objective_id, handle=handle)
        self.sent: Counter[str] = Counter()

    def _submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.sent[method] += 1
        return super()._submit(method, args, kwargs)


def test_a_one_step_task_costs_at_most_three_board_calls(
    ray_cluster: object, tmp_path: Path
) -> None:
    oid = f"trips-{uuid.uuid4().hex[:8]}"
    run = RunSettings(
        llm="offline", lease_ttl=60, max_tasks=TASKS, rpm=100_000, tpm=10**9, max_tokens=10**8
    ).validate()
    handle = cluster.named_actor(Board, oid, "board", oid, "o", run, "n", str(tmp_path))
    board = Counting(oid, handle)
    board.add([f"task {i}" for i in range(TASKS)])
    board.sent.clear()
    llm = OfflineLLM()
    memory = InProcessMemory(llm, metered(board, "w"))
    worker = Worker(Context(board, llm, memory, run, "o", "w"), 1, threading.Event())
    report = worker.run()
    assert report.completed == TASKS and report.final_state is State.FINISHED
    calls = board.sent - Counter({"heartbeat": board.sent["heartbeat"]})  # by the clock
    assert sum(calls.values()) <= 3 * TASKS, calls
    usage = board.snapshot().usage  # every call charged, once
    assert usage["execution"].calls == TASKS
    assert usage["embedding"].calls == 2 * TASKS  # a query and a write per task


def test_usage_riding_on_a_completion_is_charged_even_when_its_lease_was_lost() -> None:
    run = RunSettings(llm="offline", lease_ttl=10).validate()
    board = BoardClient.in_process(Board("trips-0a1b2c3d", "o", run, "n"))
    board.add(["a"])
    held = board.lease("w")
    assert isinstance(held, Lease)
    last = Step(1, "model", "the answer", prompt=30, completion=7)
    board.release(held.task.id, held.token, "w")
    assert isinstance(board.lease("other"), Lease)  # fences the first holder out
    got = board.complete(held.task.id, held.token, "w", "late", "", last, (5, 6))
    assert got is Outcome.STALE
    usage = board.snapshot().usage
    assert (usage["execution"].calls, usage["execution"].tokens) == (1, 37)
    assert (usage["embedding"].calls, usage["embedding"].tokens) == (2, 11)
    assert board.steps(held.task.id) == ([], {})  # a lost lease's step is not kept


def test_a_lease_after_the_first_carries_the_tasks_steps() -> None:
    run = RunSettings(llm="offline", lease_ttl=10).validate()
    board = BoardClient.in_process(Board("trips-0a1b2c3d", "o", run, "n"))
    board.add(["a"])
    first = board.lease("w")
    assert isinstance(first, Lease) and first.steps == ()
    done = Step(1, "model", "half", prompt=3)
    assert board.step(first.task.id, first.token, "w", done, 0, "", (4,)) == (True, 0.0)
    board.release(first.task.id, first.token, "w")
    again = board.lease("w")
    assert isinstance(again, Lease) and again.attempt == 2
    assert again.steps == (done,) and again.started == {}
    assert board.snapshot().usage["embedding"].tokens == 4
