"""A board whose process dies keeps the run going: every mutating call counts once under
Ray's retry, and the planner claim and the leases held come back with a fresh grace period."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from coop import constants as C
from coop import registry
from coop.board import Board, BoardClient, PlannerLost
from coop.config import RunSettings
from coop.journal import journal_path
from coop.simulate import Simulator
from coop.testing.standin import MakeStandIn
from coop.types import (
    Answer,
    Lease,
    Outcome,
    Progress,
    Reason,
    Replays,
    Seat,
    State,
    Step,
    StepKind,
)
from tests.support.board import Clock, crashing_board
from tests.support.procs import STATE_DIR, coop_env, spawn_start, unique, wait_for

SETTINGS = RunSettings(llm="offline", lease_ttl=20, max_tasks=10_000).validate()


def _journaled(root: Path, clock: Clock, restarted: bool = False) -> Board:
    return Board("restart-0a1b2c3d", "o", SETTINGS, "n", str(root), clock, restarted=restarted)


def _leased(board: Board, worker: str) -> Lease:
    got = board.lease(worker)
    assert isinstance(got, Lease), got
    return got


def test_a_restarted_board_gives_back_the_claim_and_leases_for_a_grace_period(
    tmp_path: Path,
) -> None:
    clock = Clock()
    board = _journaled(tmp_path, clock)
    assert board.claim_planner("p") is None
    board.add(["a", "b", "c"], planner="p")
    alive, silent = _leased(board, "alive"), _leased(board, "silent")
    clock.now += 15  # the journal's expiry (1020) is near: the grace starts afresh
    board._journal.close()  # type: ignore[union-attr]  # the process dies

    again = _journaled(tmp_path, clock, restarted=True)
    snap = again.snapshot()
    assert snap.planner == "p"
    assert {(x.task.id, x.token) for x in snap.leased} == {
        (alive.task.id, alive.token),
        (silent.task.id, silent.token),
    }
    assert min(x.ttl for x in snap.leased) == SETTINGS.lease_ttl
    assert again.claim_planner("other") == "p"  # the claim is still p's
    clock.now += C.DEFAULT_PLANNER_TTL - 1
    assert again.claim_planner("p") is None  # the live planner renews
    assert again.add(["d"], planner="p").added
    clock.now += SETTINGS.lease_ttl - C.DEFAULT_PLANNER_TTL + 2  # past the leases' grace, not p's
    assert again.heartbeat("alive", [(alive.task.id, alive.token)]) == [alive.task.id]
    assert {t.id for t in again.snapshot().pending[:2]} == {alive.task.id, silent.task.id}


def test_a_live_worker_completes_under_its_token_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    board = _journaled(tmp_path, clock)
    board.add(["a", "b"])
    alive, silent = _leased(board, "alive"), _leased(board, "silent")
    board._journal.close()  # type: ignore[union-attr]
    again = _journaled(tmp_path, clock, restarted=True)
    clock.now += SETTINGS.lease_ttl - 1
    assert again.heartbeat("alive", [(alive.task.id, alive.token)]) == []
    clock.now += 2  # the silent holder's grace is over; the live one renewed
    assert again.complete(alive.task.id, alive.token, "alive", "kept") is Outcome.ACCEPTED
    assert [t.id for t in again.snapshot().pending] == [silent.task.id]  # requeued
    assert _leased(again, "new").token > silent.token  # the silent holder is fenced out
    assert again.complete(silent.task.id, silent.token, "silent", "x") is Outcome.STALE


def test_a_board_opened_afresh_ends_the_claim_and_leases_of_the_run_before(
    tmp_path: Path,
) -> None:
    """A whole-cluster restart (`coop start --resume`): nobody holds anything any more."""
    clock = Clock()
    board = _journaled(tmp_path, clock)
    board.claim_planner("p")
    board.add(["a", "b"], planner="p")
    held = _leased(board, "w")
    board._journal.close()  # type: ignore[union-attr]
    again = _journaled(tmp_path, clock)
    snap = again.snapshot()
    assert snap.planner is None and not snap.leased
    assert [t.id for t in snap.pending] == [held.task.id, 2]
    assert again.claim_planner("new") is None


# -- every mutating call, its process killed between its commit and its reply ---------------


def _calls(board: BoardClient) -> list[tuple[str, Callable[[], Any]]]:
    """Every mutating method of the board once, in an order that lets each change something
    (each call's name is the method whose process dies after it commits)."""
    held: dict[str, Lease] = {}

    def lease(name: str, worker: str = "w") -> Callable[[], Any]:
        def take() -> Any:
            got = board.lease(worker, ["x"])
            assert isinstance(got, Lease), got
            held[name] = got
            return got.task.id, got.token

        return take

    def tok(name: str) -> tuple[int, int]:
        return held[name].task.id, held[name].token

    def complete_and_lease() -> Any:
        outcome, got = board.complete_and_lease(*tok("second"), "w", "done 2", ["x"])
        assert isinstance(got, Lease), got
        held["third"] = got
        return outcome, got.task.id, got.token

    return [
        ("claim_planner", lambda: board.claim_planner("p")),
        ("add", lambda: board.add(["a", "b", "c", "d", "e"], planner="p", hold=True)),
        ("approve", lambda: board.approve([1, 2, 3, 5])),
        ("drop", lambda: board.drop([4])),
        ("reorder", lambda: board.reorder(board.pending_window(9)[0], [3, 2])),
        ("lease", lease("first")),
        ("heartbeat", lambda: board.heartbeat("w", [tok("first")], Seat(2, ("x",)))),
        ("step", lambda: board.step(*tok("first"), "w", Step(1, StepKind.MODEL, "hi", prompt=9))),
        ("record_usage", lambda: board.record_usage("w", "embedding", 7, 0)),
        ("write_file", lambda: board.write_file(*tok("first"), "w", "f.md", "hi", "k1")),
        ("replayed", lambda: board.replayed("w", tok("first")[0], Replays(tasks=1, steps=1))),
        ("complete", lambda: board.complete(*tok("first"), "w", "done 1")),
        ("second", lease("second")),
        ("complete_and_lease", complete_and_lease),
        ("fail", lambda: board.fail(*tok("third"), "w", "Boom: once")),
        ("fourth", lease("fourth")),
        ("release", lambda: board.release(*tok("fourth"), "w")),
        ("record_progress", lambda: board.record_progress("p", Progress(stalls=1, checks=2))),
        ("record_unreadable", lambda: board.record_unreadable("p", "creation", "??")),
        ("record_answer", lambda: board.record_answer("p", Answer(text="A", cited=[3]))),
        ("stop", lambda: board.stop(Reason.STOPPED, "by test")),
        ("amend", lambda: board.amend("p", {"max_tasks": 99})),
        ("release_planner", lambda: board.release_planner("p")),
    ]


def _outcome(board: BoardClient, replies: list[Any]) -> dict[str, Any]:
    """What the calls did, without the times they did it at."""
    snap = board.snapshot()
    kinds = Counter(e.kind.value for e in board.all_events())
    return {
        "replies": [_timeless(r) for r in replies],
        "events": kinds,
        "pending": [(t.id, t.attempts) for t in snap.pending],
        "results": [(r.task_id, r.text) for r in board.results()],
        "usage": {k: (u.calls, u.prompt_tokens) for k, u in snap.usage.items()},
        "answers": [(a.revision, a.text) for a in board.answers()],
        "progress": (snap.progress.stalls, snap.progress.checks, snap.progress.unreadable),
        "replays": snap.replays,
        "files": snap.files,
        "state": (snap.state, snap.settings.max_tasks),
    }


def _timeless(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_timeless(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _timeless(v) for k, v in vars(value).items() if k not in ("at", "ttl")}
    return value


def test_every_mutating_call_counts_once_when_the_board_dies_before_replying(
    ray_cluster: object, tmp_path: Path
) -> None:
    calls = [name for name, _ in _calls(BoardClient.in_process(Board("x", "o", SETTINGS, "n")))]
    assert set(calls) >= Board.MUTATING, "a mutating method this test does not kill"
    reference = BoardClient.in_process(Board("ref-0a1b2c3d", "o", SETTINGS, "n", str(tmp_path)))
    want = _outcome(reference, [call() for _, call in _calls(reference)])

    def drive(methods: list[str]) -> None:
        """The calls on a board whose process dies once after each of `methods` commits."""
        where = tmp_path / methods[0]
        where.mkdir()
        handle, board, died = crashing_board(SETTINGS, where, methods)
        pids = set()
        replies = []
        for _, call in _calls(board):
            replies.append(call())
            pids.add(ray.get(handle.__ray_call__.remote(lambda self: os.getpid())))
        assert sorted(p.name for p in died.iterdir()) == methods  # each one died
        # a process per death, and the first one too when the first call did not kill it
        assert len(pids) == len(methods) + (calls[0] not in methods)
        assert _outcome(board, replies) == want

    # two boards, each dying on half the methods: a restart is mostly waiting (Ray's notice of
    # the death, a new worker process), so the two halves overlap
    methods = sorted(Board.MUTATING)
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(drive, methods[::2]), pool.submit(drive, methods[1::2])]:
            done.result()


def test_a_planner_whose_claim_a_restart_kept_is_not_lost(tmp_path: Path) -> None:
    clock = Clock()
    board = _journaled(tmp_path, clock)
    board.claim_planner("p")
    board._journal.close()  # type: ignore[union-attr]
    again = _journaled(tmp_path, clock, restarted=True)
    again.record_progress("p", Progress(stalls=1))  # no PlannerLost
    clock.now += C.DEFAULT_PLANNER_TTL + 1  # the planner stayed silent past its grace
    with pytest.raises(PlannerLost, match="now nobody"):
        again.record_progress("p", Progress(stalls=2))


# -- a whole objective whose board is killed three times -------------------------------------


def _board_pid(journal: Path) -> int | None:
    """The process holding `journal` open: the board's (found by its file, not its name: other
    clusters on this machine run boards too)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == str(journal) for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def test_a_run_goes_on_when_its_boards_process_is_killed(
    ray_cluster: Cluster, make_standin: MakeStandIn, tmp_path: Path
) -> None:
    """SIGKILL the board's process three times while 2 workers × 4 in flight are busy: the
    run ends by itself, done, with no live worker's result discarded, nothing lost or done
    twice, and the books what the server counted."""
    server = make_standin(simulator=Simulator(fanout=4, limit=40), latency=0.25)
    objective = unique("Survive the board")
    env = coop_env(ray_cluster, server)
    log = tmp_path / "start.log"
    flags = ("--workers", "2", "--concurrency", "4", "--max-tasks", "100")
    start, oid = spawn_start(objective, *flags, env=env, log=log)
    path = journal_path(STATE_DIR, oid)
    killed: list[int] = []
    for count in (4, 14, 24):
        wait_for(_reached(path, count), 120, f"{count} results", log.read_text)
        pid = wait_for(lambda: _board_pid(path), 30, "the board's process")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        wait_for(lambda: _board_pid(path) not in (None, *killed), 60, "the restarted board")
    assert start.wait(180) == 0, log.read_text()[-3000:]
    out = log.read_text()
    assert "lease lost" not in out and "lost its claim" not in out, out[-3000:]
    assert "finished (done)" in out

    snap = registry.find(oid).snapshot()
    assert (snap.state, snap.reason) == (State.FINISHED, Reason.DONE)
    assert snap.completed == 41 and not snap.pending and not snap.dead  # 1 seed + 40
    assert len(_completed(path)) == 41  # each task completed once (`_completed` checks)
    executed = Counter(c.subject for c in server.calls if c.kind == "execution")
    assert max(executed.values()) == 1, executed.most_common(3)  # no task executed twice
    assert sum(u.tokens for u in snap.usage.values()) == sum(server.usage().values())
    model_calls = [c for c in server.calls if c.kind != "models"]  # not the models listing
    assert sum(u.calls for u in snap.usage.values()) == len(model_calls)
    assert len(set(killed)) == 3


def _reached(path: Path, count: int) -> Callable[[], bool]:
    return lambda: len(_completed(path)) >= count


def _completed(path: Path) -> list[int]:
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT json_extract(data, '$.id') FROM events WHERE kind = 'completed'")
        ids = [tid for (tid,) in rows]
    assert len(ids) == len(set(ids)), "a task was completed twice"
    return ids
