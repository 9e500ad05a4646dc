"""The books alone: what each event does to the parts, and the invariants that span them."""

from __future__ import annotations

from coop import events as ev
from coop.board.books import Books
from coop.types import Reason, State
from tests.support.board import Tape


def books_with(*texts: str) -> tuple[Tape, Books]:
    tape = Tape(max_tasks=10)
    tape.emit(ev.Added([(i, t, None, []) for i, t in enumerate(texts, 1)], None, 0, 0, False))
    return tape, tape.books


def test_a_lease_takes_the_task_reserves_budget_and_counts_a_try() -> None:
    tape, b = books_with("a", "b")
    tape.emit(ev.Leased(1, 1, "w", 1010.0, 500, 0.5))
    assert b.tasks.pending == [2] and 1 in b.leases and b.tries == {1: 1}
    assert b.budget._committed() == (500, 0.5)
    assert b.owns(1, 1) and not b.owns(1, 2)
    tape.emit(ev.Completed(1, 1, "w", "done", 1001.0))
    assert [(r.task_id, r.text, r.seq) for r in b.results] == [(1, "done", 0)]
    assert 1 not in b.leases and b.budget._committed() == (0, 0.0)
    assert not b.owns(1, 1), "a finished task is nobody's"
    assert b.roster.stats("w").completed == 1 and b.unplanned() == 1


def test_an_expired_lease_puts_its_task_first_and_a_late_completion_still_lands() -> None:
    tape, b = books_with("a", "b")
    tape.emit(ev.Leased(1, 1, "w", 1010.0, 500, 0.5))
    tape.emit(ev.Expired([1]))
    assert b.tasks.pending == [1, 2] and not b.leases and b.budget._committed() == (0, 0.0)
    tape.emit(ev.Completed(1, 1, "w", "late", 1020.0))  # the desk let it by: newest token
    assert b.tasks.pending == [2] and b.tasks.done == {1: 1}


def test_a_failure_requeues_after_its_delay_or_dead_letters() -> None:
    tape, b = books_with("a", "b")
    tape.emit(ev.Leased(1, 1, "w", 1010.0, 0, 0.0))
    tape.emit(ev.Failed(1, "w", "Err: x", False, 1002.0))
    assert b.tasks.pending == [2, 1] and b.tasks.not_before[1] == 1002.0
    tape.emit(ev.Leased(1, 2, "w", 1010.0, 0, 0.0))
    tape.emit(ev.Failed(1, "w", "Err: y", True, 1004.0))
    assert b.tasks.dead == [1] and b.tasks.tasks[1].attempts == 2
    assert b.roster.stats("w").failed == 2 and b.tries[1] == 2


def test_usage_is_spent_and_counted_for_its_worker() -> None:
    tape, b = books_with()
    tape.emit(ev.Usage("w", "execution", 100, 20, 0.5, None))
    tape.emit(ev.Usage("w", "execution", 50, 0, 0.0, 1, 1, estimated=True))
    assert b.budget.spent()[0] == 170
    assert b.budget.usage["execution"].estimated == 1
    assert b.roster.stats("w").usage.tokens == 170


def test_a_stopping_run_finishes_once_nothing_is_in_flight_and_reopens() -> None:
    tape, b = books_with("a")
    tape.emit(ev.Leased(1, 1, "w", 1010.0, 0, 0.0))
    tape.emit(ev.Stopping(Reason.MAX_TASKS.value, "cap"))
    tape.emit(ev.Stopping(Reason.STOPPED.value, "again"))  # only a running one stops
    assert (b.state, b.reason, b.detail) == (State.STOPPING, Reason.MAX_TASKS, "cap")
    assert not b.finish(), "a task is still in flight"
    tape.emit(ev.Completed(1, 1, "w", "done", 1001.0))
    assert b.finish() and b.state is State.FINISHED
    tape.emit(ev.Progress(stalls=2, replans=1, repeating=1, checks=3))
    tape.emit(ev.Reopened({"max_tasks": 20}, True))
    assert (b.state, b.reason, b.settings.max_tasks) == (State.RUNNING, None, 20)
    assert b.budget.settings is b.settings
    assert (b.progress.stalls, b.progress.replans, b.progress.checks) == (0, 0, 3)


def test_added_counts_what_was_refused_and_acknowledges_what_it_planned_from() -> None:
    tape, b = books_with("a")
    tape.emit(ev.Leased(1, 1, "w", 1010.0, 0, 0.0))
    tape.emit(ev.Completed(1, 1, "w", "done", 1001.0))
    tape.emit(ev.Added([(2, "b", 1, ["gpu"])], [0], 2, 1, True, [("x", "not a task")]))
    assert b.unplanned() == 0 and b.tasks.unapproved == {2}
    assert b.tasks.tasks[2].needs == ["gpu"]
    p = b.progress
    assert (p.exact_duplicates, p.near_duplicates, p.refused) == (2, 1, {"not a task": 1})


def test_the_last_claim_replayed_holds_from_the_time_it_is_replayed() -> None:
    tape, b = books_with()
    tape.emit(ev.Planner("p1", "claimed"))
    assert b.claim.holder(tape.clock.now) == "p1"
    tape.emit(ev.Planner("p1", "released"))
    assert b.claim.owner() is None
