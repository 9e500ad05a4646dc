"""A small MCP server of our own, for what third-party servers cannot show: the request's
`_meta` as the server received it, the server's own environment, and the faults (a crash
mid-call, a hang, garbage on stdout) that a well-made server never commits.

Run as a script, `python mcp_servers.py MODE [PORT]`; it needs nothing of coop, nor the tests'
environment. Modes: `stdio` (the probe), `http PORT` (the probe over streamable HTTP on
127.0.0.1), `empty` (a server with no tools), `malformed` (its tool calls answer nonsense).
Servers that are not JSON-RPC at all are mcp_nonsense.py's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

SCRIPT = Path(__file__).resolve()
"""This file: what a test's config runs, by path, with the test's interpreter."""


def probe(wire: int) -> MCPServer:
    """The probe; `wire` is the protocol's stdout, for `garble` to write on."""
    server = MCPServer("probe")

    @server.tool()
    def meta(ctx: Context) -> str:
        """The `_meta` of this request, as JSON."""
        return json.dumps(dict(ctx.request_context.meta or {}))

    @server.tool()
    def env() -> str:
        """This server's environment, as JSON."""
        return json.dumps(dict(os.environ))

    @server.tool()
    def echo(text: str) -> str:
        """`text`, unchanged."""
        return text

    @server.tool()
    def header(name: str, ctx: Context) -> str:
        """The HTTP request header `name` (over streamable HTTP)."""
        return (ctx.headers or {}).get(name, "(none)")

    @server.tool()
    def crash() -> str:
        """Exits the server at once, with its last words on stderr."""
        os.write(2, b"probe: crashing on purpose\n")
        os._exit(3)

    @server.tool()
    async def hang() -> None:
        """Never answers (but the server still exits when its stdin closes)."""
        await anyio.sleep_forever()

    @server.tool()
    async def freeze() -> None:
        """Freezes the whole server (its event loop): it answers nothing, not even its stdin
        closing; only a signal ends it."""
        time.sleep(3600)

    @server.tool()
    def garble() -> str:
        """Writes a line that is not JSON-RPC onto the protocol's stdout, then answers."""
        os.write(wire, b"probe: a line that is not JSON-RPC\n")
        return "answered anyway"

    return server


def malformed() -> None:
    """A hand-made server that answers initialize and tools/list well, and every tool call with
    a result that is not one (its content is not a list)."""
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue  # a notification
        result: dict[str, Any] = {"content": "not a list"}
        if request["method"] == "initialize":
            result = {
                "protocolVersion": request["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "malformed", "version": "0"},
            }
        elif request["method"] == "tools/list":
            result = {"tools": [{"name": "answer", "inputSchema": {"type": "object"}}]}
        print(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}), flush=True)


def main(argv: list[str]) -> None:
    mode = argv[1] if len(argv) > 1 else "stdio"
    wire = os.dup(1)  # before the SDK diverts fd 1 to stderr, to keep the protocol's stdout clean
    if mode == "http":
        probe(wire).run("streamable-http", host="127.0.0.1", port=int(argv[2]))
    elif mode == "empty":
        MCPServer("empty").run()
    elif mode == "malformed":
        malformed()
    else:
        probe(wire).run()


if __name__ == "__main__":
    main(sys.argv)
