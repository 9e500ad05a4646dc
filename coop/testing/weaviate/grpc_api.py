"""gRPC: the `weaviate.v1.Weaviate` service (BatchObjects, Search, Aggregate, TenantsGet) and
the health check the client runs on connect, behind Weaviate's API-key check.

Requests see one shard (a collection, or one tenant of it); BatchObjects upserts by UUID, Search
filters, ranks by cosine distance (`filters`), sorts and pages, Aggregate only counts. What is
not served (BatchDelete, BatchStream, hybrid, BM25, group-by, ...) answers UNIMPLEMENTED.

Named `grpc_api`, not `grpc`: Python 3 imports are absolute, so `import grpc` in here would
still find the library, but a submodule named `grpc` would rebind the package's `grpc`
attribute and read as the library, and would shadow it outright for any file run from this
folder (its folder goes first on sys.path).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from weaviate.proto.v1 import (  # the pb2 flavour the client itself picked for this protobuf
    aggregate_pb2,
    batch_pb2,
    health_weaviate_pb2,
    search_get_pb2,
    tenants_pb2,
)

from coop.testing.weaviate.convert import (
    metadata_out,
    properties_in,
    properties_out,
    query_vector,
    vector_in,
)
from coop.testing.weaviate.filters import cosine_distance, matches, sort_key, value_of
from coop.testing.weaviate.model import Collection, Fault, Object

if TYPE_CHECKING:
    from coop.testing.weaviate.server import WeaviateStandIn

QUERY_DEFAULT_LIMIT = 10  # Weaviate's QUERY_DEFAULTS_LIMIT, used when a search sets no limit
TENANT_GRPC = {
    "ACTIVE": tenants_pb2.TENANT_ACTIVITY_STATUS_ACTIVE,
    "INACTIVE": tenants_pb2.TENANT_ACTIVITY_STATUS_INACTIVE,
    "OFFLOADED": tenants_pb2.TENANT_ACTIVITY_STATUS_OFFLOADED,
}

Collections = dict[str, Collection]


def handlers(server: WeaviateStandIn) -> list[grpc.GenericRpcHandler]:
    """The services for `server`'s gRPC listener, answering from its storage under its lock."""

    def unary(
        name: str,
        answer: Callable[[Collections, Any], Any],
        request: Any,
        reply: Any,
        auth: bool = True,
    ) -> grpc.RpcMethodHandler:
        def handle(req: Any, context: grpc.ServicerContext) -> Any:
            server.record(f"gRPC {name}")
            if auth and server.api_key:
                given = dict(context.invocation_metadata()).get("authorization")
                if given != f"Bearer {server.api_key}":
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "invalid api key: key not found"
                        if given
                        else "anonymous access not enabled, please provide an auth scheme",
                    )
            try:
                with server.lock:
                    return answer(server.collections, req)
            except Fault as f:
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
                _batch_objects,
                batch_pb2.BatchObjectsRequest,
                batch_pb2.BatchObjectsReply,
            ),
            "Search": unary(
                "Search", _search, search_get_pb2.SearchRequest, search_get_pb2.SearchReply
            ),
            "Aggregate": unary(
                "Aggregate",
                _aggregate,
                aggregate_pb2.AggregateRequest,
                aggregate_pb2.AggregateReply,
            ),
            "TenantsGet": unary(
                "TenantsGet",
                _tenants_get,
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
                lambda _, __: health.WeaviateHealthCheckResponse(
                    status=health.WeaviateHealthCheckResponse.SERVING
                ),
                health.WeaviateHealthCheckRequest,
                health.WeaviateHealthCheckResponse,
                auth=False,
            )
        },
    )
    return [weaviate, checks]


def _shard(
    collections: Collections, collection: str, tenant: str
) -> tuple[Collection, dict[str, Object]]:
    """The objects a request may see, or the error Weaviate gives for its scope."""
    coll = collections.get(collection)
    if coll is None:
        raise Fault(f"could not find class {collection} in schema", grpc.StatusCode.NOT_FOUND)
    if coll.multi_tenant and not tenant:
        raise Fault(f"class {collection} has multi-tenancy enabled, but request was without tenant")
    if not coll.multi_tenant and tenant:
        raise Fault(f"class {collection} has multi-tenancy disabled, but request was with tenant")
    if tenant and tenant not in coll.tenants:
        raise Fault(f'tenant not found: "{tenant}"')
    return coll, coll.shards.setdefault(tenant, {})


def _batch_objects(
    collections: Collections, req: batch_pb2.BatchObjectsRequest
) -> batch_pb2.BatchObjectsReply:
    start = time.perf_counter()
    errors = []
    for index, obj in enumerate(req.objects):
        try:
            _put(collections, obj)
        except Fault as f:
            errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=f.message))
    return batch_pb2.BatchObjectsReply(took=time.perf_counter() - start, errors=errors)


def _put(collections: Collections, obj: batch_pb2.BatchObject) -> None:
    coll, shard = _shard(collections, obj.collection, obj.tenant)
    try:
        key = str(uuid.UUID(obj.uuid))
    except ValueError:
        raise Fault(f"invalid UUID: {obj.uuid!r}") from None
    props = properties_in(obj.properties, coll) if obj.HasField("properties") else {}
    vector = vector_in(obj)
    if vector is not None:
        dims = coll.dims.setdefault(obj.tenant, len(vector))
        if len(vector) != dims:
            raise Fault(
                f"insert to vector index: new node has a vector with length {len(vector)}. "
                f"Existing nodes have vectors with length {dims}"
            )
    now = int(time.time() * 1000)
    old = shard.pop(key, None)  # a replaced object moves to the end, as its doc id is new
    shard[key] = Object(key, props, vector, old.created if old else now, now)


def _search(
    collections: Collections, req: search_get_pb2.SearchRequest
) -> search_get_pb2.SearchReply:
    start = time.perf_counter()
    _unsupported(
        req,
        "group_by hybrid_search bm25_search near_object near_text near_image near_audio "
        "near_video near_depth near_thermal near_imu generative rerank",
    )
    coll, shard = _shard(collections, req.collection, req.tenant)
    types = coll.types()
    found = [
        o for o in shard.values() if not req.HasField("filters") or matches(req.filters, o, types)
    ]
    distances: dict[str, float] = {}
    if req.HasField("near_vector"):
        query = query_vector(req.near_vector)
        nv = req.near_vector
        for o in found:
            if o.vector is None:
                continue
            if len(o.vector) != len(query):
                raise Fault(
                    "vector search: knn search: vector lengths don't match: "
                    f"{len(query)} vs {len(o.vector)}"
                )
            distances[o.uuid] = cosine_distance(query, o.vector)
        found = sorted((o for o in found if o.uuid in distances), key=lambda o: distances[o.uuid])
        if nv.HasField("distance"):
            found = [o for o in found if distances[o.uuid] <= nv.distance]
        if nv.HasField("certainty"):
            found = [o for o in found if 1 - distances[o.uuid] / 2 >= nv.certainty]
    elif req.after:
        found = sorted((o for o in found if o.uuid > req.after), key=lambda o: o.uuid)
    for sort in reversed(req.sort_by):  # stable sorts, last key first
        prop = sort.path[0] if sort.path else ""
        found.sort(
            key=lambda o, p=prop: sort_key(value_of(o, p, types)),  # type: ignore[misc]
            reverse=not sort.ascending,
        )
    limit = req.limit or QUERY_DEFAULT_LIMIT
    found = found[req.offset : req.offset + limit]
    results = [
        search_get_pb2.SearchResult(
            properties=properties_out(o, coll, req),
            metadata=metadata_out(o, req.metadata, distances.get(o.uuid)),
        )
        for o in found
    ]
    return search_get_pb2.SearchReply(took=time.perf_counter() - start, results=results)


def _aggregate(
    collections: Collections, req: aggregate_pb2.AggregateRequest
) -> aggregate_pb2.AggregateReply:
    start = time.perf_counter()
    _unsupported(req, "group_by search")
    if req.aggregations:
        raise Fault(
            "property aggregations are not implemented by the Weaviate stand-in",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    coll, shard = _shard(collections, req.collection, req.tenant)
    types = coll.types()
    count = sum(
        1 for o in shard.values() if not req.HasField("filters") or matches(req.filters, o, types)
    )
    single = aggregate_pb2.AggregateReply.Single(
        aggregations=aggregate_pb2.AggregateReply.Aggregations()
    )
    if req.objects_count:
        single.objects_count = count
    return aggregate_pb2.AggregateReply(took=time.perf_counter() - start, single_result=single)


def _tenants_get(
    collections: Collections, req: tenants_pb2.TenantsGetRequest
) -> tenants_pb2.TenantsGetReply:
    coll = collections.get(req.collection)
    if coll is None:
        raise Fault(f'class "{req.collection}" not found', grpc.StatusCode.NOT_FOUND)
    if not coll.multi_tenant:
        raise Fault(f'multi-tenancy is not enabled for class "{coll.name}"')
    names = list(req.names.values) if req.HasField("names") else list(coll.tenants)
    return tenants_pb2.TenantsGetReply(
        tenants=[
            tenants_pb2.Tenant(name=n, activity_status=TENANT_GRPC[coll.tenants[n]])
            for n in names
            if n in coll.tenants
        ]
    )


def _unsupported(req: Any, fields: str) -> None:
    for name in fields.split():
        if req.WhichOneof(name) if name == "search" else req.HasField(name):
            raise Fault(
                f"{name} is not implemented by the Weaviate stand-in", grpc.StatusCode.UNIMPLEMENTED
            )
