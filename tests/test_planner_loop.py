"""The planner's logic in one process, against an in-process board and memory, no Ray: a whole
objective with a worker, concurrent creation calls, the stop-asking rule at the task cap,
prioritization beside creation, the progress ledger (stalls, replans, loops), the completion
check, answers that are garbage, approvals, a lost claim. (`coop start` end to end is in
test_planner.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from coop import constants as C
from coop.board import Board, BoardClient, PlannerLost
from coop.calls import Context
from coop.config import RunSettings
from coop.llm import Completion, OfflineLLM
from coop.llm_openai import OpenAILLM
from coop.planner import loop
from coop.planner.jobs import Job, Outcome, Review
from coop.planner.loop import Planner
from coop.planner.pool import DaemonPool
from coop.simulate import Simulator
from coop.testing.standin import Faults, MakeStandIn
from coop.types import EventKind, Reason, State, Task
from coop.worker import Worker
from tests.support.board import Clock, in_process
from tests.support.memory import InProcessMemory


def planner(
    board: BoardClient,
    llm: OfflineLLM | None = None,
    review: Review | None = None,
    memory: InProcessMemory | None = None,
) -> Planner:
    llm = llm or OfflineLLM()
    stop = threading.Event()
    memory = memory or InProcessMemory(llm)
    ctx = Context(board, llm, memory, board.run_settings(), "objective", "planner")
    p = Planner(ctx, stop, review)
    p.claim(wait=False)
    p._pool = DaemonPool(4, "test")  # what run() makes: for tests that drive one step
    return p


def settle(p: Planner) -> None:
    """Let every job the planner started finish, and apply what they did, as its coordinator
    would."""
    while p._running:
        future = next(iter(p._running))
        future.result(30)
        p._finish(future, p._running.pop(future))


class Garbage(OfflineLLM):
    def complete(self, prompt: str, max_tokens: int) -> Completion:
        return Completion("Sorry!! I cannot <<format>> that ~~ }{", 10, 10)


def test_a_whole_objective_with_one_worker(tmp_path: Path) -> None:
    board = in_process("Write a guide", tmp_path)
    llm = OfflineLLM()
    memory = InProcessMemory(llm)
    p = planner(board, llm, memory=memory)
    board.add([p.settings.initial_task], planner=p.name)
    stop = threading.Event()
    w = Worker(Context(board, llm, memory, p.settings, "objective", "w"), 2, stop)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    p.run()
    thread.join(10)
    snap = board.snapshot()
    assert (snap.state, snap.reason) == (State.FINISHED, Reason.DONE)
    assert snap.completed == 13 and snap.unplanned == 0 and not snap.pending
    # every result was acknowledged exactly once, in one event with the tasks it begot
    acks = [
        s for e in board.all_events() if e.kind is EventKind.ADDED for s in e.data["planned"] or ()
    ]
    assert sorted(acks) == list(range(13))
    assert snap.usage["creation"].calls >= 1 and snap.usage["completion-check"].calls >= 1


def test_stalls_bring_fresh_plans_then_stop_the_objective_as_stalled() -> None:
    board = in_process("Stall")
    p = planner(board)  # the simulator's fresh plan is "Nothing is left to plan."
    for _ in range(C.STALL_LIMIT):
        p._ledger(False, 0, 0)
    assert board.snapshot().progress.replans == 1  # the ledger lives on the board
    settle(p)
    # a fresh plan that adds nothing is itself a stall
    assert p.progress.replans == 1 and p.progress.stalls == 1
    for _ in range(C.STALL_LIMIT - 1):
        p._ledger(False, 0, 0)
    settle(p)
    assert p.progress.replans == 2 and board.state()[0] is State.RUNNING
    for _ in range(C.STALL_LIMIT - 1):
        p._ledger(False, 0, 0)
    settle(p)
    state, reason, detail = board.state()
    assert reason is Reason.STALLED and "2 fresh plans" in detail
    assert state is State.FINISHED


def test_progress_pays_a_stall_back() -> None:
    p = planner(in_process("Progress"))
    p._ledger(False, 0, 0)
    p._ledger(False, 0, 0)
    p._ledger(True, 3, 0)
    assert p.progress.stalls == 1 and p.progress.replans == 0


def test_batches_that_only_repeat_finished_work_stop_it_as_a_loop() -> None:
    board = in_process("Loop")
    p = planner(board)
    for _ in range(C.LOOP_BATCHES):
        p._ledger(False, 3, 2)
    assert board.state()[1] is Reason.LOOP


def test_the_completion_check_ends_the_run_when_met_and_replans_a_dry_list_when_not() -> None:
    board = in_process("Check")
    p = planner(board)
    p._schedule(board.plan_view(0, 10))  # a dry list never checked: the check is asked
    settle(p)  # nothing pending: the simulator judges it met
    assert board.state()[1] is Reason.DONE and p.progress.checks == 1

    stubborn = in_process("Check stubborn")
    q = planner(stubborn, OfflineLLM(Simulator(stubborn=True)))
    q._schedule(stubborn.plan_view(0, 10))
    settle(q)
    assert stubborn.state()[0] is State.RUNNING and q.progress.checks == 1
    q._schedule(stubborn.plan_view(0, 10))  # still dry after the check: a fresh plan
    settle(q)
    assert q.progress.replans == 1
    assert [t.text for t in stubborn.snapshot().pending] == [
        "Gather requirements",
        "Write the plan",
        "Review the plan",
    ]


def test_garbage_answers_add_nothing_and_acknowledge_the_batch() -> None:
    board = in_process("Garbage")
    p = planner(board, Garbage())
    board.add(["a", "b", "c"], planner=p.name)
    lease = board.lease("w")
    assert not isinstance(lease, State)
    board.complete(lease.task.id, lease.token, "w", "result a")
    p.jobs.create(board.results(), None)
    snap = board.snapshot()
    assert snap.unplanned == 0 and [t.text for t in snap.pending] == ["b", "c"]


def test_new_tasks_wait_for_the_person_at_the_terminal() -> None:
    board = in_process("Approve", approve=True)
    asked: list[list[str]] = []

    def review(tasks: Sequence[Task]) -> tuple[list[int], list[int]]:
        asked.append([t.text for t in tasks])
        return [tasks[0].id], [tasks[1].id]  # the third waits for `coop approve`

    p = planner(board, OfflineLLM(Simulator(stubborn=True)), review)
    tasks = ["Dig the beds", "Plant tomato seedlings", "Water everything at dusk"]
    answer = "\n".join(f"{i}. {t}" for i, t in enumerate(tasks, 1))
    p.jobs._propose(Outcome(Job.REPLAN), answer, None, None)
    p.jobs.ask_person()  # the coordinator's turn: it asks, on the main thread
    assert asked == [tasks]
    snap = board.snapshot()
    assert [t.text for t in snap.pending] == [tasks[0], tasks[2]] and snap.awaiting == 1


def test_a_planner_whose_claim_lapsed_is_fenced_out() -> None:
    clock = Clock()
    settings = RunSettings(llm="offline").validate()
    board = BoardClient.in_process(Board("claimed", "o", settings, "n", clock=clock))
    p = planner(board)
    clock.now += C.DEFAULT_PLANNER_TTL + 1
    assert board.claim_planner("successor") is None
    with pytest.raises(PlannerLost):
        p.jobs._propose(Outcome(Job.REPLAN), "1. Another task", None, None)
    assert board.snapshot().pending == []


class Slow(OfflineLLM):
    """The simulator, thinking `delay` seconds per call and counting calls in flight."""

    def __init__(self, simulator: Simulator, delay: float) -> None:
        super().__init__(simulator)
        self.delay = delay
        self.flying: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        kind = prompt.split("\n", 1)[0]
        with self._lock:
            self.flying[kind] = self.flying.get(kind, 0) + 1
            self.most[kind] = max(self.most.get(kind, 0), self.flying[kind])
            self.calls[kind] = self.calls.get(kind, 0) + 1
        time.sleep(self.delay)
        with self._lock:
            self.flying[kind] -= 1
        return super().complete(prompt, max_tokens)


CREATION = "# coop task creation agent"


def run_whole(board: BoardClient, llm: OfflineLLM, workers: int, slots: int) -> Planner:
    """A planner and `workers` workers of `slots` each, in threads, to the end."""
    memory = InProcessMemory(llm)
    p = planner(board, llm, memory=memory)
    board.add([p.settings.initial_task], planner=p.name)
    stop = threading.Event()
    crew = [
        Worker(Context(board, llm, memory, p.settings, "objective", f"w{i}"), slots, stop)
        for i in range(workers)
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in crew]
    for t in threads:
        t.start()
    p.run()
    for t in threads:
        t.join(10)
    return p


def test_concurrent_creation_calls_plan_every_result_exactly_once(tmp_path: Path) -> None:
    board = in_process("Plan at once", tmp_path, max_tasks=60)
    llm = Slow(Simulator(per_call=3, limit=1000), delay=0.1)
    run_whole(board, llm, workers=4, slots=3)
    snap = board.snapshot()
    assert snap.state is State.FINISHED and snap.reason is Reason.MAX_TASKS
    assert llm.most[CREATION] > 1, "creation calls never overlapped"
    acks = [
        s for e in board.all_events() if e.kind is EventKind.ADDED for s in e.data["planned"] or ()
    ]
    assert len(acks) == len(set(acks)), "a result was planned twice"
    assert len(acks) + snap.unplanned == snap.completed, "a result was skipped"
    assert snap.progress.exact_duplicates + snap.progress.near_duplicates == 0


def test_the_planner_stops_asking_at_the_task_cap() -> None:
    board = in_process("Cap", max_tasks=3)
    llm = Slow(Simulator(per_call=3, limit=1000), delay=0.0)
    p = planner(board, llm)
    board.add(["a", "b", "c"], planner=p.name)
    lease = board.lease("w")
    assert not isinstance(lease, State)
    board.complete(lease.task.id, lease.token, "w", "result a")
    view = board.plan_view(0, 10)
    assert view.room == 0 and [r.task for r in view.results] == ["a"]
    p._queue.extend(view.results)
    p._schedule(view)
    settle(p)
    assert llm.calls.get(CREATION, 0) == 0  # pending + leased + done already make the cap
    after = board.plan_view(0, 10)
    assert after.unplanned == 0 and after.pending == 2  # acknowledged, nothing added


def test_prioritization_beside_creation_loses_and_duplicates_nothing() -> None:
    board = in_process("Order while planning", max_tasks=1000)
    llm = Slow(Simulator(per_call=4, limit=1000), delay=0.05)
    p = planner(board, llm)
    p._pool = DaemonPool(8, "test")
    board.add([f"seed {i}" for i in range(12)], planner=p.name)
    for _ in range(6):  # complete some, so creation has completions to plan from
        lease = board.lease("w")
        assert not isinstance(lease, State)
        board.complete(lease.task.id, lease.token, "w", f"result of {lease.task.text}")
    results = board.results()
    for r in results:
        p._submit(Job.CREATE, p.jobs.create, [r], 4)
        p._submit(Job.PRIORITIZE, p.jobs.prioritize)
    settle(p)
    assert llm.most[CREATION] > 1 and llm.most["# coop prioritization agent"] > 1
    snap = board.snapshot()
    pending = [t.id for t in snap.pending]
    assert len(pending) == len(set(pending)) == 6 + 6 * 4  # six seeds left, 24 new
    assert snap.unplanned == 0 and len(board.task_texts()) == 12 + 24


@pytest.mark.parametrize(
    "broken, ended",
    [
        ("html", "twice in a row"),
        ("no-choices", "twice in a row"),
        ("null-content", "twice in a row"),
        ("no-data", "twice in a row"),
        ("per-token", "twice in a row"),
        ("down", f"planning failed {loop.MAX_FAILURES} times"),
    ],
)
def test_a_model_server_that_keeps_failing_ends_the_objective_as_failed_in_one_line(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, broken: str, ended: str
) -> None:
    """Every planning call (creation, the index's embeddings, the completion check) fails the
    same way: the planner stops the objective as `failed` with the fault's one line — at the
    second reply malformed the same way (no pause mends a server's shape), after retries with
    pauses for a server that is down; the results already in stay."""
    server = make_standin(faults=Faults(broken="" if broken == "down" else broken))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setattr(loop, "RETRY_AFTER_ERROR", 0.01)
    if broken == "down":
        server.stop()
    llm = OpenAILLM(RunSettings(), "planner")
    # no client retries, for the index's embeddings too: the pauses under test are the planner's
    llm.client = llm.client.with_options(max_retries=0)
    board = in_process("Fail politely", max_tasks=50)
    board.add(["seed"])
    lease = board.lease("w")
    assert not isinstance(lease, State)
    board.complete(lease.task.id, lease.token, "w", "the seed's result")
    p = planner(board, llm)  # type: ignore[arg-type]
    p.run()
    state, reason, detail = board.state()
    assert (state, reason) == (State.FINISHED, Reason.FAILED)
    assert ended in detail and server.base_url in detail
    assert "\n" not in detail and [r.text for r in board.results()] == ["the seed's result"]
