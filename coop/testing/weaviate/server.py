"""The server: `WeaviateStandIn` holds what is stored (under one lock), binds the REST
listener (`_HTTPServer`, answering through `rest`) and the gRPC one (`grpc_api`) on loopback,
stops them, and records every request; `weaviate_env` points a coop process at it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from coop.testing.weaviate import grpc_api, rest
from coop.testing.weaviate.model import DEFAULT_VERSION, GRPC_MAX_MESSAGE, Collection


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
        self.lock = threading.RLock()  # held by every request while it reads or writes storage
        self.collections: dict[str, Collection] = {}
        self._http: _HTTPServer | None = None
        self._grpc_server: grpc.Server | None = None
        self._pool: futures.ThreadPoolExecutor | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self._http = _HTTPServer(("127.0.0.1", self.http_port), rest.handler(self))
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
                handlers=grpc_api.handlers(self),
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
        with self.lock:
            self.calls.append(call)

    def objects(self, collection: str, tenant: str = "") -> dict[str, dict[str, Any]]:
        """What is stored, by UUID, for tests to inspect without going through a client."""
        with self.lock:
            coll = self.collections.get(collection)
            shard = coll.shards.get(tenant, {}) if coll else {}
            return {
                u: {"properties": dict(o.properties), "vector": o.vector} for u, o in shard.items()
            }

    def rest(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        """Answers one REST request: (status, JSON payload, or None for no body)."""
        return rest.answer(self, method, path, headers, raw)


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


def weaviate_env(server: WeaviateStandIn) -> dict[str, str]:
    """How a coop process finds the stand-in: as it would find a self-hosted Weaviate."""
    return {"WEAVIATE_URL": server.url, "WEAVIATE_GRPC_PORT": str(server.grpc_port)}
