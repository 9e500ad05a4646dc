"""The board's parts alone: the planner claim, the worker roster, the answers, the tool
statistics, and the task list's own moves for a task coming back from a lease."""

from __future__ import annotations

import pytest

from coop import constants as C
from coop.board.answers import Answers
from coop.board.claim import PlannerClaim, PlannerLost
from coop.board.roster import Roster
from coop.board.tasks import TaskList
from coop.board.toolstats import ToolTally
from coop.types import Answer, Seat


def test_a_claim_has_one_live_holder_and_lapses_unrenewed() -> None:
    claim = PlannerClaim()
    assert claim.holder(0) is None
    claim.check(None, 0)  # not a planner: never refused
    claim.take("p", 0)
    assert claim.holder(C.DEFAULT_PLANNER_TTL - 1) == "p"
    claim.check("p", C.DEFAULT_PLANNER_TTL - 1)
    with pytest.raises(PlannerLost, match=r"now p\)"):
        claim.check("q", 1)
    lapsed = C.DEFAULT_PLANNER_TTL  # and not released
    assert claim.holder(lapsed) is None and claim.owner() == "p"
    with pytest.raises(PlannerLost, match="now nobody"):
        claim.check("p", C.DEFAULT_PLANNER_TTL + 1)
    claim.restore(100)  # a restarted board: a fresh TTL for the last holder
    assert claim.holder(100 + C.DEFAULT_PLANNER_TTL - 1) == "p"
    claim.release()
    claim.restore(200)
    assert claim.owner() is None and claim.holder(200) is None


def test_the_roster_knows_who_is_live_and_what_nobody_can_do() -> None:
    roster = Roster()
    roster.seen("a", 10)
    roster.seen("a", 20)
    roster.seat("a", Seat(2, ("python",)))
    roster.seen("b", 5)
    roster.seat("b", Seat(0, ("gpu",)))  # no slots: it takes nothing
    assert roster.stats("a").first_seen == 10 and roster.stats("a").last_seen == 20
    assert [w.worker for w in roster.live(25, within=10)] == ["a"]
    needs = [(1, ["python"]), (2, ["gpu"]), (3, []), (4, ["python", "web"])]
    assert roster.lacking(needs, 25, within=30) == {2: ["gpu"], 4: ["web"]}
    roster.idle("b", 30)
    assert roster.others_idle("a", 29) and not roster.others_idle("b", 29)
    roster.busy("b")
    assert not roster.others_idle("a", 0)


def test_answers_are_revisions_in_order() -> None:
    answers = Answers()
    assert answers.latest() is None and answers.next_revision() == 1
    answers.keep(Answer(revision=1, text="one"))
    answers.keep(Answer(revision=2, text="two"))
    latest = answers.latest()
    assert latest is not None and latest.text == "two"
    assert [a.text for a in answers.all()] == ["one", "two"]
    with pytest.raises(AssertionError):
        answers.keep(Answer(revision=2, text="again"))


def test_tool_statistics_count_each_call_once() -> None:
    tally = ToolTally()
    tally.count("python", True, 0.5, 10)
    tally.count("python", False, 0.25, 0)
    view = tally.view()
    assert (view["python"].calls, view["python"].failed, view["python"].bytes) == (2, 1, 10)
    view["python"].calls = 99
    assert tally.view()["python"].calls == 2


def test_a_task_comes_back_from_its_lease_through_the_lists_own_moves() -> None:
    tasks = TaskList()
    tasks.add([(1, "a", None, []), (2, "b", None, []), (3, "c", None, [])], hold=False)
    tasks.take(1)
    tasks.take(2)
    version = tasks.version
    tasks.reclaim(1, held=True)
    tasks.complete(1, 7)
    assert tasks.done == {1: 7} and tasks.finished(1) and tasks.version > version
    tasks.put_front([2])  # its lease expired: requeued, then its late outcome arrives
    tasks.reclaim(2, held=False)
    tasks.fail(2, "Boom", dead=False, retry_at=50)
    assert tasks.pending == [3, 2] and not tasks.eligible(2, 49) and tasks.eligible(2, 50)
    assert (tasks.tasks[2].attempts, tasks.tasks[2].last_error) == (1, "Boom")
    tasks.take(3)
    tasks.reclaim(3, held=True)
    tasks.release(3)
    assert tasks.pending == [3, 2]
    tasks.take(2)
    tasks.reclaim(2, held=True)
    tasks.fail(2, "Boom again", dead=True, retry_at=0)
    assert tasks.dead == [2] and tasks.pending == [3] and tasks.finished(2)
