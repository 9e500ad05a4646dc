"""The planner's and the worker's races, each made to happen: a fresh plan on resume screened
by a complete near-duplicate index; the index's own lock; the worker's slot threads' counts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from coop import constants as C
from coop.calls import Context
from coop.llm import Completion, Embeddings, OfflineLLM
from coop.planner.index import TaskIndex
from coop.planner.loop import Planner
from coop.simulate import Simulator, lexical_embedding
from coop.types import Lease, Reason, Task
from coop.worker import Worker, WorkerReport
from tests.support.board import in_process
from tests.support.memory import InProcessMemory
from tests.support.procs import wait_for

KNOWN = ["Dig the raised garden beds", "Water the tomato seedlings", "Stake the climbing beans"]
REWORDED = "Raised garden beds: dig the"  # a near-duplicate of the first, not an exact one


class SlowIndexing(OfflineLLM):
    """Embeds the board's tasks slowly (the index a resumed planner builds of every task),
    and proposes a rewording of a known task as its fresh plan."""

    def embed(self, texts: list[str]) -> Embeddings:
        if len(texts) > 1:
            time.sleep(0.5)
        return super().embed(texts)

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        if prompt.startswith(C.PROMPT_MARKERS["replan"]):
            return Completion(f"1. {REWORDED}", 10, 10)
        return super().complete(prompt, max_tokens)


def test_a_fresh_plan_on_resume_is_screened_by_the_whole_index() -> None:
    """Before the fix the fresh plan was submitted before the index was built: its rewording
    of a known task met an empty index and was added."""
    board = in_process("Resume with a fresh plan")
    board.add(KNOWN)
    llm = SlowIndexing()
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "objective", "planner")
    planner = Planner(ctx, threading.Event(), None)
    planner.claim(wait=False)
    ran = threading.Thread(target=planner.run, kwargs={"fresh_plan": True}, daemon=True)
    ran.start()
    wait_for(lambda: board.snapshot().progress.stalls, 20, "the fresh plan's batch")
    board.stop(Reason.STOPPED)
    ran.join(20)
    planner.release()
    texts = [t.text for t in board.snapshot().pending]
    assert REWORDED not in texts, texts
    assert board.snapshot().progress.near_duplicates == 1


def test_the_index_loses_no_add_to_a_concurrent_one() -> None:
    """Adds from several threads, each slowed between reading and writing the matrix by the
    model call: every text is kept."""

    class Slow(OfflineLLM):
        def embed(self, texts: list[str]) -> Embeddings:
            time.sleep(0.01)
            return Embeddings([lexical_embedding(t) for t in texts], 1)

    index = TaskIndex(Slow(), lambda _: None)
    texts = [f"task number {i} about topic {i * 7}" for i in range(40)]
    threads = [threading.Thread(target=index.add, args=([t],)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert index.vectors.shape[0] == len(texts) and len(index.known) == len(texts)


class SlowCounts(WorkerReport):
    """A report whose counters take a while to read: two slot threads counting at once
    without a lock lose one of their counts."""

    def __getattribute__(self, name: str) -> object:
        value = super().__getattribute__(name)
        if name in ("completed", "failed"):
            time.sleep(0.01)  # between reading the count and writing it back
        return value


def test_slot_threads_count_every_completion_and_failure() -> None:
    board = in_process("Count them all", max_tasks=100, max_attempts=1)
    board.add([f"task {i}" for i in range(24)] + [f"fail {i}" for i in range(8)])
    llm = Failing()
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "objective", "w")
    worker = Worker(ctx, 8, threading.Event())
    worker.report = SlowCounts(worker.name)
    out: list[WorkerReport] = []
    ran = threading.Thread(target=lambda: out.append(worker.run()), daemon=True)
    ran.start()
    wait_for(lambda: len(board.results()) + len(board.snapshot().dead) == 32, 30, "every task")
    board.stop(Reason.DONE)
    ran.join(20)
    assert (out[0].completed, out[0].failed) == (24, 8)


class Failing(OfflineLLM):
    def complete(self, prompt: str, max_tokens: int) -> Completion:
        if "fail " in prompt:
            raise ValueError("this one fails")
        return super().complete(prompt, max_tokens)


HANGS = """
import threading, time
from coop.calls import Context
from coop.llm import OfflineLLM
from coop.planner.loop import Planner
from tests.support.board import in_process
from tests.support.memory import InProcessMemory

class Stuck(OfflineLLM):
    def complete(self, prompt, max_tokens):
        threading.Event().wait()  # a model call that never returns

board = in_process("Stop while a job is stuck")
board.add(["seed"])
lease = board.lease("w")
board.complete(lease.task.id, lease.token, "w", "a result to plan from")
llm = Stuck()
ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "objective", "planner")
stop = threading.Event()
planner = Planner(ctx, stop, None)
planner.claim(wait=False)
threading.Thread(target=planner.run, daemon=True).start()
time.sleep(1.5)  # its creation job is stuck in the model call
print("leaving", flush=True)
"""


def test_a_stuck_planner_job_does_not_keep_the_process_alive() -> None:
    """Before the fix the pool's threads were joined at interpreter exit: the process hung
    on the stuck job for good."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", HANGS], env=env, capture_output=True, text=True, timeout=30
    )
    assert "leaving" in done.stdout, done.stderr[-2000:]
    assert time.monotonic() - began < 30


def test_the_approval_prompt_is_asked_on_the_main_thread_outside_the_commit_lock() -> None:
    """Before the fix a creation job asked the person on its pool thread, holding the commit
    lock: every other creation waited on the person, and the prompt read a terminal from a
    thread that Ctrl-C does not reach."""
    board = in_process("Ask me here", approve=True)
    board.add(["seed"])
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    board.complete(lease.task.id, lease.token, "w", "a result to plan from")
    llm = OfflineLLM(Simulator(stubborn=True))
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "objective", "planner")
    seen: list[tuple[bool, bool]] = []

    def review(tasks: Sequence[Task]) -> tuple[list[int], list[int]]:
        seen.append((threading.current_thread() is threading.main_thread(), commit.locked()))
        board.stop(Reason.STOPPED)
        return [t.id for t in tasks], []

    planner = Planner(ctx, threading.Event(), review)
    commit = planner.jobs._commit
    planner.claim(wait=False)
    try:
        planner.run()
    finally:
        planner.release()
    assert seen and all(main and not locked for main, locked in seen), seen
