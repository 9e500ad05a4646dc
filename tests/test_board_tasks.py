"""The task list on its own: identity, screening, eligibility, merge-reordering."""

from __future__ import annotations

from coop.board.tasks import TaskList


def added(tasks: TaskList, *texts: str, parent: int | None = None) -> list[int]:
    screened = tasks.screen(texts, parent, accepting=True)
    tasks.add(screened.rows, hold=False)
    return [row[0] for row in screened.rows]


def test_screening_turns_away_what_was_seen_and_repeats_within_one_call() -> None:
    tasks = TaskList()
    assert added(tasks, "Write intro", "Write body") == [1, 2]
    tasks.take(1)
    tasks.done[1] = 1
    screened = tasks.screen(
        ["write INTRO.", "  Write   body ", "Outro", "outro", ""], 2, accepting=True
    )
    assert screened.rows == [(3, "Outro", 2, [])]
    assert screened.duplicates == ["write INTRO.", "  Write   body ", "outro", ""]
    assert screened.repeats == 1  # only the intro was finished work
    assert tasks.pending == [2]  # nothing changes until `add`


def test_a_stopped_objective_accepts_nothing() -> None:
    screened = TaskList().screen(["new"], None, accepting=False)
    assert screened.rows == [] and screened.duplicates == ["new"]


def test_eligibility_waits_for_approval_and_retry_delays() -> None:
    tasks = TaskList()
    tasks.add(tasks.screen(["held"], None, accepting=True).rows, hold=True)
    added(tasks, "later", "now")
    tasks.take(2)
    tasks.retry_later(2, at=100.0)
    assert tasks.next_eligible(50.0) == 3 and tasks.eligible_count(50.0) == 1
    assert tasks.next_eligible(100.0) == 3 and tasks.eligible_count(100.0) == 2
    tasks.approve([1])
    assert tasks.next_eligible(0.0) == 1
    assert tasks.next_eligible(0.0, fits=lambda t: t.text == "now") == 3


def test_reordering_merges_into_the_current_list() -> None:
    tasks = TaskList()
    added(tasks, "a", "b", "c", "d")
    tasks.take(2)  # leased while the model was ordering
    first, unknown = tasks.merge_order([4, 2, 4, 99, 1])
    assert first == [4, 1] and unknown == 1
    version = tasks.version
    tasks.reorder(first)
    assert tasks.pending == [4, 1, 3] and tasks.version == version + 1


def test_dropping_needs_a_person_and_removes_only_waiting_tasks() -> None:
    tasks = TaskList()
    tasks.add(tasks.screen(["x", "y"], None, accepting=True).rows, hold=True)
    assert tasks.awaiting([1, 2, 3]) == [1, 2]
    tasks.drop([1])
    assert tasks.pending == [2] and tasks.unapproved == {2}
