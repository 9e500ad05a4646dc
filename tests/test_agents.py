"""Prompts stay within budget without touching the objective or the task; parsers never raise."""

from __future__ import annotations

import logging

import pytest

from coop import agents
from coop.memory import Hit
from coop.tokens import estimating
from coop.types import Result, Task

TOK = estimating("test")


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            "1. Research soil\n2) Buy seeds\n- Plant seeds\n* Water daily",
            ["Research soil", "Buy seeds", "Plant seeds", "Water daily"],
        ),
        (
            "Here are the new tasks:\n\n1. **Research soil**\n2. Task 2: Buy seeds\n\nLet me know!",
            ["Research soil", "Buy seeds"],
        ),
        (
            "1. Preparation:\n   - Buy seeds\n   - Buy pots\n2. Plant",
            ["Buy seeds", "Buy pots", "Plant"],
        ),
        ("New tasks:\n1.  Tidy up  ", ["Tidy up"]),
    ],
)
def test_parse_tasks_keeps_list_items_only(answer: str, expected: list[str]) -> None:
    assert agents.parse_tasks(answer) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "I cannot help with that.",
        "}{\x00~~ 12 apples",
        "1.\n2.\n-",
        "#### \n\n",
        "1.5 million reasons",
    ],
)
def test_garbage_yields_zero_tasks_and_a_log_line(
    garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="coop.agents"):
        assert agents.parse_tasks(garbage) == []
    assert bool(caplog.records) == bool(garbage.strip())


def test_parse_tasks_caps_absurd_lengths() -> None:
    (task,) = agents.parse_tasks("1. " + "x" * 5000)
    assert len(task) == 500


def test_parse_order_maps_ids_and_text_and_counts_invented() -> None:
    tasks = [Task(3, "Buy seeds"), Task(7, "Plant seeds"), Task(9, "Water")]
    answer = "Sure:\n1. #7: Plant seeds\n2. buy seeds\n3. #42: Harvest\n4. #7: Plant seeds\nDone."
    assert agents.parse_order(answer, tasks) == ([7, 3], 1)
    assert agents.parse_order("no list here", tasks) == ([], 0)


def test_execution_prompt_trims_context_never_the_task() -> None:
    objective = "Grow tomatoes " * 20
    task = "Write the watering schedule " * 30
    context = [Hit(i, f"task {i}", "long result " * 400, 1.0) for i in range(10)]
    prompt = agents.execution_prompt(objective, task, context, TOK, budget=1200)
    assert objective in prompt and task in prompt
    assert TOK.count(prompt) <= 1200
    assert "task 0" in prompt and "task 9" not in prompt


def test_execution_prompt_without_context() -> None:
    prompt = agents.execution_prompt("o", "t", [], TOK, budget=500)
    assert "(none yet)" in prompt and prompt.rstrip().endswith("Response:")


def test_braces_in_objective_are_not_template_fields() -> None:
    prompt = agents.creation_prompt("Make {done} and {planned} {0}", [], ["{x}"], TOK, 800)
    assert "Make {done} and {planned} {0}" in prompt


def test_creation_prompt_prefers_results_over_the_planned_list() -> None:
    results = [Result(i, f"did {i}", "r " * 50, "w", i, 0.0) for i in range(3)]
    planned = [f"planned task number {i}" for i in range(500)]
    prompt = agents.creation_prompt("objective", results, planned, TOK, budget=700)
    assert all(f"did {i}" in prompt for i in range(3))
    assert "planned task number 0" in prompt and "planned task number 499" not in prompt
    assert TOK.count(prompt) <= 700


def test_prioritization_prompt_lists_ids() -> None:
    prompt = agents.prioritization_prompt("o", [Task(4, "a"), Task(5, "b")], TOK, 500)
    assert "#4: a\n#5: b" in prompt
