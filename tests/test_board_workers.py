"""The workers' side alone: which task a lease gives, what a completion, a failure, a step and a
workspace write decide, and how spending is charged and stops the run at a cap."""

from __future__ import annotations

from typing import Any

from coop import constants as C
from coop import events as ev
from coop.board.workers import WorkerDesk
from coop.types import Lease, Outcome, Reason, Seat, State, Step, StepKind
from tests.support.board import Tape


def desk(*texts: str, **settings: Any) -> tuple[Tape, WorkerDesk]:
    tape = Tape(**settings)
    rows: list[tuple[int, str, int | None, list[str]]] = [
        (i, t, None, ["gpu"] if "gpu" in t else []) for i, t in enumerate(texts, 1)
    ]
    tape.emit(ev.Added(rows, None, 0, 0, False))
    return tape, WorkerDesk(tape.books, tape.emit, lambda: tape.writable, tape.ring)


def lease(workers: WorkerDesk, worker: str = "w", caps: tuple[str, ...] = ()) -> Lease:
    got = workers.lease(worker, caps)
    assert isinstance(got, Lease), got
    return got


def test_a_lease_is_the_first_task_the_worker_can_do_and_reserves_its_estimate() -> None:
    tape, workers = desk("on gpu", "plain")
    first = lease(workers)
    assert first.task.id == 2 and first.attempt == 1 and first.steps == ()
    leased = tape.events[-1]
    assert isinstance(leased, ev.Leased) and (leased.tokens, leased.cost) == (
        tape.books.budget.estimate()
    )
    assert workers.lease("w") is State.RUNNING  # nothing it can do
    assert lease(workers, "v", ("gpu",)).task.id == 1


def test_a_busy_worker_leaves_the_next_task_to_one_that_recently_found_none() -> None:
    tape, workers = desk("a", "b", "on gpu", "c")
    a = lease(workers)
    done, b = workers.complete_and_lease(a.task.id, a.token, "w", "result")
    assert done is Outcome.ACCEPTED and isinstance(b, Lease) and b.task.id == 2
    c = lease(workers, "v")
    assert workers.lease("x") is State.RUNNING, "nothing x can do"
    done, none = workers.complete_and_lease(b.task.id, b.token, "w", "result")
    assert done is Outcome.ACCEPTED and none is State.RUNNING, "left for x"
    tape.clock.now += C.POLL_MAX * 2 + 1
    done, d = workers.complete_and_lease(c.task.id, c.token, "v", "result", ("gpu",))
    assert isinstance(d, Lease) and d.task.id == 3


def test_no_lease_while_the_journal_cannot_be_written_or_past_the_task_cap() -> None:
    tape, workers = desk("a", "b", max_tasks=1)
    mark = len(tape.events)
    tape.writable = False
    assert workers.lease("w") is State.RUNNING
    assert tape.since(mark) == []
    tape.writable = True
    lease(workers)
    assert workers.lease("w") is State.RUNNING  # one in flight is the cap
    assert tape.since(mark) == ["leased"]


def test_a_lease_that_would_break_a_cap_stops_the_run_only_with_nothing_in_flight() -> None:
    tape, workers = desk("a", "b", "c", max_tokens=1_000_000)
    tape.books.budget.reserve(99, 10**6, 0.0)  # as if a task in flight reserved it all
    tape.books.leases.grant(99, 1, "x", tape.clock.now + 60)
    assert workers.lease("w") is State.RUNNING
    tape.books.budget.unreserve(99)
    tape.books.leases.end(99)
    tape.emit(ev.Usage("x", "execution", 10**6, 0, 0.0, None))
    assert workers.lease("w") is State.FINISHED  # nothing was in flight
    assert tape.books.reason is Reason.MAX_TOKENS


def test_a_completion_counts_once_and_a_stale_one_still_pays_for_its_calls() -> None:
    tape, workers = desk("a", "b", max_tasks=2)
    got = lease(workers)
    model = Step(1, StepKind.MODEL, "answer", prompt=100, completion=10)
    done = workers.complete(got.task.id, got.token, "w", "result", "", model, (7,))
    assert done is Outcome.ACCEPTED
    mark = len(tape.events)
    again = workers.complete(got.task.id, got.token, "w", "result", "", model, (7,))
    assert again is Outcome.DUPLICATE and tape.since(mark) == []
    other = lease(workers)
    tape.clock.now += tape.books.settings.lease_ttl  # expires; a new lease fences it out
    newer = lease(workers, "v")
    assert newer.token > other.token
    mark = len(tape.events)
    stale = workers.complete(other.task.id, other.token, "w", "late", "", model, (3,))
    assert stale is Outcome.STALE
    assert tape.since(mark) == ["usage", "usage"], "its calls were paid, its step not kept"
    assert workers.complete(newer.task.id, newer.token, "v", "r", "", None, ()) is Outcome.ACCEPTED
    assert tape.books.state is State.FINISHED and tape.books.reason is Reason.MAX_TASKS


def test_failures_requeue_after_a_growing_delay_then_dead_letter() -> None:
    tape, workers = desk("a", max_attempts=3, retry_delay=3.5)  # --retry-delay 3.5
    got = lease(workers)
    assert workers.fail(got.task.id, got.token, "w", "Err: x" * 200) is Outcome.REQUEUED
    failed = tape.events[-1]
    assert isinstance(failed, ev.Failed)
    assert failed.retry_at == tape.clock.now + 3.5 and len(failed.error) == 500
    tape.clock.now += 3.5
    again = lease(workers)
    assert again.attempt == 2
    assert workers.fail(again.task.id, again.token, "w", "Err: y") is Outcome.REQUEUED
    failed = tape.events[-1]
    assert isinstance(failed, ev.Failed) and failed.retry_at == tape.clock.now + 7.0  # doubled
    tape.clock.now += 7.0
    last = lease(workers)
    assert workers.fail(last.task.id, last.token, "w", "Err: z") is Outcome.DEAD
    assert tape.books.tasks.dead == [1]


def test_a_released_task_goes_first_and_a_stale_release_is_refused() -> None:
    tape, workers = desk("a", "b")
    got = lease(workers)
    assert workers.release(got.task.id, got.token + 1, "w") is Outcome.STALE
    assert workers.release(got.task.id, got.token, "w") is Outcome.REQUEUED
    assert tape.books.tasks.pending == [1, 2]


def test_steps_are_kept_once_by_the_holder_and_a_granted_call_is_in_flight() -> None:
    tape, workers = desk("a", tpm=1000)
    got = lease(workers)
    tid, token = got.task.id, got.token
    assert workers.step(tid, token, "w", None, 400, "") == (True, 0.0)
    assert workers.step(tid, token, "w", None, 900, "")[1] > 0, "over the tokens per minute"
    model = Step(1, StepKind.MODEL, "call it", prompt=400, completion=5)
    mark = len(tape.events)
    assert workers.step(tid, token, "w", model, 0, "shell") == (True, 0.0)
    assert tape.since(mark) == ["usage", "step", "started"]
    workers._record_step(tid, token, "w", model, True)  # a retried record: paid, not kept again
    assert tape.since(mark + 3) == ["usage"]
    assert workers.steps(tid) == ([model], {2: "shell"})
    assert tape.books.ledger.landed(tid) is None, "its call in flight landed with its step"
    assert workers.step(tid, token + 1, "w", None, 10, "") == (False, 0.0)


def test_heartbeats_renew_the_leases_still_held_and_seat_the_worker() -> None:
    tape, workers = desk("a")
    got = lease(workers)
    lost = workers.heartbeat("w", [(got.task.id, got.token), (9, 1)], Seat(2, ("gpu",)))
    assert lost == [9]
    assert tape.books.roster.stats("w").slots == 2


def test_a_workspace_write_is_the_holders_and_applied_once_per_key() -> None:
    _, workers = desk("a")
    got = lease(workers)
    tid, token = got.task.id, got.token
    assert workers.write_file(tid, token, "w", "./notes//a.md", "hi", "k") == (
        True,
        "wrote notes/a.md (2 bytes)",
    )
    ok, said = workers.write_file(tid, token, "w", "notes/a.md", "other", "k")
    assert ok and "already written" in said and workers.read_file("notes/a.md") == "hi"
    assert not workers.write_file(tid, token, "w", "../x", "x", "k2")[0]
    assert not workers.write_file(tid, token + 1, "w", "b.md", "x", "k3")[0]
    assert workers.read_file("../x") is None


def test_embeddings_are_settled_with_the_step_they_came_before_even_under_a_lost_lease() -> None:
    tape, workers = desk("a")
    got = lease(workers)
    mark = len(tape.events)
    assert workers.step(got.task.id, got.token, "w", None, 0, "", (4, 5)) == (True, 0.0)
    assert workers.step(got.task.id, got.token + 1, "w", None, 0, "", (6,)) == (False, 0.0)
    assert tape.since(mark) == ["usage"] * 3
    assert tape.books.budget.usage["embedding"].tokens == 15


def test_a_task_left_for_an_idle_worker_rings_the_bell_for_it() -> None:
    tape, workers = desk("first")
    busy = lease(workers, "busy")
    assert workers.lease("idle") is State.RUNNING  # turned away: nothing to do right now
    tape.emit(ev.Added([(2, "second", None, [])], None, 0, 0, False))
    rings = tape.rings
    outcome, nxt = workers.complete_and_lease(busy.task.id, busy.token, "busy", "done")
    assert (outcome, nxt) == (Outcome.ACCEPTED, State.RUNNING)  # left for the idle worker
    assert tape.rings == rings + 1  # which the bell wakes
    again = lease(workers, "idle")
    tape.clock.now += 5  # nobody turned away lately: the next comes with the completion
    tape.emit(ev.Added([(3, "third", None, [])], None, 0, 0, False))
    outcome, nxt = workers.complete_and_lease(again.task.id, again.token, "idle", "done")
    assert isinstance(nxt, Lease) and tape.rings == rings + 1
