"""Typed answers: the answer as JSON matching a schema, read back as a pydantic model."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from coop.errors import CoopError
from coop.types import Answer

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


class AnswerTypeError(CoopError):
    """The objective has no answer that is an instance of the model asked for."""


def typed(answer: Answer | None, model: type[M], objective_id: str) -> M:
    """`answer`'s text as an instance of `model`; one line when it is not one."""
    from pydantic import ValidationError

    if answer is None or not answer.text:
        why = answer.missing if answer is not None else "its run has not ended yet"
        raise AnswerTypeError(f"{objective_id} has no answer: {why}")
    try:
        return model.model_validate_json(answer.text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        raise AnswerTypeError(
            f"{objective_id}'s answer is not a {model.__name__}: {where}: {first['msg']}"
        ) from None
