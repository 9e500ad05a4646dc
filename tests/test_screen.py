"""Each refusal rule, on lines real small models proposed (SmolLM2-135M-Instruct behind
llama.cpp: issue 21 and the replies collected for it), and lines that are real tasks."""

from __future__ import annotations

import pytest

from coop import agents, screen
from coop.tokens import estimating
from coop.types import Refusal, Result

TOK = estimating("test")
OBJECTIVE = "Write a short guide to growing tomatoes on a balcony"
DONE = [Result(1, "Develop a task list", "1. Research soil\n2. Buy pots", "w", 0, 0.0)]


def replan_words() -> list[str]:
    return agents.instructions(agents.replan_prompt(OBJECTIVE, ["Develop a task list"], TOK, 2000))


def creation_words() -> list[str]:
    prompt = agents.creation_prompt(OBJECTIVE, DONE, ["Buy pots"], TOK, 2000, wanted=3)
    return agents.instructions(prompt)


@pytest.mark.parametrize(
    "line",
    [
        # the replanning prompt's instructions, whole or reworded (SmolLM2)
        "List the tasks that would still move the objective forward, as a numbered list, one "
        "task per line, and nothing else. Return no list if nothing is left to do.",
        "Return no list if nothing is left to do",
        "Return no list if anything is left to do",
        "List all tasks that would move the objective forward, one task per line, and nothing else",
        "Provide a list of tasks that would still move the objective forward, as a numbered list",
        "(2) Return no list if nothing is left to do;",
        "Work already done (do not repeat it)",
        "Plan afresh",
    ],
)
def test_the_replanning_prompts_own_words_are_refused(line: str) -> None:
    assert screen.refusal(line, OBJECTIVE, replan_words()) is Refusal.PROMPT


@pytest.mark.parametrize(
    "line",
    [
        "Already planned (do not repeat these)",
        "Just completed",
        "Return them as a numbered list, one task per line, and nothing else",
        "The team has idle workers",
        # SmolLM2, in a real run: a numbering of its own did not hide it
        "(3) Return a list of new tasks that do not repeat planned or completed work;",
        "Return a list of new tasks that do not repeat planned or completed work.",
    ],
)
def test_the_creation_prompts_headings_and_instructions_are_refused(line: str) -> None:
    assert screen.refusal(line, OBJECTIVE, creation_words()) is Refusal.PROMPT


def test_a_line_is_compared_with_the_prompt_that_was_sent() -> None:
    """The creation prompt says "Return no list if nothing is needed": the replanning one's
    different wording is not its instruction, but a reworded copy of its own still is."""
    assert screen.refusal("Return no list if nothing is needed", OBJECTIVE, []) is None
    line = "Return no list if nothing is needed"
    assert screen.refusal(line, OBJECTIVE, creation_words()) is Refusal.PROMPT


@pytest.mark.parametrize(
    "line",
    [
        *("(nothing)", "None", "N/A", "[task]", "...", "…", "No new tasks needed", "TBD", "-"),
        "Result: 2 (nothing)",  # SmolLM2, echoing the prompt's labels around a placeholder
    ],
)
def test_placeholders_and_empties_are_refused(line: str) -> None:
    assert screen.refusal(line, OBJECTIVE, creation_words()) is Refusal.PLACEHOLDER


def test_a_paragraph_is_refused_as_too_long() -> None:
    line = "Research the best tomato varieties for containers, " * 10
    assert screen.refusal(line, OBJECTIVE, []) is Refusal.LONG
    assert screen.refusal(line[: screen.LONG_TASK_CHARS], OBJECTIVE, []) is None


@pytest.mark.parametrize(
    "line",
    [
        OBJECTIVE,
        f"Objective: {OBJECTIVE}",
        OBJECTIVE.upper() + ".",
        "Write the short guide to growing tomatoes on a balcony",
    ],
)
def test_the_objective_restated_is_refused(line: str) -> None:
    assert screen.refusal(line, OBJECTIVE, creation_words()) is Refusal.OBJECTIVE


@pytest.mark.parametrize(
    "line",
    [
        "Draft an outline",  # proposed by SmolLM2 and a task indeed
        "Write the guide",
        "Research the topic",
        "Write the section on watering tomatoes on a balcony",
        "List the tomato varieties that grow in pots",
        "Compare 20-litre pots with grow bags [needs: fetch]",
        "Check the balcony's hours of sun, then choose a variety",
        "Compare 3 varieties: cherry, roma and beefsteak",
        "(4) Enhance the guide with a watering schedule;",  # SmolLM2's numbering: still a task
    ],
)
def test_real_tasks_pass(line: str) -> None:
    assert screen.refusal(line, OBJECTIVE, creation_words()) is None
    assert screen.refusal(line, OBJECTIVE, replan_words()) is None
