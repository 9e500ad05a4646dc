"""Between the gRPC wire and what is stored: an imported object's properties (typed by the
schema, which grows as Weaviate's auto-schema does) and vector, a search's query vector, and a
search result's properties and metadata.

Cross-references, nested objects and multi-vectors are refused rather than stored.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from google.protobuf import json_format
from weaviate.proto.v1 import (  # the pb2 flavour the client itself picked for this protobuf
    base_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
)

from coop.testing.weaviate.model import Collection, Fault, Object
from coop.testing.weaviate.values import coerce, infer_type


def _floats(raw: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def vector_in(obj: batch_pb2.BatchObject) -> list[float] | None:
    """The object's one vector: unnamed, or the first named single one (stored unnamed)."""
    if obj.vector_bytes:
        return _floats(obj.vector_bytes)
    if obj.vector:
        return list(obj.vector)
    for v in obj.vectors:
        if v.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
            raise Fault("multi-vectors are not implemented by the Weaviate stand-in")
        return _floats(v.vector_bytes)
    return None


def query_vector(nv: Any) -> list[float]:
    if nv.vector_bytes:
        return _floats(nv.vector_bytes)
    if nv.vector:
        return list(nv.vector)
    for v in list(nv.vectors) + [v for t in nv.vector_for_targets for v in t.vectors]:
        return _floats(v.vector_bytes)
    for t in nv.vector_for_targets:
        if t.vector_bytes:
            return _floats(t.vector_bytes)
    raise Fault("near_vector: no vector given")


def properties_in(p: batch_pb2.BatchObject.Properties, coll: Collection) -> dict[str, Any]:
    """The properties as the schema types them; unknown ones are added to the schema, as
    Weaviate's auto-schema does. Values of the wrong type are refused per object."""
    if p.single_target_ref_props or p.multi_target_ref_props:
        raise Fault("cross-references are not implemented by the Weaviate stand-in")
    if p.object_properties or p.object_array_properties:
        raise Fault("object properties are not implemented by the Weaviate stand-in")
    raw: dict[str, Any] = json_format.MessageToDict(p.non_ref_properties)
    for a in p.text_array_properties:
        raw[a.prop_name] = list(a.values)
    for a in p.int_array_properties:
        raw[a.prop_name] = list(a.values)
    for a in p.boolean_array_properties:
        raw[a.prop_name] = list(a.values)
    for a in p.number_array_properties:
        raw[a.prop_name] = (
            list(struct.unpack(f"<{len(a.values_bytes) // 8}d", a.values_bytes))
            if a.values_bytes
            else list(a.values)
        )
    for name in p.empty_list_props:
        raw[name] = []
    types = coll.types()
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        dtype = types.get(name)
        if dtype is None:
            dtype = infer_type(value)
            coll.config["properties"].append({"name": name, "dataType": [dtype]})
            types[name] = dtype
        out[name] = coerce(coll.name, name, dtype, value)
    return out


def properties_out(
    o: Object, coll: Collection, req: search_get_pb2.SearchRequest
) -> search_get_pb2.PropertiesResult:
    types = coll.types()
    wanted: list[str] = list(types)
    if req.HasField("properties") and not req.properties.return_all_nonref_properties:
        wanted = list(req.properties.non_ref_properties)
    fields = {
        name: _value_out(o.properties[name], types.get(name, "text"))
        for name in wanted
        if o.properties.get(name) is not None
    }
    return search_get_pb2.PropertiesResult(
        target_collection=coll.name, non_ref_props=properties_pb2.Properties(fields=fields)
    )


def _value_out(value: Any, dtype: str) -> properties_pb2.Value:
    if dtype.endswith("[]"):
        base, vals = dtype[:-2], list(value)
        if base == "int":
            lv = properties_pb2.ListValue(
                int_values=properties_pb2.IntValues(values=struct.pack(f"<{len(vals)}q", *vals))
            )
        elif base == "number":
            lv = properties_pb2.ListValue(
                number_values=properties_pb2.NumberValues(
                    values=struct.pack(f"<{len(vals)}d", *vals)
                )
            )
        elif base == "boolean":
            lv = properties_pb2.ListValue(bool_values=properties_pb2.BoolValues(values=vals))
        elif base == "date":
            lv = properties_pb2.ListValue(date_values=properties_pb2.DateValues(values=vals))
        elif base == "uuid":
            lv = properties_pb2.ListValue(uuid_values=properties_pb2.UuidValues(values=vals))
        else:
            lv = properties_pb2.ListValue(text_values=properties_pb2.TextValues(values=vals))
        return properties_pb2.Value(list_value=lv)
    if dtype == "int":
        return properties_pb2.Value(int_value=int(value))
    if dtype == "number":
        return properties_pb2.Value(number_value=float(value))
    if dtype == "boolean":
        return properties_pb2.Value(bool_value=bool(value))
    if dtype == "date":
        return properties_pb2.Value(date_value=str(value))
    if dtype == "uuid":
        return properties_pb2.Value(uuid_value=str(value))
    return properties_pb2.Value(text_value=str(value))


def metadata_out(
    o: Object, want: search_get_pb2.MetadataRequest, distance: float | None
) -> search_get_pb2.MetadataResult:
    md = search_get_pb2.MetadataResult(id=o.uuid, id_as_bytes=uuid.UUID(o.uuid).bytes)
    if (want.vector or want.vectors) and o.vector is not None:
        md.vector_bytes = struct.pack(f"<{len(o.vector)}f", *o.vector)
    if want.creation_time_unix:
        md.creation_time_unix, md.creation_time_unix_present = o.created, True
    if want.last_update_time_unix:
        md.last_update_time_unix, md.last_update_time_unix_present = o.updated, True
    if distance is not None and want.distance:
        md.distance, md.distance_present = distance, True
    if distance is not None and want.certainty:
        md.certainty, md.certainty_present = 1 - distance / 2, True
    return md
