"""Degenerate output, on answers SmolLM2-135M-Instruct wrote for coop's synthesis prompt
(issue 21 and the replies collected for it), and on answers that are fine."""

from __future__ import annotations

import pytest

from coop import agents, degenerate
from coop.tokens import estimating

TOK = estimating("test")
RESULTS = [
    "[#1] Develop a task list\n1. Research the topic\n2. Write the guide",
    "[#2] Research the topic\nTomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.",
]

LOOPING = """Objective: Compare three ways to learn Spanish in six months
[#1] Develop a task list
Tomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.
The goal is to create a plan that will help you improve your skills in Spanish.
Task List: [task_list_name]
Research the topic: [topic1]
[#2] Research the topic: [topic2]
Tomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.
The goal is to create a plan that will help you improve your skills in Spanish.
Plan: [plan_name]
Research the topic: [topic3]
[#1] Develop a task list
Tomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.
The goal is to create a plan that will help you improve your skills in Spanish.
Task List: [task_list_name]
Research the topic: [topic4]
[#1] Research the topic: [topic5]
Tomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.
The goal is to create a plan that will help you improve your skills in Spanish.
Plan: [plan_name]"""
ECHO = """Objective: Plan a one-day trip to Kyoto
[#1] Develop a task list
Write what the objective asks for (the guide, plan, comparison) in Markdown, drawing only on \
these results and files, and cite the tasks you use.
A team of agents worked toward an objective. Write the objective's answer from their results."""
PLACEHOLDERS = """[#1] Develop a task list
2. Research the topic
Tomatoes need 6-8 hours of sun, a 20-litre pot and regular watering.
A: [id] to create a plan for growing tomatoes on a balcony
B: [file path] to write a guide to grow tomatoes on a balcony"""
GOOD = """# Growing tomatoes on a balcony

Tomatoes need 6-8 hours of sun a day [#2], so pick the sunniest side of the balcony.

## What you need
- A 20-litre pot per plant [#2]
- Compost, and a stake for each plant
- A watering can: water regularly, every day in summer [#2]

## Steps
1. Research the varieties that grow in pots [#1].
2. Plant after the last frost.
3. Feed every two weeks once the first fruit sets."""


def own() -> list[str]:
    prompt = agents.synthesis_prompt("Grow tomatoes", RESULTS, 0, TOK, 3000, "done")
    return agents.instructions(prompt)


@pytest.mark.parametrize(
    "text, flaw",
    [
        (LOOPING, degenerate.REPEATS),
        ("The answer is on the balcony.\n" * 10, degenerate.REPEATS),  # one line ten times
        (
            "Tomatoes like sun. Tomatoes like sun. Tomatoes like sun. Tomatoes like sun.",
            degenerate.REPEATS,
        ),
        (ECHO, degenerate.ECHOES),
        (PLACEHOLDERS, degenerate.PLACEHOLDERS),
        ("Tomatoes need sun [#id] and water [#id].", degenerate.PLACEHOLDERS),
        (GOOD, ""),
        ("Objective met: yes", ""),
        ("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |", ""),
    ],
)
def test_degenerate_answers_are_named_and_good_ones_pass(text: str, flaw: str) -> None:
    assert degenerate.flaw(text, own()) == flaw


def test_the_nudge_is_part_of_the_prompts_own_words() -> None:
    """An answer asked again must not pass by copying the nudge back."""
    prompt = agents.synthesis_prompt("Grow tomatoes", RESULTS, 0, TOK, 3000, "done", "x")
    nudge = agents.NUDGE.format(flaw="repeats itself").strip()
    assert degenerate.flaw(nudge, agents.instructions(prompt)) == degenerate.ECHOES
