"""The worker's logic in one process, against an in-process board and memory, no Ray: its
slots, failures, a fatal model error, shutdown, a lost lease, a journal that refuses a result.
(The worker as a Ray actor behind `coop join` is tested in test_crew.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from coop import constants as C
from coop.board import Board, BoardClient
from coop.calls import Context
from coop.config import RunSettings
from coop.llm import Completion, LLMFatalError, OfflineLLM
from coop.llm_openai import OpenAILLM
from coop.testing.standin import Faults, MakeStandIn
from coop.types import Lease, Outcome, Reason, State
from coop.worker import Worker, WorkerReport
from tests.support.board import Clock, in_process
from tests.support.memory import InProcessMemory
from tests.support.procs import wait_for


def worker(
    board: BoardClient, llm: OfflineLLM | None = None, concurrency: int = 1, name: str = "w"
) -> tuple[Worker, threading.Event, InProcessMemory]:
    llm = llm or OfflineLLM()
    memory = InProcessMemory(llm)
    stop = threading.Event()
    ctx = Context(board, llm, memory, board.run_settings(), "objective", name)
    return Worker(ctx, concurrency, stop), stop, memory


def run(w: Worker) -> tuple[threading.Thread, list[WorkerReport]]:
    out: list[WorkerReport] = []
    thread = threading.Thread(target=lambda: out.append(w.run()), daemon=True)
    thread.start()
    return thread, out


class Gate(OfflineLLM):
    """A model that holds every execution until released, counting how many wait at once."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.waiting = 0
        self.most = 0
        self._lock = threading.Lock()

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        with self._lock:
            self.waiting += 1
            self.most = max(self.most, self.waiting)
        self.open.wait(30)
        with self._lock:
            self.waiting -= 1
        return super().complete(prompt, max_tokens)


def test_it_executes_remembers_and_leaves_when_the_objective_finishes() -> None:
    board = in_process("Paint the shed")
    board.add(["Buy paint", "Sand the walls", "Paint the walls"])
    w, _, memory = worker(board, concurrency=2)
    thread, out = run(w)
    wait_for(lambda: len(board.results()) == 3, 10, "three results")
    board.stop(Reason.DONE)
    thread.join(10)
    (report,) = out
    assert report.completed == 3 and report.final_state is State.FINISHED
    assert sorted(r.task for r in board.results()) == [
        "Buy paint",
        "Paint the walls",
        "Sand the walls",
    ]
    assert sorted(memory.store.task_ids()) == [1, 2, 3]
    assert board.snapshot().usage["execution"].calls == 3


def test_it_keeps_concurrency_tasks_in_flight() -> None:
    board = in_process("Dig the beds")
    board.add([f"Dig bed {i}" for i in range(6)])
    llm = Gate()
    w, _, _ = worker(board, llm, concurrency=3)
    thread, _ = run(w)
    wait_for(lambda: llm.waiting == 3, 10, "three executions at once")
    assert len(board.snapshot().leased) == 3
    llm.open.set()
    wait_for(lambda: len(board.results()) == 6, 10, "every result")
    board.stop(Reason.DONE)
    thread.join(10)
    assert llm.most == 3


def test_a_failing_task_is_requeued_then_dead_lettered_with_its_error() -> None:
    class Flaky(OfflineLLM):
        def complete(self, prompt: str, max_tokens: int) -> Completion:
            if "Your task: Fix the roof" in prompt:
                raise ConnectionError("the roof model is down")
            return super().complete(prompt, max_tokens)

    board = in_process("Repair the barn", max_attempts=3, retry_delay=0.05)
    board.add(["Fix the roof", "Fix the door"])
    w, _, _ = worker(board, Flaky())
    thread, out = run(w)
    wait_for(lambda: board.snapshot().dead, 10, "a dead letter")
    board.stop(Reason.DONE)
    thread.join(10)
    (dead,) = board.snapshot().dead
    assert dead.text == "Fix the roof" and dead.attempts == 3
    assert dead.last_error == "ConnectionError: the roof model is down"
    assert [r.task for r in board.results()] == ["Fix the door"]
    assert out[0].failed == 3 and out[0].completed == 1


def test_a_fatal_model_error_stops_the_objective_and_gives_the_task_back() -> None:
    class Refused(OfflineLLM):
        def complete(self, prompt: str, max_tokens: int) -> Completion:
            raise LLMFatalError("model server refused (401 AuthenticationError): bad key")

    board = in_process("Spend nothing")
    board.add(["Call the model"])
    w, _, _ = worker(board, Refused())
    thread, out = run(w)
    thread.join(10)
    snap = board.snapshot()
    assert snap.state is State.FINISHED and snap.reason is Reason.FAILED
    assert "401" in snap.detail and [t.text for t in snap.pending] == ["Call the model"]
    assert out[0].fatal and out[0].completed == 0


def test_stop_finishes_what_is_in_flight_and_leases_no_more() -> None:
    board = in_process("Stack the wood")
    board.add(["Stack row 1", "Stack row 2", "Stack row 3"])
    llm = Gate()
    w, stop, _ = worker(board, llm, concurrency=2)
    thread, out = run(w)
    wait_for(lambda: llm.waiting == 2, 10, "two executions")
    stop.set()
    llm.open.set()
    thread.join(10)
    assert not thread.is_alive() and out[0].completed == 2
    snap = board.snapshot()
    assert snap.completed == 2 and not snap.leased and len(snap.pending) == 1
    assert snap.state is State.RUNNING  # a worker leaving does not end the objective


def test_a_task_still_running_after_the_grace_period_is_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(C, "SHUTDOWN_GRACE", 0.3)
    board = in_process("Wait forever")
    board.add(["Never finish", "Next"])
    llm = Gate()
    w, stop, _ = worker(board, llm)
    thread, _ = run(w)
    wait_for(lambda: llm.waiting == 1, 10, "an execution")
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    snap = board.snapshot()
    assert not snap.leased and [t.text for t in snap.pending] == ["Never finish", "Next"]
    llm.open.set()  # a late answer, while nobody else took the task, is still good work
    wait_for(lambda: board.results(), 10, "the late result")
    assert [r.task for r in board.results()] == ["Never finish"]
    assert [t.text for t in board.snapshot().pending] == ["Next"]


def test_a_result_under_a_lost_lease_is_discarded() -> None:
    clock = Clock()
    settings = RunSettings(llm="offline", lease_ttl=10).validate()
    board = BoardClient.in_process(Board("lost-lease", "o", settings, "n", clock=clock))
    board.add(["Slow task"])

    class Slow(OfflineLLM):
        """While it thinks, its lease expires and another worker finishes the task."""

        def complete(self, prompt: str, max_tokens: int) -> Completion:
            clock.now += 11
            rival = board.lease("rival")
            assert isinstance(rival, Lease)
            board.complete(rival.task.id, rival.token, "rival", "the rival's result")
            return super().complete(prompt, max_tokens)

    w, _, _ = worker(board, Slow())
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    w._work(lease)
    assert [(r.worker, r.text) for r in board.results()] == [("rival", "the rival's result")]
    assert w.report.completed == 0
    assert board.complete(lease.task.id, lease.token, "w", "late") is Outcome.STALE


def test_a_result_the_journal_cannot_take_is_kept_and_retried(tmp_path: Path) -> None:
    """The disk fills while a worker holds a result: it keeps the task, retries, and the
    result lands once there is space; no new lease is handed out meanwhile."""
    settings = RunSettings(llm="offline", lease_ttl=30).validate()
    plain = Board("fill-the-disk", "Fill the disk", settings, "n", str(tmp_path))
    board = BoardClient.in_process(plain)
    board.add(["only task", "second task"])

    class Verbose(OfflineLLM):  # a long answer: it needs pages the full journal lacks
        def complete(self, prompt: str, max_tokens: int) -> Completion:
            return Completion("a long result " * 1500, 10, 10)

    w, _, _ = worker(board, Verbose(), name="w-full")
    assert plain._journal is not None
    db = plain._journal._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")  # full: the next write fails SQLITE_FULL
    lease = board.lease("w-full")  # a lease needs no new page yet...
    assert isinstance(lease, Lease)
    runner = threading.Thread(target=w._work, args=(lease,))
    runner.start()
    time.sleep(1.5)  # ...but the result does: the worker is retrying it
    assert runner.is_alive() and board.results() == []
    assert board.lease("someone") is State.RUNNING  # no new work meanwhile
    db.execute("PRAGMA max_page_count = 1073741823")
    runner.join(60)
    assert [r.task for r in board.results()] == ["only task"]
    assert w.report.completed == 1


@pytest.mark.parametrize(
    "faults, needle",
    [
        (Faults(broken="html"), "MalformedReply"),
        (Faults(broken="no-choices"), "no choices"),
        (Faults(broken="null-content"), "no content"),
        (Faults(broken="no-data"), "0 embeddings for 1 inputs"),
        (Faults(rate_slow=1.0, slow_seconds=3.0), "APITimeoutError"),
        (None, "APIConnectionError"),  # nothing listens
    ],
)
def test_a_model_fault_fails_the_attempt_and_the_task_is_requeued_then_dead_lettered(
    make_standin: MakeStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    faults: Faults | None,
    needle: str,
) -> None:
    """Against a real HTTP server that misbehaves: each attempt fails with the fault's one
    line naming the server, the task comes back, and after its attempts it is dead-lettered;
    the worker itself never crashes."""
    server = make_standin(faults=faults or Faults())
    if faults is None:
        server.stop()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    board = in_process(
        "Survive the model", max_attempts=2, model_timeout=1.0, context_k=1, retry_delay=0.05
    )
    llm = OpenAILLM(board.run_settings(), "w")
    # no client retries, for embeddings too: each attempt fails on the fault itself
    llm.client = llm.client.with_options(max_retries=0)
    board.add(["Ask the broken model"])
    w, _, _ = worker(board, llm)  # type: ignore[arg-type]
    thread, out = run(w)
    wait_for(lambda: board.snapshot().dead, 30, "the dead letter")
    board.stop(Reason.DONE)
    thread.join(10)
    (dead,) = board.snapshot().dead
    assert dead.attempts == 2 and needle in dead.last_error and server.base_url in dead.last_error
    assert "\n" not in dead.last_error and out[0].failed == 2 and not out[0].fatal
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged
