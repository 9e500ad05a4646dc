"""The board's guarantees: directly with a fake clock for many interleavings, and as a real Ray
actor under concurrent callers."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter

import pytest
import ray

from coop import cluster
from coop.board import Board, BoardClient, Wake
from coop.board.actor import NO_ROOM
from coop.config import RunSettings
from coop.types import Lease, Outcome, Reason, Seat, State
from tests.support.board import Clock, drive, leased, make_board


def test_add_rejects_duplicates_in_every_state() -> None:
    board = make_board()
    board.add(["Write intro", "Write body", "Write outro"])
    done = leased(board)
    board.complete(done.task.id, done.token, "w", "ok")
    leased(board)  # "Write body" is now leased
    report = board.add(
        [
            "write INTRO.",
            "  Write   body ",
            "Write outro!",
            "Write conclusion",
            "Write conclusion",
            "",
        ]
    )
    assert [t.text for t in report.added] == ["Write conclusion"]
    assert len(report.duplicates) == 5


def test_lease_on_empty_board_returns_state_never_raises() -> None:
    board = make_board()
    assert board.lease("w") is State.RUNNING
    board.stop()
    assert board.lease("w") is State.FINISHED


def test_ids_are_monotonic_and_survive_reordering() -> None:
    board = make_board()
    ids = [t.id for t in board.add(["a", "b", "c"]).added]
    version, _ = board.pending_window(10)
    board.reorder(version, [3, 1, 2])
    more = [t.id for t in board.add(["d"]).added]
    assert ids == [1, 2, 3] and more == [4]
    assert [t.id for t in board.pending_window(10)[1]] == [3, 1, 2, 4]


def test_expired_lease_requeues_at_the_front_and_stale_completion_is_rejected() -> None:
    clock = Clock()
    board = make_board(clock, lease_ttl=10)
    board.add(["first", "second"])
    first = leased(board, "zombie")
    clock.now += 11
    assert [t.text for t in board.pending_window(10)[1]] == ["first", "second"]
    retry = leased(board, "healthy")
    assert retry.task.id == first.task.id and retry.token > first.token
    assert board.complete(first.task.id, first.token, "zombie", "late") is Outcome.STALE
    assert board.complete(retry.task.id, retry.token, "healthy", "ok") is Outcome.ACCEPTED
    assert board.complete(retry.task.id, retry.token, "healthy", "ok") is Outcome.DUPLICATE
    assert [r.text for r in board.results()] == ["ok"]


def test_completion_after_expiry_but_before_release_is_accepted() -> None:
    clock = Clock()
    board = make_board(clock, lease_ttl=10)
    board.add(["slow"])
    lease = leased(board)
    clock.now += 11  # expired, requeued, but nobody else took it: the work is still good
    assert board.complete(lease.task.id, lease.token, "w", "done") is Outcome.ACCEPTED
    assert board.pending_window(10)[1] == []


def test_heartbeat_keeps_a_lease_alive_and_reports_lost_ones() -> None:
    clock = Clock()
    board = make_board(clock, lease_ttl=10)
    board.add(["a", "b"])
    a, b = leased(board), leased(board)
    for _ in range(5):
        clock.now += 6
        assert board.heartbeat("w", [(a.task.id, a.token)]) == []
    assert board.heartbeat("w", [(b.task.id, b.token)]) == [b.task.id]
    assert board.complete(a.task.id, a.token, "w", "ok") is Outcome.ACCEPTED


def test_fail_requeues_with_growing_delay_then_dead_letters_with_reason() -> None:
    clock = Clock()
    board = make_board(clock, max_attempts=3)
    board.add(["flaky", "steady"])
    outcomes = []
    for i, delay in enumerate([2.0, 4.0, None]):
        lease = leased(board)
        assert lease.task.text == "flaky"
        outcomes.append(board.fail(lease.task.id, lease.token, "w", f"Boom{i}: bad"))
        if delay is None:
            break
        clock.now += delay - 0.1  # not yet: "steady" is leased meanwhile, then nothing
        other = leased(board)
        assert other.task.text == "steady"
        board.release(other.task.id, other.token, "w")
        assert board.pending_window(5)[1][0].text == "steady"
        clock.now += 0.1
        board.reorder(0, [1])  # "flaky" first again
    assert outcomes == [Outcome.REQUEUED, Outcome.REQUEUED, Outcome.DEAD]
    snap = board.snapshot()
    assert [(t.text, t.attempts, t.last_error) for t in snap.dead] == [("flaky", 3, "Boom2: bad")]
    assert leased(board).task.text == "steady"  # the dead task is never leased again
    assert board.lease("w") is State.RUNNING


def test_release_puts_task_back_first_without_counting_an_attempt() -> None:
    board = make_board()
    board.add(["a", "b"])
    lease = leased(board)
    assert board.release(lease.task.id, lease.token, "w") is Outcome.REQUEUED
    again = leased(board)
    assert again.task.id == lease.task.id and again.task.attempts == 0


def test_reorder_merges_drops_and_ignores_invented_tasks() -> None:
    board = make_board()
    board.add(["a", "b", "c", "d"])  # ids 1..4
    version, _ = board.pending_window(10)
    leased(board)  # task 1 leased during the "model call"
    board.add(["e"])  # task 5 added during it
    report = board.reorder(version, [4, 99, 1, 2])  # 99 invented, 3 dropped, 1 now leased
    assert report.stale and report.unknown == 1 and report.moved == 2
    assert [t.id for t in board.pending_window(10)[1]] == [4, 2, 3, 5]


def test_max_tasks_caps_leases_and_stops_the_objective() -> None:
    board = make_board(max_tasks=2)
    board.add(["a", "b", "c"])
    a, b = leased(board), leased(board)
    assert board.lease("w") is State.RUNNING  # two in flight already reach the cap
    board.complete(a.task.id, a.token, "w", "ok")
    board.complete(b.task.id, b.token, "w", "ok")
    assert board.state()[:2] == (State.FINISHED, Reason.MAX_TASKS)


def test_list_runs_dry_only_after_planner_acknowledges_every_completion() -> None:
    board = make_board()
    board.add(["only"])
    lease = leased(board)
    assert not board.plan_view(0, 10).dry  # a task is leased
    board.complete(lease.task.id, lease.token, "w", "ok")
    view = board.plan_view(0, 10)
    assert not view.dry and view.unplanned == 1  # its result is not planned yet
    assert [r.task for r in view.results] == ["only"]
    board.add([], planned=[0])
    view = board.plan_view(0, 10)
    assert view.state is State.RUNNING and view.dry  # dry: the planner decides what next
    assert view.results == [] and view.unplanned == 0
    board.stop(Reason.DONE, "met")
    assert board.state() == (State.FINISHED, Reason.DONE, "met")


def test_unapproved_tasks_are_never_leased() -> None:
    board = make_board()
    held = board.add(["needs a person", "also"], hold=True).added
    assert board.lease("w") is State.RUNNING
    assert [t.text for t in board.awaiting_approval()] == ["needs a person", "also"]
    assert board.approve([held[1].id]) == 1 and board.drop([held[0].id]) == 1
    assert leased(board).task.text == "also"
    assert board.awaiting_approval() == [] and board.lease("w") is State.RUNNING
    assert board.plan_view(0, 10).dry is False  # "also" is leased


def test_token_budget_holds_under_concurrent_leases() -> None:
    """Leases reserve what a task will likely spend; the cap is never passed by more than
    the in-flight work, and the objective stops with the cap as its reason."""
    board = make_board(
        max_tokens=1000,
        max_prompt_tokens=300,
        max_completion_tokens=100,
        max_tasks=1000,
        synthesis_reserve=0,  # the whole cap for tasks: the answer's share is tested apart
    )
    board.add([f"t{i}" for i in range(50)])
    first = [leased(board, f"w{i}") for i in range(5)]  # 5 x 200 estimated = the cap
    assert board.lease("w9") is State.RUNNING  # a sixth would not fit
    for lease in first:
        board.record_usage(lease.worker, "execution", 180, 60)  # each spent 240, not 200
        board.complete(lease.task.id, lease.token, lease.worker, "r")
    snap = board.snapshot()
    assert (snap.state, snap.reason) == (State.FINISHED, Reason.MAX_TOKENS)
    spent = sum(u.tokens for u in snap.usage.values())
    assert 1000 <= spent <= 1000 + 5 * 240


def with_a_reserve() -> Board:
    """A board whose tasks may use 700 of its 1,000 tokens (the rest is the answer's), a
    task estimated at 200 before any has run."""
    return make_board(
        max_tokens=1000,
        max_prompt_tokens=300,
        max_completion_tokens=100,
        max_tasks=100,
        synthesis_reserve=0.3,
    )


def test_the_planner_is_offered_no_room_for_tasks_the_budget_could_not_run() -> None:
    """Room for new tasks ends where the budget's share for tasks does, not only at the task
    cap: creation calls for tasks that could never be leased would spend the answer's reserve
    (a run stopped at --max-tokens lost its answer that way under load)."""
    board = with_a_reserve()
    assert board.plan_view(0, 10).room == 3  # 700 of 1000 for tasks, ~200 each
    board.add(["a"])
    assert board.plan_view(0, 10).room == 2  # the pending one counts
    lease = leased(board)
    board.record_usage(lease.worker, "creation", 301, 0)  # planner calls spend from it too
    assert board.plan_view(0, 10).room == 0
    assert make_board(max_tasks=7).plan_view(0, 10).room == 7  # no budget: the task cap


def test_a_list_run_dry_with_no_room_under_the_tasks_share_ends_at_the_cap() -> None:
    """With nothing left to do and no task of the usual cost left under the tasks' share of
    a cap, the run ends at that cap when the planner next looks, as a lease refused with
    nothing in flight ends it: a completion check then would be paid from the answer's
    reserve (a run ended "done" without its answer that way)."""
    board = with_a_reserve()
    board.add(["a"])
    lease = leased(board)
    board.record_usage(lease.worker, "execution", 200, 100)  # a task costs ~300; 700 for tasks
    board.complete(lease.task.id, lease.token, lease.worker, "r")
    board.add([], planned=[0])  # its completion planned from, nothing added: the list is dry
    view = board.plan_view(1, 10)
    assert view.dry and view.state is State.RUNNING  # 400 left: one more task fits
    board.record_usage("planner", "creation", 150, 0)  # a planner call that added nothing: 250
    view = board.plan_view(1, 10)
    assert view.dry and view.state is State.FINISHED
    assert board.state() == (State.FINISHED, Reason.MAX_TOKENS, NO_ROOM)


def test_cost_budget_uses_the_price_table() -> None:
    board = make_board(
        max_cost=0.001,
        prices=(1.0, 2.0, 0.0),
        max_tasks=1000,
        max_prompt_tokens=400,
        max_completion_tokens=100,
    )
    board.add(["a", "b"])
    lease = leased(board)
    board.record_usage("w", "execution", 500, 300)  # 500 x $1/M + 300 x $2/M = $0.0011
    assert board.state()[:2] == (State.STOPPING, Reason.MAX_COST)
    assert board.lease("w") is State.STOPPING
    board.complete(lease.task.id, lease.token, "w", "kept")  # in-flight work is kept
    assert [r.text for r in board.results()] == ["kept"]
    assert board.snapshot().usage["execution"].cost == pytest.approx(0.0011)


def test_planner_claim_is_exclusive_until_it_expires() -> None:
    clock = Clock()
    board = make_board(clock)
    assert board.claim_planner("p1") is None
    assert board.claim_planner("p2") == "p1"
    clock.now += 60
    assert board.claim_planner("p2") is None


@pytest.mark.parametrize("seed", range(40))
def test_random_interleavings_lose_and_duplicate_nothing(seed: int) -> None:
    """Property: whatever the order of operations, every task ends exactly once as completed
    or dead, and nothing else."""
    clock = Clock()
    board = make_board(clock, lease_ttl=5, max_attempts=3, max_tasks=10_000)
    drive(board, clock, random.Random(seed), 400)
    # drain: finish everything still open
    while True:
        got = board.lease("drain")
        if not isinstance(got, Lease):
            break
        board.complete(got.task.id, got.token, "drain", "drained")
    clock.now += 10
    while isinstance(got := board.lease("drain"), Lease):
        board.complete(got.task.id, got.token, "drain", "drained")
    snap = board.snapshot()
    done_ids = [r.task_id for r in board.results()]
    dead_ids = [t.id for t in snap.dead]
    all_ids = set(board._books.tasks.tasks)
    assert len(done_ids) == len(set(done_ids)), "a task completed twice"
    assert not set(done_ids) & set(dead_ids)
    assert set(done_ids) | set(dead_ids) == all_ids, "a task was lost"
    assert not snap.pending and not snap.leased


# -- the same board as a real Ray actor -------------------------------------------------


@pytest.fixture
def actor(ray_cluster: object) -> BoardClient:
    """A real board actor, through the typed client every role uses."""
    oid = f"test-{uuid.uuid4().hex[:8]}"
    run = RunSettings(llm="offline", lease_ttl=2, max_tasks=10_000).validate()
    handle = cluster.named_actor(Board, oid, "board", oid, "objective", run, "n")
    return BoardClient.of_actor(oid, handle)


def test_named_actor_is_created_once_under_concurrent_openers(ray_cluster: object) -> None:
    oid = f"race-{uuid.uuid4().hex[:8]}"
    run = RunSettings(llm="offline").validate()
    handles = []

    def open_it(i: int) -> None:
        handles.append(cluster.named_actor(Board, oid, "board", oid, "o", run, f"nonce{i}"))

    threads = [threading.Thread(target=open_it, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nonces = {ray.get(h.describe.remote()).nonce for h in handles}
    assert len(nonces) == 1


def test_concurrent_lessees_never_share_a_task(actor: BoardClient) -> None:
    actor.add([f"task {i}" for i in range(300)])

    @ray.remote(num_cpus=0)
    def lessee(board: BoardClient, name: str) -> list[int]:
        mine = []
        while isinstance(got := board.lease(name), Lease):
            mine.append(got.task.id)
            board.complete(got.task.id, got.token, name, "ok")
        return mine

    per_worker = ray.get([lessee.remote(actor, f"w{i}") for i in range(6)])
    every = [tid for ids in per_worker for tid in ids]
    assert sorted(every) == list(range(1, 301))
    assert Counter(every).most_common(1)[0][1] == 1


def test_expired_lease_is_requeued_in_real_time(actor: BoardClient) -> None:
    actor.add(["only task"])
    first = actor.lease("dies")
    assert isinstance(first, Lease) and actor.lease("other") is State.RUNNING
    time.sleep(2.5)  # ttl is 2 s
    second = actor.lease("other")
    assert isinstance(second, Lease) and second.task.id == first.task.id
    assert actor.complete(first.task.id, first.token, "dies", "x") is Outcome.STALE


def test_reorder_during_concurrent_add_lease_complete_loses_nothing(actor: BoardClient) -> None:
    """A planner reorders from stale views while workers lease and complete and tasks are
    added: at the end every added task was completed exactly once."""
    stop = threading.Event()
    actor.add([f"seed {i}" for i in range(50)])

    def planner() -> None:
        rng = random.Random(7)
        n = 0
        while not stop.is_set():
            version, window = actor.pending_window(20)
            ids = [t.id for t in window]
            rng.shuffle(ids)
            actor.add([f"new {n}", f"new {n + 1}"])
            n += 2
            actor.reorder(version, [*ids[:15], 999_999])
            if n >= 200:
                return

    def worker(name: str, done: list[int]) -> None:
        idle = 0
        while idle < 30:
            got = actor.lease(name)
            if not isinstance(got, Lease):
                idle += 1
                time.sleep(0.02)
                continue
            idle = 0
            if actor.complete(got.task.id, got.token, name, "r") is Outcome.ACCEPTED:
                done.append(got.task.id)

    done: list[int] = []
    threads = [threading.Thread(target=planner)] + [
        threading.Thread(target=worker, args=(f"w{i}", done)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    assert sorted(done) == list(range(1, 251))  # 50 seeds + 200 added, each exactly once


def test_complete_and_lease_is_one_step_of_a_busy_worker() -> None:
    board = make_board()
    board.add(["a", "b"])
    first = leased(board)
    outcome, nxt = board.complete_and_lease(first.task.id, first.token, "w", "done")
    assert outcome is Outcome.ACCEPTED and isinstance(nxt, Lease) and nxt.task.text == "b"
    outcome, nxt = board.complete_and_lease(nxt.task.id, nxt.token, "w", "done")
    assert outcome is Outcome.ACCEPTED and nxt is State.RUNNING  # nothing left: the state
    assert board.complete_and_lease(first.task.id, first.token, "w", "again") == (
        Outcome.DUPLICATE,
        State.RUNNING,
    )


def test_a_busy_worker_does_not_starve_an_idle_one() -> None:
    clock = Clock()
    board = make_board(clock)
    board.add(["first"])
    busy = leased(board, "busy")
    assert board.lease("idle") is State.RUNNING  # turned away: nothing to do right now
    board.add(["second"])
    seen = board.wait(Wake.WORK, -1, 0)  # the bell as the idle worker hears it now
    outcome, nxt = board.complete_and_lease(busy.task.id, busy.token, "busy", "done")
    assert outcome is Outcome.ACCEPTED and nxt is State.RUNNING  # left for the idle worker
    assert board.wait(Wake.WORK, seen, 0) != seen  # which the bell wakes
    assert leased(board, "idle").task.text == "second"
    board.add(["third", "fourth"])
    clock.now += 5  # nobody has been turned away lately: chaining is back
    again = leased(board, "idle")
    _, nxt = board.complete_and_lease(again.task.id, again.token, "idle", "done")
    assert isinstance(nxt, Lease) and nxt.task.text == "fourth"


def test_a_task_is_leased_only_to_a_worker_with_what_it_needs() -> None:
    clock = Clock()
    board = make_board(clock)
    board.add(["train the model", "write the notes"], needs=[["GPU"], []])
    board.heartbeat("plain", [], Seat(2, ()))
    assert leased(board, "plain").task.text == "write the notes"
    assert board.lease("plain") is State.RUNNING  # the gpu task is left for someone who can
    view = board.plan_view(0, 10)
    assert view.stuck == 1 and view.ready == 0 and view.capabilities == []
    assert board.snapshot().lacking == {1: ["gpu"]}  # names are lower-case
    board.heartbeat("big", [], Seat(1, ("gpu", "python"), "bubblewrap"))
    assert board.plan_view(0, 10).stuck == 0 and board.snapshot().lacking == {}
    got = board.lease("big", ("gpu", "python"))
    assert isinstance(got, Lease) and got.task.needs == ["gpu"]
    clock.now += 60  # workers not heard from for a lease's time no longer count
    assert board.plan_view(0, 10).capabilities == []


def test_every_board_method_answers_to_its_own_name() -> None:
    """A client sends a method's `__name__` to `Board.invoke`: the calls the board delegates to
    its desks keep theirs, and every call that changes the board is one of them."""
    public = {n for n in dir(Board) if not n.startswith("_") and callable(getattr(Board, n))}
    assert all(getattr(Board, n).__name__ == n for n in public)
    assert public >= Board.MUTATING
