"""Tolerant reading of real models' replies: HTML-escaped JSON (llama.cpp's chat template),
code fences, chatter around the object, Python literals; unreadable replies say so."""

from __future__ import annotations

import pytest

from coop import agents, replies
from coop.tokens import estimating
from coop.types import Task


@pytest.mark.parametrize(
    "reply, met, reason",
    [
        # as SmolLM2 behind llama-cpp-python's server sent it (issue 21)
        (
            "{&#34;met&#34;: false, &#34;reason&#34;: &#34;The guide is not written yet&#34;}",
            False,
            "The guide is not written yet",
        ),
        ('```json\n{"met": true, "reason": "all done"}\n```', True, "all done"),
        ('Sure! Here is my verdict: {"met": true, "reason": "done"} Hope it helps.', True, "done"),
        ("{'met': True, 'reason': 'python literal'}", True, "python literal"),
        ('{"met": "true", "reason": "a string is not the boolean"}', False, "a string"),
        ('{"met": false, "reason": {"nested": "braces"}} {"met": true}', False, "{'nested"),
        ('The objective {is} not met. {"met": false}', False, ""),
    ],
)
def test_completion_checks_are_read_as_a_tolerant_reader_would(
    reply: str, met: bool, reason: str
) -> None:
    got, why = agents.parse_completion(reply)
    assert got is met and why.startswith(reason)


@pytest.mark.parametrize(
    "reply",
    [
        "No, the sky is not green.",  # SmolLM2, asked for JSON
        '{"reason": "no verdict in it"}',
        "{&#34;met&#34;: ",  # cut off by max_tokens
        "",
    ],
)
def test_a_check_with_no_verdict_to_read_is_unreadable_not_a_no(reply: str) -> None:
    assert agents.parse_completion(reply) == (None, "")


def test_lists_are_unescaped_and_unfenced() -> None:
    reply = "```\n1. Compare &quot;cherry&quot; &amp; &#39;roma&#39; tomatoes\n2. Buy pots\n```"
    assert agents.parse_tasks(reply) == ["Compare \"cherry\" & 'roma' tomatoes", "Buy pots"]
    tasks = [Task(1, "Buy pots"), Task(2, "Water daily")]
    assert agents.parse_order("```markdown\n1. #2: Water daily\n2. #1: Buy pots\n```", tasks) == (
        [2, 1],
        0,
    )


def test_the_answers_verdict_is_read_through_entities() -> None:
    body, met = agents.parse_synthesis("It&#39;s done [#1].\n\n**Objective met: yes**")
    assert (body, met) == ("It's done [#1].", True)


def test_first_object_skips_what_is_not_an_object() -> None:
    assert replies.first_object('[1, 2] then {"a": 1}') == {"a": 1}
    assert replies.first_object("{" * 5000) is None  # bounded, not quadratic forever
    assert replies.plain("~~~python\nx = 1\n~~~") == "x = 1"


def test_instructions_are_the_templates_words_the_prompt_holds() -> None:
    prompt = agents.replan_prompt("Grow tomatoes", ["Buy pots"], estimating("t"), 2000)
    own = agents.instructions(prompt)
    assert "Return no list if nothing is left to do" in own
    assert not any("tomatoes" in s or "Buy pots" in s for s in own)  # data is not instructions
    assert "Return no list if nothing is needed" not in own  # the creation prompt's, not sent


def test_the_prompts_example_copied_back_is_no_verdict() -> None:
    """SmolLM2 answered the check with the example's shape and its "..." left in: a verdict
    of met on that would end a run after two tasks."""
    assert agents.parse_completion('{"met":true, "reason":"...", "resulted_in" : 0}') == (None, "")
    assert agents.parse_completion('{"met":true, "reason":"True"}') == (True, "True")
    assert agents.parse_completion('{"met": true}') == (True, "")
