"""Typed answers: the objective's answer as JSON matching a JSON Schema (`--answer-schema`,
`answer_type=` in Python), checked here, and read back as a pydantic model.

The schema is checked to be one when the run is set up; each answer is parsed tolerantly (a
code fence, chatter around the value) and validated with the `jsonschema` package Ray already
brings, so what a server without structured outputs wrote is held to the same schema as what
one with them was made to write.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

from coop.errors import CoopError
from coop.replies import plain
from coop.types import Answer

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


class AnswerTypeError(CoopError):
    """The objective has no answer that is an instance of the model asked for."""


def schema_problem(schema: object) -> str:
    """Why `schema` is not a JSON Schema for an answer ("" when it is one)."""
    from jsonschema import SchemaError, validators

    if not isinstance(schema, dict):
        return f"a JSON Schema is an object, not a {type(schema).__name__}"
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"not a JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    return ""


def check(text: str, schema: dict[str, Any]) -> tuple[Any, str]:
    """The JSON value `text` holds and "" when it matches `schema`; else (None, what is wrong,
    in one line a model can act on)."""
    from jsonschema import validators

    body = plain(text)
    try:
        value = json.loads(body)
    except ValueError:
        value = _embedded(body)
        if value is None:
            return None, "the answer is not JSON: write one JSON value and nothing else"
    error = next(iter(validators.validator_for(schema)(schema).iter_errors(value)), None)
    if error is None:
        return value, ""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return None, f"at ${where}: {error.message}"[:300]


def _embedded(text: str) -> Any:
    """The first JSON object or array inside chatter, or None."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text, i)[0]
            except ValueError:
                continue
    return None


def typed(answer: Answer | None, model: type[M], objective_id: str) -> M:
    """`answer` as an instance of `model`; one line when it is not one."""
    from pydantic import ValidationError

    if answer is None or not answer.text:
        why = answer.missing if answer is not None else "its run has not ended yet"
        raise AnswerTypeError(f"{objective_id} has no answer: {why}")
    if answer.invalid:
        raise AnswerTypeError(f"{objective_id}'s answer never matched its schema: {answer.invalid}")
    try:
        return model.model_validate_json(answer.data or answer.text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        raise AnswerTypeError(
            f"{objective_id}'s answer is not a {model.__name__}: {where}: {first['msg']}"
        ) from None
