"""The command line: `main()` serves a stand-in on the given ports until interrupted, for
trying coop against it by hand (`python -m scripts.weaviate_standin`).
"""

from __future__ import annotations

import argparse
import threading

from coop.testing.weaviate.model import DEFAULT_VERSION
from coop.testing.weaviate.server import WeaviateStandIn


def main() -> None:
    import coop.testing.weaviate as package  # its docstring's first line: --help's summary

    p = argparse.ArgumentParser(description=str(package.__doc__).splitlines()[0])
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
