"""Typed answers without a cluster: what counts as a JSON Schema, how a reply is read and
checked, and the retry prompt that shows the model its error."""

from __future__ import annotations

from coop import agents, answers, tokens

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "weeks": {"type": "integer"}},
    "required": ["title", "weeks"],
}


def test_a_schema_must_be_a_json_schema_object() -> None:
    assert answers.schema_problem(SCHEMA) == ""
    assert "not a list" in answers.schema_problem([SCHEMA])
    assert "not a JSON Schema" in answers.schema_problem({"type": "tree"})


def test_replies_are_read_tolerantly_and_held_to_the_schema() -> None:
    fenced = '```json\n{"title": "Garden", "weeks": 3}\n```'
    assert answers.check(fenced, SCHEMA) == ({"title": "Garden", "weeks": 3}, "")
    chatty = 'Here it is: {"title": "Garden", "weeks": 3} Hope it helps!'
    assert answers.check(chatty, SCHEMA)[0] == {"title": "Garden", "weeks": 3}
    value, error = answers.check('{"title": "Garden", "weeks": "three"}', SCHEMA)
    assert value is None and error.startswith("at $.weeks:") and "integer" in error
    assert "not JSON" in answers.check("A fine garden.", SCHEMA)[1]


def test_the_retry_prompt_shows_the_error_and_the_last_answer_within_budget() -> None:
    tokenizer = tokens.estimating("m")
    items = [agents.cited(i, f"task {i}", "result " * 200) for i in range(1, 30)]
    prompt = agents.typed_synthesis_prompt(
        "Plan a garden",
        items,
        tokenizer,
        800,
        "done",
        '{"type":"object"}',
        error="at $.weeks: 'three' is not of type 'integer'",
        last='{"title": "Garden", "weeks": "three"}',
    )
    assert "did not match the schema (at $.weeks" in prompt and '"weeks": "three"' in prompt
    assert '{"type":"object"}' in prompt and "[#1]" in prompt
    assert tokenizer.count(prompt) <= 800
