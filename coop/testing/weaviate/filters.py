"""Which stored objects a search or count selects, and in what order: Weaviate's filter
operators over an object's values (its properties, `_id` and its timestamps), the sort key
(nulls last), and the distance a near-vector search ranks by: always cosine, brute force.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any

import grpc
from weaviate.proto.v1 import base_pb2  # the pb2 flavour the client itself picked

from coop.testing.weaviate.model import Fault, Object
from coop.testing.weaviate.values import parse_date

Op = base_pb2.Filters


def value_of(o: Object, prop: str, types: dict[str, str]) -> Any:
    if prop == "_id":
        return o.uuid
    if prop == "_creationTimeUnix":
        return o.created
    if prop == "_lastUpdateTimeUnix":
        return o.updated
    value = o.properties.get(prop)
    if types.get(prop, "").startswith("date") and value is not None:
        return [parse_date(v) for v in value] if isinstance(value, list) else parse_date(value)
    return value


def sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if value is not None else (1, 0)  # nulls last


def matches(f: base_pb2.Filters, o: Object, types: dict[str, str]) -> bool:
    op = f.operator
    if op == Op.OPERATOR_AND:
        return all(matches(s, o, types) for s in f.filters)
    if op == Op.OPERATOR_OR:
        return any(matches(s, o, types) for s in f.filters)
    if op == Op.OPERATOR_NOT:
        return not matches(f.filters[0], o, types)
    if f.HasField("target") and f.target.WhichOneof("target") != "property":
        raise Fault(
            "reference filters are not implemented by the Weaviate stand-in",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    prop = f.target.property if f.HasField("target") else (f.on[0] if f.on else "")
    have = value_of(o, prop, types)
    if op == Op.OPERATOR_IS_NULL:
        return (have is None or have == []) == f.value_boolean
    kind = f.WhichOneof("test_value")
    if kind is None:
        raise Fault("filter without a value")
    want = getattr(f, kind)
    if kind.endswith("_array"):
        want = list(want.values)
    dtype = "uuid" if prop == "_id" else types.get(prop, "").removesuffix("[]")
    want = _filter_value(want, dtype)
    if have is None:
        return op == Op.OPERATOR_NOT_EQUAL
    if prop == "_id":
        have = have.lower()
    haves = have if isinstance(have, list) else [have]
    wants = want if isinstance(want, list) else [want]
    if op == Op.OPERATOR_CONTAINS_ANY:
        return any(h in wants for h in haves)
    if op == Op.OPERATOR_CONTAINS_ALL:
        return all(w in haves for w in wants)
    if op == Op.OPERATOR_CONTAINS_NONE:
        return not any(h in wants for h in haves)
    if op == Op.OPERATOR_LIKE:
        return any(fnmatch.fnmatchcase(str(h), str(want)) for h in haves)
    compare: dict[int, Callable[[Any, Any], bool]] = {
        Op.OPERATOR_EQUAL: lambda h, w: h == w,
        Op.OPERATOR_NOT_EQUAL: lambda h, w: h != w,
        Op.OPERATOR_GREATER_THAN: lambda h, w: h > w,
        Op.OPERATOR_GREATER_THAN_EQUAL: lambda h, w: h >= w,
        Op.OPERATOR_LESS_THAN: lambda h, w: h < w,
        Op.OPERATOR_LESS_THAN_EQUAL: lambda h, w: h <= w,
    }
    if op not in compare:
        raise Fault(
            f"filter operator {Op.Operator.Name(op)} is not implemented by the Weaviate stand-in",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    try:
        return any(compare[op](h, want) for h in haves)
    except TypeError as e:
        raise Fault(f"filter on {prop!r}: {e}") from None


def _filter_value(want: Any, dtype: str) -> Any:
    if isinstance(want, list):
        return [_filter_value(w, dtype) for w in want]
    if dtype == "date" and isinstance(want, str):
        return parse_date(want)
    if dtype == "uuid" and isinstance(want, str):
        return want.lower()
    return want


def cosine_distance(a: list[float], b: list[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norms == 0:
        return 1.0
    return 1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / norms
