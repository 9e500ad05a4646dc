"""The budget on its own: reserve, settle, and the caps."""

from __future__ import annotations

import pytest

from coop.board.budget import Budget
from coop.config import RunSettings
from coop.types import Reason


def budget(**settings: object) -> Budget:
    return Budget(RunSettings(llm="offline", **settings).validate())  # type: ignore[arg-type]


def test_before_any_execution_the_estimate_is_half_a_full_call() -> None:
    b = budget(max_prompt_tokens=300, max_completion_tokens=100)
    assert b.estimate() == (200, 0.0)


def test_the_estimate_follows_the_mean_execution() -> None:
    b = budget(prices=(1.0, 2.0, 0.0))
    b.settle("execution", 100, 50)
    b.settle("execution", 300, 150)
    tokens, cost = b.estimate()
    assert tokens == 301 and cost == pytest.approx((200 + 600) / 2 / 1e6)


def test_the_estimate_counts_the_embeddings_made_beside_each_execution() -> None:
    b = budget(prices=(1.0, 2.0, 0.5))
    b.settle("execution", 100, 50)
    b.settle("execution", 300, 150)
    b.settle("embedding", 120, 0)  # two tasks' queries, writes and novelty checks
    tokens, cost = b.estimate()
    assert tokens == (600 + 120) // 2 + 1
    assert cost == pytest.approx((200 + 600 + 60) / 2 / 1e6)


def test_reservations_count_toward_a_cap_until_released() -> None:
    b = budget(
        max_tokens=1000, max_prompt_tokens=300, max_completion_tokens=100, synthesis_reserve=0
    )
    for tid in range(5):
        assert b.over(b.estimate()) is None
        b.reserve(tid, *b.estimate())
    assert b.over(b.estimate()) is Reason.MAX_TOKENS  # a sixth would not fit
    b.unreserve(0)
    assert b.over(b.estimate()) is None


def test_spending_reaches_a_cap_and_cost_needs_prices() -> None:
    b = budget(max_tokens=100, max_cost=0.001, prices=(1.0, 2.0, 0.5))
    b.settle("embedding", 1000, 0)  # embeddings: the embedding price, prompt tokens only
    tokens, cost = b.spent()
    assert tokens == 1000 and cost == pytest.approx(0.0005) and b.over(None) is Reason.MAX_TOKENS
    assert budget(max_cost=0.001, prices=(1.0, 2.0, 0.0)).over(None) is None


def test_what_is_left_of_each_cap() -> None:
    b = budget(max_tokens=1000, max_tasks=10)
    b.settle("creation", 300, 100)
    assert b.left(completed=4) == {"tokens": 600, "tasks": 6}


def test_no_caps_never_stop_anything() -> None:
    b = budget()
    b.settle("execution", 10**9, 10**9)
    assert b.over(None) is None and b.over((10**9, 1.0)) is None


def test_tasks_may_not_use_the_share_kept_for_the_answer() -> None:
    b = budget(
        max_tokens=1000, max_prompt_tokens=300, max_completion_tokens=100, synthesis_reserve=0.2
    )
    for tid in range(4):  # 4 x 200 fill the 800 tasks may use
        assert b.over(b.estimate()) is None
        b.reserve(tid, *b.estimate())
    assert b.over(b.estimate()) is Reason.MAX_TOKENS
    b.settle("execution", 700, 100)  # spending may still go up to the cap itself
    assert b.over(None) is None and b.short(150, 50) == ""
    assert "200 of --max-tokens 1000 are left" in b.short(150, 51)


@pytest.mark.parametrize(
    "settings, spent, reserved, fit",
    [
        ({}, 0, 0, None),  # no cap on tokens or cost: the task cap alone limits
        ({"max_tokens": 1000}, 0, 0, 3),  # 700 for tasks at ~200 each
        ({"max_tokens": 1000}, 301, 0, 1),  # 399 left of the tasks' share
        ({"max_tokens": 1000}, 301, 200, 0),  # a task in flight holds the last room
        ({"max_tokens": 1000}, 900, 0, 0),  # spent past the share: none, never negative
        ({"max_cost": 0.0007, "prices": (1.0, 1.0, 0.0)}, 0, 0, 2),  # $0.00049 at $0.0002 each
    ],
)
def test_how_many_more_tasks_fit_in_the_budget(
    settings: dict[str, object], spent: int, reserved: int, fit: int | None
) -> None:
    b = budget(max_prompt_tokens=300, max_completion_tokens=100, synthesis_reserve=0.3, **settings)
    if spent:
        b.settle("creation", spent, 0)
    if reserved:
        b.reserve(1, reserved, 0.0)
    assert b.tasks_that_fit() == fit


def test_planner_calls_fit_in_the_tasks_share_at_their_own_mean_cost() -> None:
    """The planner's calls spend the caps as tasks do: counted against the share tasks may
    use, at the mean of the planner's own calls (creation, prioritization, check) so far."""
    b = budget(
        max_tokens=2000, max_prompt_tokens=300, max_completion_tokens=100, synthesis_reserve=0.3
    )
    assert b.call_estimate() == (200, 0.0)  # before any: half a full call
    assert b.calls_that_fit() == 7  # 1400 for tasks and planning, at 200 each
    b.settle("creation", 250, 50)
    b.settle("completion-check", 80, 20)
    b.settle("execution", 900, 100)  # not a planner call: spent, not in the mean
    assert b.call_estimate() == (201, 0.0)
    assert b.calls_that_fit() == 0  # 1400 spent of the 1400: the answer's 600 stay whole
    assert b.over(b.call_estimate()) is Reason.MAX_TOKENS
    assert budget().calls_that_fit() is None  # no cap on tokens or cost
