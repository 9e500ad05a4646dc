"""The planner's side alone: one planner at a time, batches that land with the completions
they were planned from, reorders merged into the current list, amended caps, answers, and the
view a planner's turn reads."""

from __future__ import annotations

from typing import Any

import pytest

from coop import constants as C
from coop import events as ev
from coop.board.claim import PlannerLost
from coop.board.desk import NO_ROOM
from coop.board.planning import PlannerDesk
from coop.types import Answer, Progress, Reason, State
from tests.support.board import Tape


def desk(**settings: Any) -> tuple[Tape, PlannerDesk]:
    tape = Tape(**settings)
    planning = PlannerDesk(tape.books, tape.emit)
    assert planning.claim_planner("p") is None
    return tape, planning


def add(planning: PlannerDesk, *texts: str, planned: list[int] | None = None) -> list[int]:
    report = planning.add(texts, planner="p", planned=planned)
    return [t.id for t in report.added]


def complete(tape: Tape, tid: int) -> None:
    tape.emit(ev.Leased(tid, tid, "w", tape.clock.now + 30, 0, 0.0))
    tape.emit(ev.Completed(tid, tid, "w", f"result {tid}", tape.clock.now))


def test_one_planner_at_a_time_and_only_its_claim_is_journaled() -> None:
    tape, planning = desk()
    mark = len(tape.events)
    assert planning.claim_planner("p") is None  # a renewal: not journaled
    assert planning.claim_planner("q") == "p"
    with pytest.raises(PlannerLost):
        planning.add(["x"], planner="q")
    planning.release_planner("q")  # not its claim: nothing
    assert tape.since(mark) == []
    tape.clock.now += C.DEFAULT_PLANNER_TTL
    assert planning.claim_planner("q") is None and tape.since(mark) == ["planner"]
    with pytest.raises(PlannerLost):
        planning.record_progress("p", Progress())


def test_a_batch_lands_with_the_completions_it_planned_from_in_one_event() -> None:
    tape, planning = desk()
    assert add(planning, "a", "b") == [1, 2]
    complete(tape, 1)
    complete(tape, 2)
    mark = len(tape.events)
    report = planning.add(
        ["c", "A", "c"],
        1,
        planner="p",
        planned=[0, 7],
        near_duplicates=2,
        refused=[("?", "no task")],
    )
    assert [t.text for t in report.added] == ["c"] and report.duplicates == ["A", "c"]
    assert tape.since(mark) == ["added"]
    added = tape.events[-1]
    assert isinstance(added, ev.Added) and added.planned == [0], "7 is no completion"
    assert (added.exact, added.near, added.refused) == (2, 2, [("?", "no task")])
    assert add(planning, planned=[0]) == [] and tape.since(mark) == ["added"], "acked once"


def test_a_reorder_merges_into_the_current_list_and_says_when_its_view_was_old() -> None:
    tape, planning = desk()
    add(planning, "a", "b", "c")
    version = tape.books.tasks.version
    report = planning.reorder(version, [3, 99, 3])
    assert (report.moved, report.unknown, report.stale) == (1, 1, False)
    assert tape.books.tasks.pending == [3, 1, 2]
    add(planning, "d")
    assert planning.reorder(version, [2]).stale
    assert tape.books.tasks.pending == [2, 3, 1, 4]


def test_held_tasks_wait_for_a_person() -> None:
    tape, planning = desk()
    planning.add(["a", "b", "c"], planner="p", hold=True)
    assert [t.id for t in planning.awaiting_approval()] == [1, 2, 3]
    assert planning.approve([1, 9]) == 1 and planning.drop([2]) == 1
    assert planning.approve([2]) == 0, "dropped"
    assert [t.id for t in planning.awaiting_approval()] == [3]
    assert tape.books.tasks.pending == [1, 3]


def test_amended_caps_reopen_a_finished_objective_and_answers_are_revisions() -> None:
    tape, planning = desk(max_tasks=1)
    assert not planning.amend("p", {"llm": "other"}), "not a cap"
    tape.emit(ev.Stopping("max-tasks", ""))
    planning.settle()
    assert tape.books.state is State.FINISHED
    assert planning.amend("p", {"max_tasks": 5})
    # mypy keeps the narrowing of the state across the call that changed it
    assert tape.books.state is State.RUNNING  # type: ignore[comparison-overlap]
    assert tape.books.settings.max_tasks == 5
    first = planning.record_answer("p", Answer(0, "one"))
    second = planning.record_answer("p", Answer(0, "two"))
    assert (first.revision, second.revision) == (1, 2)
    assert second.at == tape.clock.now


def test_a_turns_view_holds_the_unplanned_completions_and_the_room_left() -> None:
    tape, planning = desk(max_tasks=5)
    add(planning, "a", "b", "c")
    complete(tape, 1)
    view = planning.plan_view(0, 10)
    assert [r.task_id for r in view.results] == [1] and view.unplanned == 1
    assert (view.pending, view.leased, view.completed) == (2, 0, 1)
    assert view.room == 2 and view.head == [2, 3] and not view.dry
    add(planning, planned=[0])
    assert planning.plan_view(0, 10).results == []


def test_the_planners_reads_the_window_the_texts_and_what_the_answer_may_cost() -> None:
    tape, planning = desk(max_tokens=1000)
    add(planning, "a", "b", "c")
    version, window = planning.pending_window(2)
    assert version == tape.books.tasks.version and [t.text for t in window] == ["a", "b"]
    window[0].text = "changed"  # a copy
    assert planning.task_texts() == [(1, "a"), (2, "b"), (3, "c")]
    assert planning.budget_short(400, 500) == ""
    assert "--max-tokens 1000" in planning.budget_short(900, 200)


def test_a_dry_list_with_no_room_under_a_cap_ends_the_run_at_that_cap() -> None:
    tape, planning = desk(max_tokens=100_000)
    assert planning.plan_view(0, 10).state is State.RUNNING  # dry, with room
    tape.emit(ev.Usage("w", "execution", 99_000, 0, 0.0, None))
    view = planning.plan_view(0, 10)
    assert view.dry and view.state is State.FINISHED
    assert tape.books.reason is Reason.MAX_TOKENS and tape.books.detail == NO_ROOM


def test_a_dry_list_ends_at_a_cap_when_the_next_planner_call_would_not_fit() -> None:
    """A task would still fit, but going on from a dry list takes a planner call first (a
    check, a plan): when that call would break the tasks' share of the cap, the run ends
    there, its answer's reserve whole; until then the view says how many calls fit."""
    tape, planning = desk(max_tokens=10_000, synthesis_reserve=0.3)
    tape.emit(ev.Usage("w", "execution", 100, 0, 0.0, None))  # a task: ~100 tokens
    tape.emit(ev.Usage("p", "creation", 1500, 500, 0.0, None))  # a planner call: ~2,000
    view = planning.plan_view(0, 10)
    assert view.state is State.RUNNING and view.calls == 2  # 7,000 - 2,100 at 2,001 a call
    tape.emit(ev.Usage("p", "completion-check", 3500, 0, 0.0, None))  # 5,600 spent
    view = planning.plan_view(0, 10)
    assert view.dry and view.calls == 0 and view.state is State.FINISHED
    assert tape.books.reason is Reason.MAX_TOKENS and tape.books.detail == NO_ROOM
