"""REST: readiness, meta, the schema (collections) and tenants, behind Weaviate's API-key
check and with its error bodies, and the request handler class the HTTP server runs.

Everything else the client might ask over REST (GraphQL, object endpoints, OIDC discovery)
is answered 404 or 501, never faked.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from coop.testing.weaviate.model import GRPC_MAX_MESSAGE, Collection

if TYPE_CHECKING:
    from coop.testing.weaviate.server import WeaviateStandIn

CLASS_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]{0,254}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9\-_]{1,64}$")
TENANT_STATUS = {"HOT": "ACTIVE", "COLD": "INACTIVE", "FROZEN": "OFFLOADED"}  # old names


def answer(
    server: WeaviateStandIn, method: str, path: str, headers: Any, raw: bytes
) -> tuple[int, Any]:
    """Answers one REST request: (status, JSON payload, or None for no body)."""
    path = path.split("?", 1)[0]
    server.record(f"REST {method} {path}")
    if path.startswith("/v1/.well-known/"):  # open without a key, as in Weaviate
        if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
            return 200, None
        return 404, None  # openid-configuration: no OIDC, so API keys or nothing
    if server.api_key:
        given = headers.get("Authorization")
        if not given:
            return (
                401,
                _unauthorized(
                    "anonymous access not enabled, please provide an "
                    "auth scheme such as OIDC or APIKey"
                ),
            )
        if given != f"Bearer {server.api_key}":
            return 401, _unauthorized("invalid api key: key not found")
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return 400, {"code": 400, "message": "parsing body failed: not JSON"}
    with server.lock:
        return _route(server, method, path, body)


def _route(server: WeaviateStandIn, method: str, path: str, body: Any) -> tuple[int, Any]:
    collections = server.collections
    parts = path.strip("/").split("/")[1:]  # without "v1"
    if parts == ["meta"] and method == "GET":
        return 200, _meta(server)
    if parts == ["schema"] and method == "GET":
        return 200, {"classes": [c.config for c in collections.values()]}
    if parts == ["schema"] and method == "POST":
        return _create_collection(collections, body)
    if len(parts) >= 2 and parts[0] == "schema":
        coll = collections.get(parts[1])
        if len(parts) == 2:
            if method == "GET":
                return (200, coll.config) if coll else (404, None)
            if method == "DELETE":  # deleting what is not there succeeds, as in Weaviate
                collections.pop(parts[1], None)
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
                return _tenants(coll, method, body)
    if parts == ["graphql"]:
        return 501, _errors("GraphQL is not implemented by the Weaviate stand-in")
    return 404, {"code": 404, "message": f"path {path} was not found"}


def _meta(server: WeaviateStandIn) -> dict[str, Any]:
    return {
        "hostname": f"http://127.0.0.1:{server.http_port}",
        "modules": {},
        "version": server.version,
        "grpcMaxMessageSize": GRPC_MAX_MESSAGE,
    }


def _create_collection(collections: dict[str, Collection], body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("class"), str):
        return _unprocessable("class name is required")
    name = body["class"]
    if not CLASS_NAME.match(name):
        return _unprocessable(f"'{name}' is not a valid class name")
    taken = next((n for n in collections if n.lower() == name.lower()), None)
    if taken == name:
        return _unprocessable(f'class name "{name}" already exists')
    if taken:
        return _unprocessable(f'class name "{name}" already exists as a class with name "{taken}"')
    config = copy.deepcopy(body)
    config.setdefault("properties", [])
    config.setdefault("multiTenancyConfig", {"enabled": False})
    if "vectorConfig" not in config:
        config.setdefault("vectorizer", "none")
    collections[name] = Collection(config)
    return 200, config


def _tenants(coll: Collection, method: str, body: Any) -> tuple[int, Any]:
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


def _errors(message: str) -> dict[str, Any]:
    return {"error": [{"message": message}]}


def _unprocessable(message: str) -> tuple[int, Any]:
    return 422, _errors(message)


def _unauthorized(message: str) -> dict[str, Any]:
    return {"code": 401, "message": message}


def handler(server: WeaviateStandIn) -> type[BaseHTTPRequestHandler]:
    """The request handler class for `server`'s HTTP listener: each request to `server.rest`."""

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
