"""MCP servers as tool providers: every server in the `mcpServers` file that Claude Desktop,
Cursor and VS Code read becomes a capability, and each of its tools one the model can call.

Why it is built this way:

- Workers are threaded synchronous code; the MCP SDK is async (anyio). One event loop thread per
  process owns every session, and each session lives its whole life in one task of that loop —
  entered and left there, as anyio's cancel scopes demand. A worker thread hands the loop a call
  with `run_coroutine_threadsafe` and waits at most the call's timeout (and a little slack).
- A server is someone else's program: it may not start, crash, hang or print garbage. None of
  that raises out of a call or holds a worker. A server that fails to start is one line and is
  left out; one that crashes or hangs during a call is marked unavailable (one line, one warning
  in the log): its tools disappear and its later calls are refused at once.
- A stdio server sees its config's `env` over a minimal environment (PATH, HOME, LANG and the
  SDK's few harmless defaults), never the worker's API keys; nor can it read them from the
  worker's memory or /proc: the worker is non-dumpable and the server runs isolated
  (coop/tools/mcp_isolation.py). What any server returns is scrubbed before the model reads
  it. A stdio server's stderr never reaches the worker's log: its last lines are kept for the
  error messages.
- Each tool reaches the model as `<server>__<tool>`, so tools of different servers never clash
  and the model can tell where a tool comes from.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TextIO, TypeVar, cast

import anyio
import httpx2
import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from coop.sandbox import undumpable
from coop.secrets import scrub
from coop.text import HASH_CHARS, one_line
from coop.tools import Invocation, ToolOutput, ToolSpec
from coop.tools.mcp_config import SEPARATOR, ServerConfig
from coop.tools.mcp_isolation import (
    default_isolation,
    isolated,
    unavailable,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_META = "coop/idempotency-key"
"""The `_meta` key of a tools/call request that carries the call's idempotency key."""
NAME_CHARS = 64
"""The longest tool name the OpenAI tools API takes (`coop.tools.NAME`)."""
_NAME_JUNK = re.compile(r"[^A-Za-z0-9_-]")
"""Characters a tool's name may not carry to the model."""
SLACK = 5.0
"""Seconds a worker waits beyond a call's own timeout before it gives up on the loop itself."""
SHUTDOWN_GRACE = 2.0
"""Seconds a session has to close politely (an HTTP DELETE, a stdio server's exit on EOF)."""
CLOSE_TIMEOUT = 10.0
"""Seconds `close()` waits for a server to shut down: the grace, then the SDK's own bounded
escalation for a stdio server that ignores EOF (2 s, SIGTERM, 2 s, SIGKILL, 2 s)."""
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)
"""The MCP SDK's own HTTP timeouts (a server may hold a response stream open); calls have
their own timeout on top."""
LIST_PAGES = 50
"""At most this many pages of tools/list: a server whose cursor never ends cannot hang a start."""
STDERR_LINES = 20
"""Lines of a stdio server's stderr kept for error messages."""
STDERR_LINE_CHARS = 4096
"""Bytes of one stderr line read at a time: a server writing without newlines stays bounded."""
TAIL_CHARS = 160
"""Characters of stderr, or of a garbage line, quoted in an error message."""
STDERR_SETTLE = 0.25
"""Seconds given to a server that is exiting to finish writing its stderr, for the message."""
MINIMAL_ENV = ("LANG",)
"""Variables of the worker's environment a stdio server sees besides the SDK's (PATH, HOME, …)."""
CLIENT_INFO = types.Implementation(name="coop", version="0.1.0")
"""How coop introduces itself to a server."""
SDK_LOGGER = "mcp"
"""The MCP SDK logs a server's faults with a traceback each (one per garbage line on stdout);
this module reports each as one line, so the SDK's own log is kept to CRITICAL unless it was
configured."""

if logging.getLogger(SDK_LOGGER).level == logging.NOTSET:
    logging.getLogger(SDK_LOGGER).setLevel(logging.CRITICAL)

_T = TypeVar("_T")


def tool_name(server: str, tool: str, taken: set[str]) -> str:
    """`<server>__<tool>` as the OpenAI tools API takes it, unique among `taken` (and added to it).

    Characters outside [A-Za-z0-9_-] become `_`. A name that is too long, or already taken (two
    tools that differ only in such characters), keeps what fits and ends in `_` and a short hash
    of the tool's own name — so the same listing always gives the same names."""
    full = f"{server}{SEPARATOR}{_NAME_JUNK.sub('_', tool)}"
    name, attempt = full, 0
    while len(name) > NAME_CHARS or name in taken:
        digest = hashlib.sha256(f"{tool}\0{attempt}".encode()).hexdigest()[:HASH_CHARS]
        name, attempt = f"{full[: NAME_CHARS - HASH_CHARS - 1]}_{digest}", attempt + 1
    taken.add(name)
    return name


def _spec(name: str, tool: types.Tool) -> ToolSpec:
    """What the model sees of a tool; a call is safe to repeat only if the server says so."""
    hints = tool.annotations
    safe = hints is not None and bool(hints.read_only_hint or hints.idempotent_hint)
    return ToolSpec(
        name=name,
        description=tool.description or tool.title or tool.name,
        parameters=tool.input_schema,
        unsafe_to_repeat=not safe,
    )


def _render(result: types.CallToolResult) -> str:
    """A tool's result as the model reads it: text as is, anything else summarized."""
    parts = [_block(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) or "(no output)"


def _block(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.mime_type}, {_size(block.data)}]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link {block.uri}{f', {block.mime_type}' if block.mime_type else ''}]"
    resource = block.resource
    if isinstance(resource, types.TextResourceContents):
        return f"[resource {resource.uri}]\n{resource.text}"
    return f"[resource {resource.uri}, {resource.mime_type or 'binary'}, {_size(resource.blob)}]"


def _size(base64: str) -> str:
    size = len(base64) * 3 // 4
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KB"


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside task-group wrappings (exception groups, duck-typed so
    that Python 3.10 needs no backport)."""
    while (inner := getattr(exc, "exceptions", None)) and isinstance(inner, tuple):
        exc = inner[0]
    return exc


def _reason(exc: BaseException) -> str:
    """An exception from a transport or session, as the end of one line."""
    exc = _leaf(exc)
    if isinstance(exc, MCPError):
        closed = exc.code == types.CONNECTION_CLOSED
        return "the connection closed" if closed else f"error {exc.code}: {exc.message}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename}"
    if isinstance(exc, ValidationError):
        return "it answered with a malformed message"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _StderrTail:
    """A stdio server's stderr: a pipe drained by a thread that keeps only the last lines."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.file: TextIO = os.fdopen(write, "w")
        self._lines: deque[str] = deque(maxlen=STDERR_LINES)
        self.drained = threading.Event()  # the server, and any child of it, closed stderr
        threading.Thread(target=self._drain, args=(read,), name="mcp-stderr", daemon=True).start()

    def _drain(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in iter(lambda: pipe.readline(STDERR_LINE_CHARS), b""):
                if line := raw.decode(errors="replace").strip():
                    self._lines.append(line)
        self.drained.set()

    def handed_over(self) -> None:
        """The server has its copy of the pipe (or never will): ours goes, so the drain ends
        when the server's does."""
        self.file.close()

    def last(self) -> str:
        return one_line(" | ".join(self._lines)[-TAIL_CHARS:], TAIL_CHARS)


class _Loop:
    """The process's one event loop, on a daemon thread, that owns every MCP session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()  # alive until done: the loop keeps weak refs
        threading.Thread(target=self.loop.run_forever, name="mcp-loop", daemon=True).start()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as a task of its own (called on the loop's thread)."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


_LOOP: _Loop | None = None
"""The process's loop, made by the first `open_servers`."""
_LOOP_LOCK = threading.Lock()
"""So that two threads opening servers at once make one loop."""
_LIVE: set[McpServer] = set()
"""Servers whose session task has not ended: what the exit handler waits for."""


def _shared_loop() -> _Loop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            _LOOP = _Loop()
            atexit.register(_close_all)
        return _LOOP


def _close_all() -> None:
    """At exit: stop every server at once and wait for them all, within one CLOSE_TIMEOUT."""
    servers = list(_LIVE)
    for server in servers:
        server.stop_soon()
    deadline = time.monotonic() + CLOSE_TIMEOUT
    for server in servers:
        server.ended.wait(max(0.0, deadline - time.monotonic()))


class McpServer:
    """One MCP server as a `ToolProvider`: its name is the config's, and the capability's."""

    def __init__(self, config: ServerConfig, loop: _Loop) -> None:
        self.name = config.name
        self.config = config
        # a stdio server's level, and why it cannot run here: tried on the caller's thread, as
        # a trial would stall the loop
        self.isolation = (
            (config.isolation or default_isolation()) if config.command is not None else None
        )
        self._unisolated = unavailable(self.isolation) if self.isolation is not None else None
        self.ended = threading.Event()  # its session task is over and its process gone
        self._loop = loop
        self._session: ClientSession | None = None
        self._scope: anyio.CancelScope | None = None
        self._wake: anyio.Event | None = None
        self._stopping = False
        self._fault: str | None = None  # why it is unavailable; set once
        self._fault_lock = threading.Lock()
        self._stderr: _StderrTail | None = None
        self._garbage: str | None = None  # the last line on its stdout that was not JSON-RPC
        self._phase = "start"  # what it was doing when a start fails
        self._listed: list[types.Tool] = []
        self._specs: list[ToolSpec] = []
        self._targets: dict[str, str] = {}  # the model's name of a tool -> the server's

    def tools(self) -> list[ToolSpec]:
        return [] if self._fault else list(self._specs)

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        if self._fault:
            return ToolOutput.error(f"MCP server {self.name} is unavailable: {self._fault}")
        target = self._targets.get(tool)
        if target is None:
            return ToolOutput.error(f"MCP server {self.name} has no tool {tool!r}")
        future = self._loop.submit(self._call(target, args, at.key, at.timeout))
        try:
            output = future.result(at.timeout + SLACK)
        except concurrent.futures.TimeoutError:
            future.cancel()
            output = self._broken(f"{target} did not answer within {at.timeout:g}s")
            self.stop_soon()
        return ToolOutput(output.ok, scrub(output.text))

    def close(self) -> None:
        """Shut the session and the server down; returns within CLOSE_TIMEOUT whatever it does."""
        with self._fault_lock:
            self._fault = self._fault or "closed"
        self.stop_soon()
        self.ended.wait(CLOSE_TIMEOUT)

    def stop_soon(self) -> None:
        """`stop`, from any thread."""
        self._loop.loop.call_soon_threadsafe(self.stop)

    def stop(self) -> None:
        """Wind the session task down (on the loop's thread): the session, then the transport,
        get SHUTDOWN_GRACE to close politely before they are cancelled."""
        self._stopping = True
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, self._loop.loop.time() + SHUTDOWN_GRACE
            )
        if self._wake is not None:
            self._wake.set()

    def name_tools(self, taken: set[str]) -> None:
        """Give the listed tools the names the model sees, unique among `taken`."""
        for tool in self._listed:
            name = tool_name(self.name, tool.name, taken)
            self._specs.append(_spec(name, tool))
            self._targets[name] = tool.name

    async def run(self, started: asyncio.Future[str | None], timeout: float) -> None:
        """The server's whole life in one task: start, serve calls until stopped, shut down.
        `started` gets None once it listed its tools, or the line that says why not."""
        self._wake = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                if self._stopping:
                    self.stop()
                async with AsyncExitStack() as stack:
                    try:
                        problem = await self._start(stack, timeout)
                    except Exception as exc:
                        problem = self._failed_start(exc, timeout)
                    if problem is not None:
                        await self._settle()
                        problem = self._explained(problem)
                    started.set_result(problem)
                    if problem is None:
                        await self._wake.wait()
                    self.stop()
        except Exception as exc:  # a task of the session or transport failed, and took it down
            if not started.done():
                started.set_result(self._explained(self._failed_start(exc, timeout)))
            elif self._session is not None:
                self._broken(f"its session ended: {_reason(exc)}{self._detail()}")
        finally:
            self._session = None
            if not started.done():
                started.set_result("stopped before it started")
            _LIVE.discard(self)
            self.ended.set()

    async def _start(self, stack: AsyncExitStack, timeout: float) -> str | None:
        config = self.config
        if config.url is not None:
            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers=dict(config.headers), timeout=HTTP_TIMEOUT)
            )
            streams = await stack.enter_async_context(
                streamable_http_client(config.url, http_client=client)
            )
        else:
            if self.isolation is None or self._unisolated is not None:
                level = self.isolation.value if self.isolation else "?"
                return f"isolation {level} does not work on this node: {self._unisolated}"
            env = {name: os.environ[name] for name in MINIMAL_ENV if name in os.environ}
            params = stack.enter_context(
                isolated(
                    self.isolation,
                    StdioServerParameters(
                        command=config.command or "",
                        args=list(config.args),
                        env=env | dict(config.env),
                    ),
                )
            )
            self._stderr = _StderrTail()
            try:
                streams = await stack.enter_async_context(
                    stdio_client(params, errlog=self._stderr.file)
                )
            finally:
                self._stderr.handed_over()
        session = await stack.enter_async_context(
            ClientSession(*streams, message_handler=self._on_message, client_info=CLIENT_INFO)
        )
        with anyio.fail_after(timeout):
            self._phase = "initialize"
            await session.initialize()
            self._phase = "tools/list"
            self._listed = await _list_tools(session)
        if not self._listed:
            return "it lists no tools"
        self._session = session
        return None

    def _failed_start(self, exc: BaseException, timeout: float) -> str:
        leaf = _leaf(exc)
        if isinstance(leaf, TimeoutError):
            return f"did not answer {self._phase} within {timeout:g}s"
        if isinstance(leaf, MCPError) and leaf.code == types.CONNECTION_CLOSED:
            return f"closed the connection during {self._phase}"
        return _reason(leaf) if self._phase == "start" else f"{self._phase}: {_reason(leaf)}"

    async def _call(
        self, target: str, args: dict[str, Any], key: str, timeout: float
    ) -> ToolOutput:
        session = self._session
        if session is None:
            return self._broken("its session has ended")
        meta = cast(types.RequestParamsMeta, {IDEMPOTENCY_META: key})  # an open map
        try:
            with anyio.fail_after(timeout):
                result = await session.call_tool(target, args, meta=meta)
        except TimeoutError:
            self.stop()
            return self._broken(f"{target} did not answer within {timeout:g}s")
        except MCPError as exc:
            if exc.code != types.CONNECTION_CLOSED:
                return ToolOutput.error(f"{target} failed: {one_line(exc.message, 300)}")
            self.stop()
            await self._settle()
            return self._broken(f"closed the connection during {target}{self._detail()}")
        except Exception as exc:
            return ToolOutput.error(f"{target} failed: {one_line(_reason(exc), 300)}")
        return ToolOutput(not result.is_error, _render(result))

    def _broken(self, problem: str) -> ToolOutput:
        """Mark the server unavailable (logged once) and say so as a call's output."""
        line = scrub(one_line(problem, 300))
        with self._fault_lock:
            first, self._fault = self._fault is None, self._fault or line
        if first:
            log.warning("MCP server %s is unavailable: %s", self.name, line)
        return ToolOutput.error(f"MCP server {self.name}: {line}")

    def _explained(self, problem: str) -> str:
        """A failed start's line: the problem and what the server left behind."""
        return scrub(one_line(f"{problem}{self._detail()}", 300))

    def _detail(self) -> str:
        """What the server left behind that explains a fault: garbage on stdout, stderr."""
        notes = []
        if self._garbage:
            notes.append(f"stdout not JSON-RPC: {self._garbage!r}")
        if self._stderr is not None and (tail := self._stderr.last()):
            notes.append(f"stderr: {tail}")
        return f" ({'; '.join(notes)})" if notes else ""

    async def _settle(self) -> None:
        """Give a server that is exiting a moment to finish its last words on stderr."""
        if self._stderr is not None:
            with anyio.move_on_after(STDERR_SETTLE):
                while not self._stderr.drained.is_set():
                    await anyio.sleep(0.01)

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        """Notifications are not used; a transport error (a stdout line that is not JSON-RPC)
        is remembered for the error message of whatever it breaks."""
        if isinstance(message, ValidationError) and message.errors():
            self._garbage = one_line(str(message.errors()[0].get("input", "")), TAIL_CHARS)
        elif isinstance(message, Exception):
            self._garbage = one_line(str(message), TAIL_CHARS)


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    listed = await session.list_tools()
    tools = list(listed.tools)
    for _ in range(LIST_PAGES - 1):
        if listed.next_cursor is None:
            break
        page = types.PaginatedRequestParams(cursor=listed.next_cursor)
        listed = await session.list_tools(params=page)
        tools.extend(listed.tools)
    return tools


async def _start_all(loop: _Loop, servers: list[McpServer], timeout: float) -> list[str | None]:
    """Start the servers at once (on the loop's thread); None for each that started, or why not."""
    started: list[asyncio.Future[str | None]] = [loop.loop.create_future() for _ in servers]
    for server, future in zip(servers, started, strict=True):
        loop.spawn(server.run(future, timeout))
    if started:
        await asyncio.wait(started, timeout=timeout + SLACK / 2)
    problems: list[str | None] = []
    for server, future in zip(servers, started, strict=True):
        if not future.done():
            server.stop()
        problems.append(future.result() if future.done() else f"did not start in {timeout:g}s")
    return problems


def open_servers(configs: list[ServerConfig], timeout: float) -> tuple[list[McpServer], list[str]]:
    """Start every server of an `mcpServers` file (see `read_config`), all at once, each given
    `timeout` seconds to answer initialize and list its tools. Returns the servers that did,
    and one line for each that did not (it is left out). This process is made non-dumpable
    first: it holds the keys the servers must not read."""
    undumpable()
    loop = _shared_loop()
    servers = [McpServer(config, loop) for config in configs]
    _LIVE.update(servers)
    outcome = loop.submit(_start_all(loop, servers, timeout))
    try:
        problems = outcome.result(timeout + SLACK)
    except concurrent.futures.TimeoutError:
        for server in servers:
            server.stop_soon()
        problems = [f"did not start in {timeout:g}s"] * len(servers)
    started: list[McpServer] = []
    lines: list[str] = []
    taken: set[str] = set()
    for server, problem in zip(servers, problems, strict=True):
        if problem is None:
            server.name_tools(taken)
            started.append(server)
        else:
            lines.append(f"MCP server {server.name} ({server.config.where}): {problem}")
    return started, lines
