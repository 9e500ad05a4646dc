"""Board calls per task: one board is one thread, so the calls a task costs set an objective's
ceiling. A one-step task without tools takes at most 3 — its usage rides on its step record
and its completion, its replay lookup on its lease — and the books stay what was spent."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coop import cluster
from coop.board import Board, BoardClient
from coop.calls import Context, metered
from coop.config import RunSettings
from coop.journal import JournalError
from coop.llm import OfflineLLM
from coop.types import EventKind, Lease, Outcome, State, Step, StepKind
from coop.worker import Worker
from tests.support.board import crashing_board
from tests.support.memory import InProcessMemory

TASKS = 12


class Counting(BoardClient):
    """A board client that counts the calls it sends to the actor, by method."""

    def __init__(self, objective_id: str, handle: Any) -> None:
        super().__init__(objective_id, handle=handle)
        self.sent: Counter[str] = Counter()
        self.embedded: Counter[str] = Counter()  # embedding calls settled, by method

    def _submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.sent[method] += 1
        bound = inspect.signature(getattr(Board, method)).bind(None, *args, **kwargs)
        self.embedded[method] += len(bound.arguments.get("embedded", ()))
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
    # the query's embedding is settled with the step before the model call, as it happens (a
    # lease reserves a task's model calls only: a run near its cap must see the rest spent)
    assert board.embedded["step"] == TASKS
    assert board.embedded["complete_and_lease"] + board.embedded["complete"] == TASKS


def test_usage_riding_on_a_completion_is_charged_even_when_its_lease_was_lost() -> None:
    run = RunSettings(llm="offline", lease_ttl=10).validate()
    board = BoardClient.in_process(Board("trips-0a1b2c3d", "o", run, "n"))
    board.add(["a"])
    held = board.lease("w")
    assert isinstance(held, Lease)
    last = Step(1, StepKind.MODEL, "the answer", prompt=30, completion=7)
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
    done = Step(1, StepKind.MODEL, "half", prompt=3)
    assert board.step(first.task.id, first.token, "w", done) == (True, 0.0)
    board.release(first.task.id, first.token, "w")
    again = board.lease("w")
    assert isinstance(again, Lease) and again.attempt == 2
    assert again.steps == (done,) and again.started == {}


def _riding(board: BoardClient) -> list[Any]:
    """The calls that carry a task's usage, each with some, in an order that lets each land."""
    board.add(["a", "b", "c"])
    first = board.lease("w")
    assert isinstance(first, Lease)
    tid, token = first.task.id, first.token
    replies: list[Any] = [board.step(tid, token, "w", None, 100)]
    replies.append(
        board.complete(
            tid, token, "w", "done 1", "", Step(1, StepKind.MODEL, "x", prompt=9), (3, 4)
        )
    )
    second = board.lease("w")
    assert isinstance(second, Lease)
    outcome, third = board.complete_and_lease(
        second.task.id,
        second.token,
        "w",
        "done 2",
        (),
        "",
        Step(1, StepKind.MODEL, "y", prompt=5),
        (6,),
    )
    assert isinstance(third, Lease)
    return [*replies, outcome, third.task.id, third.token]


def _books(board: BoardClient) -> tuple[Any, ...]:
    usage = board.snapshot().usage
    events = Counter(e.kind.value for e in board.all_events())
    return (
        {k: (u.calls, u.prompt_tokens) for k, u in usage.items()},
        events,
        [(r.task_id, r.text) for r in board.results()],
    )


def test_usage_riding_on_a_call_counts_once_when_the_board_dies_before_replying(
    ray_cluster: object, tmp_path: Path
) -> None:
    run = RunSettings(llm="offline", lease_ttl=20, max_tasks=100).validate()
    reference = BoardClient.in_process(Board("ref-0a1b2c3d", "o", run, "n", str(tmp_path)))
    want = (_riding(reference), _books(reference))
    riding = ("step", "complete", "complete_and_lease")
    _, board, died = crashing_board(run, tmp_path, riding)
    got = (_riding(board), _books(board))
    assert sorted(p.name for p in died.iterdir()) == sorted(riding)  # each one died
    assert got == want


def test_a_completion_the_journal_refused_left_nothing_and_its_retry_charges_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal takes the usage riding on a completion and refuses the completion itself
    (a write error SQLite does not roll back by itself): the call leaves nothing behind, so
    its worker's retry, a new call, charges the usage once."""
    run = RunSettings(llm="offline", lease_ttl=20).validate()
    board = BoardClient.in_process(Board("full-0a1b2c3d", "o", run, "n", str(tmp_path)))
    board.add(["a"])
    held = board.lease("w")
    assert isinstance(held, Lease)
    journal = board._board._journal  # type: ignore[union-attr]
    assert journal is not None
    append = journal.append

    def refuse_completions(kind: EventKind, data: dict[str, Any]) -> None:
        if kind is EventKind.COMPLETED:
            raise JournalError("cannot write the journal: disk I/O error")
        append(kind, data)

    monkeypatch.setattr(journal, "append", refuse_completions)
    last = Step(1, StepKind.MODEL, "the answer", prompt=30, completion=7)
    with pytest.raises(JournalError, match="I/O"):
        board.complete(held.task.id, held.token, "w", "x", "", last, (5,))
    assert board.snapshot().usage["execution"].calls == 0  # nothing of it was kept
    monkeypatch.setattr(journal, "append", append)  # the worker's retry lands
    assert board.complete(held.task.id, held.token, "w", "x", "", last, (5,)) is Outcome.ACCEPTED
    usage = board.snapshot().usage
    assert (usage["execution"].calls, usage["embedding"].calls) == (1, 1)
