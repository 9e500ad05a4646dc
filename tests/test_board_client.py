"""The typed client: the same behaviour over an in-process board and over a real actor."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import ray

from coop import cluster
from coop.board import Board, BoardClient, BoardUnavailable, PlannerLost, Wake
from coop.config import RunSettings
from coop.types import Lease, State
from tests.support.board import in_process
from tests.support.procs import wait_for

SETTINGS = RunSettings(llm="offline", max_tasks=10_000).validate()


def test_in_process_values_are_copies_as_if_they_had_crossed_processes() -> None:
    board = in_process("Copies")
    (task,) = board.add(["original"]).added
    task.text = "changed by the caller"
    snap = board.snapshot()
    snap.pending[0].text = "changed again"
    assert [t.text for t in board.snapshot().pending] == ["original"]


def test_in_process_calls_are_atomic_like_an_actors() -> None:
    board = in_process("Atomic", max_tasks=10_000)
    board.add([f"t{i}" for i in range(400)])
    got: list[int] = []

    def lessee(name: str) -> None:
        while isinstance(lease := board.lease(name), Lease):
            got.append(lease.task.id)
            board.complete(lease.task.id, lease.token, name, "ok")

    threads = [threading.Thread(target=lessee, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(1, 401)) and Counter(got).most_common(1)[0][1] == 1


def test_only_a_client_of_an_actor_can_travel(ray_cluster: object) -> None:
    with pytest.raises(TypeError, match="in-process board"):
        pickle.dumps(in_process("Local"))
    oid = f"travel-{uuid.uuid4().hex[:8]}"
    board = BoardClient.of_actor(
        oid, cluster.named_actor(Board, oid, "board", oid, "o", SETTINGS, "n")
    )
    again = pickle.loads(pickle.dumps(board))
    again.add(["sent through pickle"])
    assert [t.text for t in board.snapshot().pending] == ["sent through pickle"]


def test_the_boards_own_errors_arrive_as_themselves(ray_cluster: object) -> None:
    oid = f"errors-{uuid.uuid4().hex[:8]}"
    board = BoardClient.of_actor(
        oid, cluster.named_actor(Board, oid, "board", oid, "o", SETTINGS, "n")
    )
    assert board.claim_planner("p1") is None
    with pytest.raises(PlannerLost, match="lost its claim") as caught:
        board.add(["x"], planner="p2")
    assert type(caught.value) is PlannerLost  # not Ray's wrapper around it


def test_waiting_for_work_runs_beside_the_boards_calls_and_wakes_at_a_new_task(
    ray_cluster: object,
) -> None:
    oid = f"bell-{uuid.uuid4().hex[:8]}"
    board = BoardClient.of_actor(
        oid, cluster.named_actor(Board, oid, "board", oid, "o", SETTINGS, "n")
    )
    assert board.lease("w") is State.RUNNING  # nothing yet
    seen = board.wait(Wake.WORK, board.bell(Wake.WORK), 0.01)  # the count the board is at
    woke: list[float] = []
    waiting = threading.Thread(target=lambda: woke.append(_timed(board, seen)))
    waiting.start()
    time.sleep(0.5)
    assert not woke  # waiting, and the board answers other calls meanwhile:
    assert board.state()[0] is State.RUNNING
    board.add(["new work"])
    waiting.join(10)
    assert woke and woke[0] < 3  # woken by the task, not at its 8 s timeout
    assert isinstance(board.lease("w"), Lease)


def _timed(board: BoardClient, seen: int) -> float:
    began = time.monotonic()
    assert board.wait(Wake.WORK, seen, 8) != seen
    return time.monotonic() - began


def test_a_board_that_is_gone_is_unavailable_in_one_line(ray_cluster: object) -> None:
    oid = f"gone-{uuid.uuid4().hex[:8]}"
    handle = cluster.named_actor(Board, oid, "board", oid, "o", SETTINGS, "n")
    board = BoardClient.of_actor(oid, handle)
    assert board.state()[0] is State.RUNNING
    ray.kill(handle, no_restart=True)  # asynchronous: calls may still land for a moment

    def unavailable() -> BoardUnavailable | None:
        try:
            board.state()
        except BoardUnavailable as exc:
            return exc
        return None

    caught = wait_for(unavailable, 30, "the board to be gone")
    assert oid in str(caught) and "\n" not in str(caught)


def test_a_journal_view_reads_like_the_board_and_says_it_is_not_live(tmp_path: Path) -> None:
    board = Board("view-0a1b2c3d", "o", SETTINGS, "n", str(tmp_path))
    board.add(["a", "b"])
    view = BoardClient.in_process(
        Board("view-0a1b2c3d", "o", SETTINGS, "reader", str(tmp_path), readonly=True)
    )
    assert not view.live and in_process("Live").live
    assert [t.text for t in view.snapshot().pending] == ["a", "b"]
    assert [e.kind.value for e in view.all_events()] == ["added"]


@ray.remote(num_cpus=0, max_concurrency=4)  # type: ignore[call-overload]  # Ray's stubs lack it
class Silent:
    """A board that never answers: what a board behind a partition looks like from here."""

    def invoke(self, rid: str, method: str, args: object, kwargs: object) -> None:
        time.sleep(120)  # every call comes through `Board.invoke`


def test_a_call_the_board_never_answers_times_out_or_is_given_up(ray_cluster: object) -> None:
    board = BoardClient.of_actor("silent-0a1b2c3d", Silent.remote())  # type: ignore[attr-defined]
    began = time.monotonic()
    with pytest.raises(BoardUnavailable, match=r"no answer within 0.5s"):
        board.claim_planner("p1", timeout=0.5)
    assert time.monotonic() - began < 5

    caught: list[BaseException] = []

    def blocked() -> None:
        try:
            board.state()  # no timeout: it waits until this process gives up on the board
        except BaseException as exc:
            caught.append(exc)

    waiting = threading.Thread(target=blocked)
    waiting.start()
    time.sleep(1.5)
    assert waiting.is_alive() and not caught
    board.give_up("this planner lost its claim")
    waiting.join(5)
    assert not waiting.is_alive()
    assert isinstance(caught[0], BoardUnavailable) and "lost its claim" in str(caught[0])
    with pytest.raises(BoardUnavailable, match="lost its claim"):
        board.state()  # and every call after, at once
