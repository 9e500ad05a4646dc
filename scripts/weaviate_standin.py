#!/usr/bin/env python
"""A Weaviate stand-in on loopback, speaking REST and gRPC, for testing coop's Weaviate backend.

It serves the subset of Weaviate's API that the real `weaviate` v4 Python client (4.23) uses to
connect (meta, readiness, the gRPC health check), manage collections and tenants, import
objects (gRPC BatchObjects, an upsert by UUID, as Weaviate's batch import is), fetch them by
filter and search them by vector (gRPC Search) and count them (gRPC Aggregate), so tests run
the real client end to end. Storage is in memory; `calls` records every request by path.

It is a test double, not a Weaviate: search is brute force and always cosine distance (no
HNSW, no other metrics), and there are no vectorizer modules, BM25, hybrid, group-by,
generative or rerank search, aggregation metrics, cross-references or nested objects, REST
object endpoints, GraphQL, gRPC BatchDelete or BatchStream, auto-tenant creation or
activation, replication or RBAC. Unsupported requests fail loudly (gRPC UNIMPLEMENTED, HTTP
404/501) rather than answering wrongly. Where coop depends on an error, the status and
message copy Weaviate's: 401s, a 422 on creating a collection twice, per-object batch errors
for a missing tenant or a vector of the wrong length.

    python scripts/weaviate_standin.py --http-port 8080 --grpc-port 50051 --api-key secret
    weaviate.connect_to_local(port=8080, grpc_port=50051, auth_credentials=Auth.api_key("secret"))
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from grpc import GenericRpcHandler
from weaviate.proto.v1 import (  # the pb2 flavour the client itself picked for this protobuf
    aggregate_pb2,
    base_pb2,
    batch_pb2,
    health_weaviate_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
)

DEFAULT_VERSION = "1.32.0"  # >= 1.29: the client counts over gRPC Aggregate, not GraphQL
GRPC_MAX_MESSAGE = 104_858_000  # Weaviate's default, reported in /v1/meta
QUERY_DEFAULT_LIMIT = 10  # Weaviate's QUERY_DEFAULTS_LIMIT, used when a search sets no limit
CLASS_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]{0,254}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
TENANT_STATUS = {"HOT": "ACTIVE", "COLD": "INACTIVE", "FROZEN": "OFFLOADED"}  # old names
TENANT_GRPC = {
    "ACTIVE": tenants_pb2.TENANT_ACTIVITY_STATUS_ACTIVE,
    "INACTIVE": tenants_pb2.TENANT_ACTIVITY_STATUS_INACTIVE,
    "OFFLOADED": tenants_pb2.TENANT_ACTIVITY_STATUS_OFFLOADED,
}
Op = base_pb2.Filters


class _Fault(Exception):
    """A request Weaviate would refuse: the gRPC status and message to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class _Object:
    uuid: str
    properties: dict[str, Any]
    vector: list[float] | None
    created: int  # ms since the epoch, as Weaviate reports creationTimeUnix
    updated: int


@dataclass
class _Collection:
    config: dict[str, Any]  # as posted, with Weaviate's defaults filled in
    tenants: dict[str, str] = field(default_factory=dict)  # name -> activityStatus
    shards: dict[str, dict[str, _Object]] = field(default_factory=dict)  # tenant ("") -> uuid
    dims: dict[str, int] = field(default_factory=dict)  # tenant -> vector length, once set

    @property
    def name(self) -> str:
        return str(self.config["class"])

    @property
    def multi_tenant(self) -> bool:
        return bool(self.config.get("multiTenancyConfig", {}).get("enabled"))

    def types(self) -> dict[str, str]:
        return {p["name"]: p["dataType"][0] for p in self.config.get("properties", [])}


@dataclass
class WeaviateStandIn:
    """The server. `start()` binds 127.0.0.1 only and serves from background threads; after it,
    `http_port` and `grpc_port` hold the bound ports (so a restart reuses them)."""

    api_key: str | None = None  # when set, REST needs `Authorization: Bearer <key>`, gRPC too
    version: str = DEFAULT_VERSION
    grpc: bool = True  # False: nothing listens on grpc_port, as when Weaviate's gRPC is closed
    http_port: int = 0  # 0: any free port
    grpc_port: int = 0
    calls: list[str] = field(default_factory=list)  # "REST GET /v1/meta", "gRPC Search", ...

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._collections: dict[str, _Collection] = {}
        self._http: _HTTPServer | None = None
        self._grpc_server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self._http = _HTTPServer(("127.0.0.1", self.http_port), _handler(self))
        self.http_port = self._http.server_address[1]
        try:
            self._start_grpc()
        except BaseException:  # e.g. the gRPC port is taken: leave nothing bound
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
            self._http.server_close()
            self._http = None
            raise
        threading.Thread(  # shutdown() waits for it to leave serve_forever
            target=self._http.serve_forever, args=(0.05,), name="weaviate-standin-http", daemon=True
        ).start()

    def _start_grpc(self) -> None:
        if self.grpc:
            self._pool = futures.ThreadPoolExecutor(8, thread_name_prefix="weaviate-standin-grpc")
            server = grpc.server(
                self._pool,
                handlers=self._grpc_handlers(),
                options=[
                    ("grpc.so_reuseport", 0),  # a taken port must fail, not be shared
                    ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
                    ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                ],
            )
            self.grpc_port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
            server.start()
            self._grpc_server = server
        elif not self.grpc_port:
            with socket.socket() as s:  # a port that was free a moment ago: closed, probably
                s.bind(("127.0.0.1", 0))
                self.grpc_port = s.getsockname()[1]

    def stop(self) -> None:
        """Stops both servers and drops open connections; returns within about a second."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(1.0)
            self._grpc_server = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._http is not None:
            self._http.shutdown()
            self._http.close_connections(timeout=0.5)
            self._http.server_close()
            self._http = None

    def record(self, call: str) -> None:
        with self._lock:
            self.calls.append(call)

    def objects(self, collection: str, tenant: str = "") -> dict[str, dict[str, Any]]:
        """What is stored, by UUID, for tests to inspect without going through a client."""
        with self._lock:
            coll = self._collections.get(collection)
            shard = coll.shards.get(tenant, {}) if coll else {}
            return {
                u: {"properties": dict(o.properties), "vector": o.vector} for u, o in shard.items()
            }

    # -- REST ------------------------------------------------------------------------------

    def rest(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        """Answers one REST request: (status, JSON payload, or None for no body)."""
        path = path.split("?", 1)[0]
        self.record(f"REST {method} {path}")
        if path.startswith("/v1/.well-known/"):  # open without a key, as in Weaviate
            if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
                return 200, None
            return 404, None  # openid-configuration: no OIDC, so API keys or nothing
        if self.api_key:
            given = headers.get("Authorization")
            if not given:
                return (
                    401,
                    _unauthorized(
                        "anonymous access not enabled, please provide an "
                        "auth scheme such as OIDC or APIKey"
                    ),
                )
            if given != f"Bearer {self.api_key}":
                return 401, _unauthorized("invalid api key: key not found")
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return 400, {"code": 400, "message": "parsing body failed: not JSON"}
        with self._lock:
            return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        if parts == ["meta"] and method == "GET":
            return 200, self._meta()
        if parts == ["schema"] and method == "GET":
            return 200, {"classes": [c.config for c in self._collections.values()]}
        if parts == ["schema"] and method == "POST":
            return self._create_collection(body)
        if len(parts) >= 2 and parts[0] == "schema":
            coll = self._collections.get(parts[1])
            if len(parts) == 2:
                if method == "GET":
                    return (200, coll.config) if coll else (404, None)
                if method == "DELETE":  # deleting what is not there succeeds, as in Weaviate
                    self._collections.pop(parts[1], None)
                    return 200, None
            elif parts[2] == "tenants" and len(parts) <= 4:
                if coll is None:
                    return _unprocessable(f'class "{parts[1]}" not found')
                if not coll.multi_tenant:
                    return _unprocessable(f'multi-tenancy is not enabled for class "{coll.name}"')
                if len(parts) == 4:
                    status = coll.tenants.get(parts[3])
                    if method in ("GET", "HEAD"):
                        if status is None:
                            return 404, None
                        return 200, {"name": parts[3], "activityStatus": status}
                else:
                    return self._tenants(coll, method, body)
        if parts == ["graphql"]:
            return 501, _errors("GraphQL is not implemented by the Weaviate stand-in")
        return 404, {"code": 404, "message": f"path {path} was not found"}

    def _meta(self) -> dict[str, Any]:
        return {
            "hostname": f"http://127.0.0.1:{self.http_port}",
            "modules": {},
            "version": self.version,
            "grpcMaxMessageSize": GRPC_MAX_MESSAGE,
        }

    def _create_collection(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("class"), str):
            return _unprocessable("class name is required")
        name = body["class"]
        if not CLASS_NAME.match(name):
            return _unprocessable(f"'{name}' is not a valid class name")
        taken = next((n for n in self._collections if n.lower() == name.lower()), None)
        if taken == name:
            return _unprocessable(f'class name "{name}" already exists')
        if taken:
            return _unprocessable(
                f'class name "{name}" already exists as a class with name "{taken}"'
            )
        config = copy.deepcopy(body)
        config.setdefault("properties", [])
        config.setdefault("multiTenancyConfig", {"enabled": False})
        if "vectorConfig" not in config:
            config.setdefault("vectorizer", "none")
        self._collections[name] = _Collection(config)
        return 200, config

    def _tenants(self, coll: _Collection, method: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 200, [{"name": n, "activityStatus": s} for n, s in coll.tenants.items()]
        if method == "DELETE":  # a list of names; ones that are not there are ignored
            for name in body or []:
                coll.tenants.pop(name, None)
                coll.shards.pop(name, None)
                coll.dims.pop(name, None)
            return 200, None
        if method in ("POST", "PUT"):
            entries = [e if isinstance(e, dict) else {"name": e} for e in body or []]
            for e in entries:
                name = str(e.get("name", ""))
                if not TENANT_NAME.match(name):
                    return _unprocessable(
                        "tenant name should only contain alphanumeric characters (a-z, A-Z, "
                        "0-9), underscore (_), and hyphen (-), with a length between 1 and 64 "
                        f"characters: {name!r}"
                    )
                if method == "PUT" and name not in coll.tenants:
                    return _unprocessable(f'tenant not found: "{name}"')
            for e in entries:
                status = str(e.get("activityStatus") or "ACTIVE").upper()
                coll.tenants[e["name"]] = TENANT_STATUS.get(status, status)
            return 200, [{"name": e["name"], **e} for e in entries]
        return 405, _errors(f"method {method} not allowed")

    # -- gRPC ------------------------------------------------------------------------------

    def _grpc_handlers(self) -> list[GenericRpcHandler]:  # not grpc.: the field shadows it
        def unary(
            name: str, answer: Callable[[Any], Any], request: Any, reply: Any, auth: bool = True
        ) -> grpc.RpcMethodHandler:
            def handle(req: Any, context: grpc.ServicerContext) -> Any:
                self.record(f"gRPC {name}")
                if auth and self.api_key:
                    given = dict(context.invocation_metadata()).get("authorization")
                    if given != f"Bearer {self.api_key}":
                        context.abort(
                            grpc.StatusCode.UNAUTHENTICATED,
                            "invalid api key: key not found"
                            if given
                            else "anonymous access not enabled, please provide an auth scheme",
                        )
                try:
                    with self._lock:
                        return answer(req)
                except _Fault as f:
                    context.abort(f.code, f.message)

            return grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=request.FromString,
                response_serializer=reply.SerializeToString,
            )

        health = health_weaviate_pb2
        weaviate = grpc.method_handlers_generic_handler(
            "weaviate.v1.Weaviate",
            {
                "BatchObjects": unary(
                    "BatchObjects",
                    self._batch_objects,
                    batch_pb2.BatchObjectsRequest,
                    batch_pb2.BatchObjectsReply,
                ),
                "Search": unary(
                    "Search", self._search, search_get_pb2.SearchRequest, search_get_pb2.SearchReply
                ),
                "Aggregate": unary(
                    "Aggregate",
                    self._aggregate,
                    aggregate_pb2.AggregateRequest,
                    aggregate_pb2.AggregateReply,
                ),
                "TenantsGet": unary(
                    "TenantsGet",
                    self._tenants_get,
                    tenants_pb2.TenantsGetRequest,
                    tenants_pb2.TenantsGetReply,
                ),
            },
        )
        checks = grpc.method_handlers_generic_handler(  # the client's health check: no key needed
            "grpc.health.v1.Health",
            {
                "Check": unary(
                    "Health/Check",
                    lambda _: health.WeaviateHealthCheckResponse(
                        status=health.WeaviateHealthCheckResponse.SERVING
                    ),
                    health.WeaviateHealthCheckRequest,
                    health.WeaviateHealthCheckResponse,
                    auth=False,
                )
            },
        )
        return [weaviate, checks]

    def _shard(self, collection: str, tenant: str) -> tuple[_Collection, dict[str, _Object]]:
        """The objects a request may see, or the error Weaviate gives for its scope."""
        coll = self._collections.get(collection)
        if coll is None:
            raise _Fault(f"could not find class {collection} in schema", grpc.StatusCode.NOT_FOUND)
        if coll.multi_tenant and not tenant:
            raise _Fault(
                f"class {collection} has multi-tenancy enabled, but request was without tenant"
            )
        if not coll.multi_tenant and tenant:
            raise _Fault(
                f"class {collection} has multi-tenancy disabled, but request was with tenant"
            )
        if tenant and tenant not in coll.tenants:
            raise _Fault(f'tenant not found: "{tenant}"')
        return coll, coll.shards.setdefault(tenant, {})

    def _batch_objects(self, req: batch_pb2.BatchObjectsRequest) -> batch_pb2.BatchObjectsReply:
        start = time.perf_counter()
        errors = []
        for index, obj in enumerate(req.objects):
            try:
                self._put(obj)
            except _Fault as f:
                errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=f.message))
        return batch_pb2.BatchObjectsReply(took=time.perf_counter() - start, errors=errors)

    def _put(self, obj: batch_pb2.BatchObject) -> None:
        coll, shard = self._shard(obj.collection, obj.tenant)
        try:
            key = str(uuid.UUID(obj.uuid))
        except ValueError:
            raise _Fault(f"invalid UUID: {obj.uuid!r}") from None
        props = _properties_in(obj.properties, coll) if obj.HasField("properties") else {}
        vector = _vector_in(obj)
        if vector is not None:
            dims = coll.dims.setdefault(obj.tenant, len(vector))
            if len(vector) != dims:
                raise _Fault(
                    f"insert to vector index: new node has a vector with length {len(vector)}. "
                    f"Existing nodes have vectors with length {dims}"
                )
        now = int(time.time() * 1000)
        old = shard.pop(key, None)  # a replaced object moves to the end, as its doc id is new
        shard[key] = _Object(key, props, vector, old.created if old else now, now)

    def _search(self, req: search_get_pb2.SearchRequest) -> search_get_pb2.SearchReply:
        start = time.perf_counter()
        _unsupported(
            req,
            "group_by hybrid_search bm25_search near_object near_text near_image near_audio "
            "near_video near_depth near_thermal near_imu generative rerank",
        )
        coll, shard = self._shard(req.collection, req.tenant)
        types = coll.types()
        found = [
            o
            for o in shard.values()
            if not req.HasField("filters") or _matches(req.filters, o, types)
        ]
        distances: dict[str, float] = {}
        if req.HasField("near_vector"):
            query = _query_vector(req.near_vector)
            nv = req.near_vector
            for o in found:
                if o.vector is None:
                    continue
                if len(o.vector) != len(query):
                    raise _Fault(
                        "vector search: knn search: vector lengths don't match: "
                        f"{len(query)} vs {len(o.vector)}"
                    )
                distances[o.uuid] = _cosine_distance(query, o.vector)
            found = sorted(
                (o for o in found if o.uuid in distances), key=lambda o: distances[o.uuid]
            )
            if nv.HasField("distance"):
                found = [o for o in found if distances[o.uuid] <= nv.distance]
            if nv.HasField("certainty"):
                found = [o for o in found if 1 - distances[o.uuid] / 2 >= nv.certainty]
        elif req.after:
            found = sorted((o for o in found if o.uuid > req.after), key=lambda o: o.uuid)
        for sort in reversed(req.sort_by):  # stable sorts, last key first
            prop = sort.path[0] if sort.path else ""
            found.sort(
                key=lambda o, p=prop: _sort_key(_value_of(o, p, types)),  # type: ignore[misc]
                reverse=not sort.ascending,
            )
        limit = req.limit or QUERY_DEFAULT_LIMIT
        found = found[req.offset : req.offset + limit]
        results = [
            search_get_pb2.SearchResult(
                properties=_properties_out(o, coll, req),
                metadata=_metadata_out(o, req.metadata, distances.get(o.uuid)),
            )
            for o in found
        ]
        return search_get_pb2.SearchReply(took=time.perf_counter() - start, results=results)

    def _aggregate(self, req: aggregate_pb2.AggregateRequest) -> aggregate_pb2.AggregateReply:
        start = time.perf_counter()
        _unsupported(req, "group_by search")
        if req.aggregations:
            raise _Fault(
                "property aggregations are not implemented by the Weaviate stand-in",
                grpc.StatusCode.UNIMPLEMENTED,
            )
        coll, shard = self._shard(req.collection, req.tenant)
        types = coll.types()
        count = sum(
            1
            for o in shard.values()
            if not req.HasField("filters") or _matches(req.filters, o, types)
        )
        single = aggregate_pb2.AggregateReply.Single(
            aggregations=aggregate_pb2.AggregateReply.Aggregations()
        )
        if req.objects_count:
            single.objects_count = count
        return aggregate_pb2.AggregateReply(took=time.perf_counter() - start, single_result=single)

    def _tenants_get(self, req: tenants_pb2.TenantsGetRequest) -> tenants_pb2.TenantsGetReply:
        coll = self._collections.get(req.collection)
        if coll is None:
            raise _Fault(f'class "{req.collection}" not found', grpc.StatusCode.NOT_FOUND)
        if not coll.multi_tenant:
            raise _Fault(f'multi-tenancy is not enabled for class "{coll.name}"')
        names = list(req.names.values) if req.HasField("names") else list(coll.tenants)
        return tenants_pb2.TenantsGetReply(
            tenants=[
                tenants_pb2.Tenant(name=n, activity_status=TENANT_GRPC[coll.tenants[n]])
                for n in names
                if n in coll.tenants
            ]
        )


# -- conversions between the wire and what is stored -----------------------------------------


def _unsupported(req: Any, fields: str) -> None:
    for name in fields.split():
        if req.WhichOneof(name) if name == "search" else req.HasField(name):
            raise _Fault(
                f"{name} is not implemented by the Weaviate stand-in", grpc.StatusCode.UNIMPLEMENTED
            )


def _floats(raw: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _vector_in(obj: batch_pb2.BatchObject) -> list[float] | None:
    """The object's one vector: unnamed, or the first named single one (stored unnamed)."""
    if obj.vector_bytes:
        return _floats(obj.vector_bytes)
    if obj.vector:
        return list(obj.vector)
    for v in obj.vectors:
        if v.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
            raise _Fault("multi-vectors are not implemented by the Weaviate stand-in")
        return _floats(v.vector_bytes)
    return None


def _query_vector(nv: Any) -> list[float]:
    if nv.vector_bytes:
        return _floats(nv.vector_bytes)
    if nv.vector:
        return list(nv.vector)
    for v in list(nv.vectors) + [v for t in nv.vector_for_targets for v in t.vectors]:
        return _floats(v.vector_bytes)
    for t in nv.vector_for_targets:
        if t.vector_bytes:
            return _floats(t.vector_bytes)
    raise _Fault("near_vector: no vector given")


def _cosine_distance(a: list[float], b: list[float]) -> float:
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norms == 0:
        return 1.0
    return 1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / norms


def _properties_in(p: batch_pb2.BatchObject.Properties, coll: _Collection) -> dict[str, Any]:
    """The properties as the schema types them; unknown ones are added to the schema, as
    Weaviate's auto-schema does. Values of the wrong type are refused per object."""
    if p.single_target_ref_props or p.multi_target_ref_props:
        raise _Fault("cross-references are not implemented by the Weaviate stand-in")
    if p.object_properties or p.object_array_properties:
        raise _Fault("object properties are not implemented by the Weaviate stand-in")
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
            dtype = _infer_type(value)
            coll.config["properties"].append({"name": name, "dataType": [dtype]})
            types[name] = dtype
        out[name] = _coerce(coll.name, name, dtype, value)
    return out


def _infer_type(value: Any) -> str:
    first = value[0] if isinstance(value, list) and value else value
    if isinstance(first, bool):
        base = "boolean"
    elif isinstance(first, int | float):
        base = "number"
    elif isinstance(first, str) and _date(first) is not None:
        base = "date"
    else:
        base = "text"
    return base + "[]" if isinstance(value, list) else base


def _coerce(cname: str, name: str, dtype: str, value: Any) -> Any:
    if dtype.endswith("[]"):
        if not isinstance(value, list):
            raise _Fault(
                f"invalid {dtype} property '{name}' on class '{cname}': not an array, "
                f"but {type(value).__name__}"
            )
        return [_coerce(cname, name, dtype[:-2], v) for v in value]
    ok = {
        "int": isinstance(value, int | float)
        and not isinstance(value, bool)
        and float(value).is_integer(),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "text": isinstance(value, str),
        "string": isinstance(value, str),
        "uuid": isinstance(value, str),
        "date": isinstance(value, str) and _date(value) is not None,
    }.get(dtype, True)
    if not ok:
        raise _Fault(
            f"invalid {dtype} property '{name}' on class '{cname}': the given value "
            f"'{value}' is not a valid {dtype}"
        )
    if dtype == "int":
        return int(value)
    if dtype == "number":
        return float(value)
    return value


def _date(value: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None


def _value_of(o: _Object, prop: str, types: dict[str, str]) -> Any:
    if prop == "_id":
        return o.uuid
    if prop == "_creationTimeUnix":
        return o.created
    if prop == "_lastUpdateTimeUnix":
        return o.updated
    value = o.properties.get(prop)
    if types.get(prop, "").startswith("date") and value is not None:
        return [_date(v) for v in value] if isinstance(value, list) else _date(value)
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if value is not None else (1, 0)  # nulls last


def _matches(f: base_pb2.Filters, o: _Object, types: dict[str, str]) -> bool:
    op = f.operator
    if op == Op.OPERATOR_AND:
        return all(_matches(s, o, types) for s in f.filters)
    if op == Op.OPERATOR_OR:
        return any(_matches(s, o, types) for s in f.filters)
    if op == Op.OPERATOR_NOT:
        return not _matches(f.filters[0], o, types)
    if f.HasField("target") and f.target.WhichOneof("target") != "property":
        raise _Fault(
            "reference filters are not implemented by the Weaviate stand-in",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    prop = f.target.property if f.HasField("target") else (f.on[0] if f.on else "")
    have = _value_of(o, prop, types)
    if op == Op.OPERATOR_IS_NULL:
        return (have is None or have == []) == f.value_boolean
    kind = f.WhichOneof("test_value")
    if kind is None:
        raise _Fault("filter without a value")
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
        raise _Fault(
            f"filter operator {Op.Operator.Name(op)} is not implemented by the Weaviate stand-in",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    try:
        return any(compare[op](h, want) for h in haves)
    except TypeError as e:
        raise _Fault(f"filter on {prop!r}: {e}") from None


def _filter_value(want: Any, dtype: str) -> Any:
    if isinstance(want, list):
        return [_filter_value(w, dtype) for w in want]
    if dtype == "date" and isinstance(want, str):
        return _date(want)
    if dtype == "uuid" and isinstance(want, str):
        return want.lower()
    return want


def _properties_out(
    o: _Object, coll: _Collection, req: search_get_pb2.SearchRequest
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


def _metadata_out(
    o: _Object, want: search_get_pb2.MetadataRequest, distance: float | None
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


# -- HTTP plumbing ---------------------------------------------------------------------------


def _errors(message: str) -> dict[str, Any]:
    return {"error": [{"message": message}]}


def _unprocessable(message: str) -> tuple[int, Any]:
    return 422, _errors(message)


def _unauthorized(message: str) -> dict[str, Any]:
    return {"code": 401, "message": message}


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its connections and their threads, so stop() ends keep-alive handlers at once
    (and they stay daemons, so a server never stopped cannot hold up the interpreter's exit)."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="weaviate-standin-http-conn",
            daemon=True,
        )
        with self._open_lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def close_connections(self, timeout: float) -> None:
        with self._open_lock:
            open_ = list(self._open.items())
        for sock, _ in open_:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_:
            thread.join(max(0.0, deadline - time.monotonic()))


def _handler(server: WeaviateStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: +40 ms a reply

        def _answer(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = server.rest(self.command, self.path, self.headers, raw)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)  # the client may have given up

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=50051)
    p.add_argument("--api-key", help="require this key (others get 401 / UNAUTHENTICATED)")
    p.add_argument("--version", default=DEFAULT_VERSION, help="the Weaviate version to report")
    a = p.parse_args()
    server = WeaviateStandIn(
        api_key=a.api_key, version=a.version, http_port=a.http_port, grpc_port=a.grpc_port
    )
    server.start()
    print(f"Weaviate stand-in at {server.url} (gRPC 127.0.0.1:{server.grpc_port})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
