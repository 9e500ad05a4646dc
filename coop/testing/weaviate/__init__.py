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

    python -m scripts.weaviate_standin --http-port 8080 --grpc-port 50051 --api-key secret
    weaviate.connect_to_local(port=8080, grpc_port=50051, auth_credentials=Auth.api_key("secret"))

Its parts: `server` (`WeaviateStandIn`: storage, listeners, start and stop), `model` (the
collections and objects stored), `rest` (HTTP), `grpc_api` (gRPC), `convert` (protobuf to
stored and back), `values` (typing values by the schema), `filters` (selecting and ordering
objects) and `cli` (`main`, also run by `python -m coop.testing.weaviate`).
"""

from coop.testing.weaviate.cli import main
from coop.testing.weaviate.server import WeaviateStandIn, weaviate_env

__all__ = ["WeaviateStandIn", "main", "weaviate_env"]
