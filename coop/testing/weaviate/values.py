"""Property values by their schema data type: the type auto-schema infers for a new property,
the check and coercion of an imported value against its property's type, and dates (ISO 8601
text on the wire and in storage, compared as datetimes by filters).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from coop.testing.weaviate.model import Fault


def infer_type(value: Any) -> str:
    first = value[0] if isinstance(value, list) and value else value
    if isinstance(first, bool):
        base = "boolean"
    elif isinstance(first, int | float):
        base = "number"
    elif isinstance(first, str) and parse_date(first) is not None:
        base = "date"
    else:
        base = "text"
    return base + "[]" if isinstance(value, list) else base


def coerce(cname: str, name: str, dtype: str, value: Any) -> Any:
    if dtype.endswith("[]"):
        if not isinstance(value, list):
            raise Fault(
                f"invalid {dtype} property '{name}' on class '{cname}': not an array, "
                f"but {type(value).__name__}"
            )
        return [coerce(cname, name, dtype[:-2], v) for v in value]
    ok = {
        "int": isinstance(value, int | float)
        and not isinstance(value, bool)
        and float(value).is_integer(),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "text": isinstance(value, str),
        "string": isinstance(value, str),
        "uuid": isinstance(value, str),
        "date": isinstance(value, str) and parse_date(value) is not None,
    }.get(dtype, True)
    if not ok:
        raise Fault(
            f"invalid {dtype} property '{name}' on class '{cname}': the given value "
            f"'{value}' is not a valid {dtype}"
        )
    if dtype == "int":
        return int(value)
    if dtype == "number":
        return float(value)
    return value


def parse_date(value: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None
