"""The board in-process, driven by a fake clock: what the board's, the journal's, the planner's
and the worker's unit tests share."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coop import cluster
from coop import events as ev
from coop.board import Board, BoardClient
from coop.board.actor import CRASH_ENV
from coop.board.books import Books
from coop.config import RunSettings
from coop.metrics import BoardMetrics
from coop.text import objective_id
from coop.types import Lease


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_board(clock: Clock | None = None, **settings: object) -> Board:
    run = RunSettings(llm="offline", **settings).validate()  # type: ignore[arg-type]
    return Board("obj-12345678", "objective", run, "nonce", clock=clock or Clock())


class Tape:
    """A board's books with no board around them: the desks' unit tests emit into it, and it
    keeps what was emitted (the journal a board would have written) and applies it."""

    def __init__(self, clock: Clock | None = None, **settings: object) -> None:
        run = RunSettings(llm="offline", **settings).validate()  # type: ignore[arg-type]
        self.clock = clock or Clock()
        self.books = Books(run, self.clock, BoardMetrics("obj-12345678"))
        self.events: list[ev.Event] = []
        self.writable = True  # whether the journal's last write succeeded
        self.rings = 0  # times the desks rang the bell (bell.py) themselves

    def ring(self) -> None:
        self.rings += 1

    def emit(self, event: ev.Event) -> None:
        self.events.append(event)
        self.books.apply(event)

    def since(self, mark: int) -> list[str]:
        """The kinds of the events emitted from `mark` on."""
        return [e.KIND.value for e in self.events[mark:]]


def leased(board: Board, worker: str = "w") -> Lease:
    got = board.lease(worker)
    assert isinstance(got, Lease), got
    return got


def drive(board: Board, clock: Clock, rng: random.Random, steps: int) -> None:
    """Random add, lease, expiry, complete, fail, release, reorder from stale views, usage
    and planner acknowledgements: the interleavings real workers and planners produce."""
    held: list[Lease] = []
    snapshot: tuple[int, list[int]] | None = None
    for step in range(steps):
        op = rng.choice("aallccfrxoeup")
        if op == "a":
            board.add([f"task {rng.randrange(60)}" for _ in range(rng.randrange(1, 4))])
        elif op == "l" and isinstance(got := board.lease(f"w{rng.randrange(4)}"), Lease):
            held.append(got)
        elif op in "cfr" and held:
            lease = held.pop(rng.randrange(len(held)))
            tid, token = lease.task.id, lease.token
            if op == "c":
                board.complete(tid, token, lease.worker, f"result {step}")
            elif op == "f":
                board.fail(tid, token, lease.worker, "Err: x")
            else:
                board.release(tid, token, lease.worker)
        elif op == "x":
            clock.now += rng.choice([1, 3, 6])
        elif op == "o":
            if snapshot is None:
                version, window = board.pending_window(20)
                snapshot = (version, [t.id for t in window])
            else:  # reorder with an old view, as a slow model call would
                version, ids = snapshot
                rng.shuffle(ids)
                board.reorder(version, [*ids[: rng.randrange(len(ids) + 1)], 10_000 + step])
                snapshot = None
        elif op == "e":
            ids = [t.id for t in board.pending_window(1000)[1]]
            assert len(ids) == len(set(ids))
        elif op == "u":
            board.record_usage(f"w{rng.randrange(4)}", "execution", rng.randrange(99), 7)
        elif op == "p":
            done = len(board.results())
            board.add([], planned=rng.sample(range(done), min(done, rng.randrange(4))))


def in_process(
    objective: str = "objective", state_dir: Path | None = None, **settings: object
) -> BoardClient:
    """A board in this process behind the same client the roles use on a cluster, on the
    real clock (workers and planners sleep in real time), journaled under `state_dir`."""
    run = RunSettings(llm="offline", **settings).validate()  # type: ignore[arg-type]
    oid = objective_id(objective)
    board = Board(oid, objective, run, "nonce", str(state_dir) if state_dir else None)
    return BoardClient.in_process(board)


def crashing_board(
    settings: RunSettings, state: Path, methods: Iterable[str]
) -> tuple[Any, BoardClient, Path]:
    """A board actor (journaled in `state`) whose process dies once after each of `methods`
    commits and before it replies, as Ray restarts and retries it: its handle, a client, and
    the dir where each death leaves a file named by its method."""
    oid = f"retry-{uuid.uuid4().hex[:8]}"
    died = state / "died"
    died.mkdir()
    options = cluster.restartable(oid, "board") | {
        "max_restarts": -1,
        "max_task_retries": -1,
        "runtime_env": {"env_vars": {CRASH_ENV: f"{died}:{','.join(methods)}"}},
    }
    handle: Any = cluster.actor_class(Board).options(**options)
    handle = handle.remote(oid, "o", settings, "n", str(state))
    return handle, BoardClient.of_actor(oid, handle), died
