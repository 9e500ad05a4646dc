"""MCP servers as tool providers, against real third-party servers — `mcp-server-time` (Python,
stdio) and `@modelcontextprotocol/server-everything` (Node, through npx) — and, for what no
well-made server does (crash, hang, garbage on stdout, show its request's `_meta` and its
environment), the small probe server in tests/support/mcp_servers.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from coop.tools import NAME, Invocation, ToolError, ToolOutput
from coop.tools.mcp import (
    CLOSE_TIMEOUT,
    IDEMPOTENCY_META,
    SLACK,
    McpServer,
    open_servers,
    tool_name,
)
from coop.tools.mcp_config import read_config
from tests.support import mcp_nonsense
from tests.support.mcp_servers import SCRIPT
from tests.support.procs import SECRET, wait_for

START = 60.0
"""Seconds a healthy server gets to start: generous, for a loaded machine."""
PROBE = {"command": sys.executable, "args": [str(SCRIPT)]}
"""The probe over stdio, run by the tests' own interpreter."""


def probe(mode: str = "stdio", *more: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(SCRIPT), mode, *more], **extra}


def nonsense(mode: str) -> dict[str, Any]:
    """A server that is not JSON-RPC (mcp_nonsense.py): `garbage` or `babble`."""
    return {"command": sys.executable, "args": [str(mcp_nonsense.SCRIPT), mode]}


def config(tmp_path: Path, **servers: dict[str, Any]) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def started(
    tmp_path: Path, timeout: float = START, **servers: dict[str, Any]
) -> dict[str, McpServer]:
    """The servers of a config, by name; every one of them must start."""
    opened, lines = open_servers(read_config(config(tmp_path, **servers)), timeout)
    assert lines == []
    return {server.name: server for server in opened}


def at(key: str = "k", timeout: float = 30) -> Invocation:
    """A call's invocation, as the worker would make it."""
    return Invocation(key=key, task_id=7, token=1, worker="w-1", timeout=timeout)


def text(server: McpServer, tool: str, args: dict[str, Any] | None = None, key: str = "k") -> str:
    """A call that must succeed, as the model reads it."""
    output = server.call(f"{server.name}__{tool}", args or {}, at(key))
    assert output.ok, output.text
    return output.text


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's API key, which no server may see or echo back."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, McpServer]]:
    """mcp-server-time and the probe over stdio, shared by the tests that do not break them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", SECRET)
        servers = started(
            tmp_path_factory.mktemp("healthy"),
            time={"command": sys.executable, "args": ["-m", "mcp_server_time"]},
            probe={**PROBE, "env": {"PROBE_GREETING": "hello"}},
        )
    yield servers
    for server in servers.values():
        server.close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def unavailable() -> Iterator[list[str]]:
    """The warnings coop.tools.mcp logs, as lines."""
    handler, logger = Lines(), logging.getLogger("coop.tools.mcp")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def running(marker: str) -> list[int]:
    """The live processes (zombies waiting to be reaped do not count) whose command line holds
    `marker`: a server, and its isolation's wrapper, have their own pids only in the host's
    pid namespace."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


BAD_FILES = {
    "absent": (None, "no such file"),
    "not JSON": ("{mcpServers: 1", "not JSON (Expecting property name"),
    "a list": ("[]", 'expected {"mcpServers"'),
    "no mcpServers": ('{"servers": {}}', 'expected {"mcpServers"'),
    "neither command nor url": ('{"mcpServers": {"a": {"args": []}}}', "either a command"),
    "both command and url": (
        '{"mcpServers": {"a": {"command": "x", "url": "http://h"}}}',
        "either",
    ),
    "a bad name": ('{"mcpServers": {"my server": {"command": "x"}}}', "server name 'my server'"),
    "args not strings": ('{"mcpServers": {"a": {"command": "x", "args": "y"}}}', "args must"),
    "env not strings": ('{"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}', "env must"),
    "not a URL": ('{"mcpServers": {"a": {"url": "ftp://h/mcp"}}}', "url must"),
    "a name twice": ('{"mcpServers": {"a": {"command": "x"}, "a": {"url": "http://h"}}}', "twice"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_a_bad_config_file_is_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    content, problem = BAD_FILES[case]
    path = tmp_path / "mcp.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ToolError) as raised:
        read_config(path)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"MCP config {path}: ") and problem in line, line


def test_tool_names_are_namespaced_fit_the_openai_api_and_never_clash() -> None:
    taken: set[str] = set()
    assert tool_name("time", "get_current_time", taken) == "time__get_current_time"
    assert tool_name("fs", "read-file", taken) == "fs__read-file"
    dotted, underscored = tool_name("fs", "a.b", taken), tool_name("fs", "a_b", taken)
    assert dotted == "fs__a_b" and underscored.startswith("fs__a_b_") and underscored != dotted
    long = tool_name("srv", "x" * 100, taken)
    assert len(long) == 64 and long.startswith("srv__xxx")
    assert tool_name("srv", "x" * 100 + "!", taken) not in {long}
    assert all(NAME.fullmatch(name) for name in taken) and len(taken) == 6
    assert tool_name("fs", "a_b", set()) == "fs__a_b"  # the same listing gives the same names


def test_mcp_server_time_lists_and_answers(healthy: dict[str, McpServer]) -> None:
    server = healthy["time"]
    specs = {spec.name: spec for spec in server.tools()}
    assert set(specs) == {"time__get_current_time", "time__convert_time"}
    assert not specs["time__get_current_time"].unsafe_to_repeat  # it says it is read-only
    assert specs["time__get_current_time"].parameters["required"] == ["timezone"]
    now = json.loads(text(server, "get_current_time", {"timezone": "Etc/UTC"}))
    seconds = abs(datetime.fromisoformat(now["datetime"]) - datetime.now(timezone.utc))
    assert now["timezone"] == "Etc/UTC" and seconds.total_seconds() < 120
    wrong = server.call("time__get_current_time", {"timezone": "Mars/Olympus"}, at())
    assert not wrong.ok and "Mars/Olympus" in wrong.text
    assert server.call("time__get_current_time", {}, at()).ok is False  # an argument missing
    assert server.tools(), "an error from a tool leaves the server available"


def test_the_idempotency_key_reaches_the_request(healthy: dict[str, McpServer]) -> None:
    meta = json.loads(text(healthy["probe"], "meta", key="objective/task-7/step-2"))
    assert meta[IDEMPOTENCY_META] == "objective/task-7/step-2"


def test_a_stdio_server_sees_its_config_env_and_no_secret(healthy: dict[str, McpServer]) -> None:
    env = json.loads(text(healthy["probe"], "env"))
    assert env["PROBE_GREETING"] == "hello"
    harmless = {"HOME", "PATH", "LANG", "LC_CTYPE", "LOGNAME", "SHELL", "TERM", "USER", "PWD"}
    assert set(env) - harmless == {"PROBE_GREETING"}
    assert env.get("PWD", "/tmp") == "/tmp"  # set by bubblewrap: the sandbox's working dir
    assert SECRET not in json.dumps(env)


def test_calls_from_many_threads_at_once(healthy: dict[str, McpServer]) -> None:
    with ThreadPoolExecutor(8) as pool:
        echoed = list(
            pool.map(lambda n: text(healthy["probe"], "echo", {"text": f"#{n}"}), range(32))
        )
    assert echoed == [f"#{n}" for n in range(32)]


def test_what_a_server_returns_is_scrubbed(healthy: dict[str, McpServer]) -> None:
    echoed = text(healthy["probe"], "echo", {"text": f"the key is {SECRET}, or sk-abcdef123456"})
    assert echoed == "the key is ***, or ***"


def test_a_stray_line_on_stdout_is_tolerated_and_logs_nothing(
    healthy: dict[str, McpServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert text(healthy["probe"], "garble") == "answered anyway"
    assert [r for r in caplog.records if r.name.startswith(("mcp", "coop"))] == []
    assert healthy["probe"].tools()


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npx")), reason="needs node and npx")
def test_server_everything_through_npx(tmp_path: Path) -> None:
    servers = started(
        tmp_path,
        timeout=300,  # npx's first run downloads the package
        everything={"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]},
    )
    server = servers["everything"]
    try:
        names = {spec.name for spec in server.tools()}
        assert {"everything__echo", "everything__get-tiny-image", "everything__get-env"} <= names
        assert all(NAME.fullmatch(name) for name in names)
        assert text(server, "echo", {"message": "hello"}) == "Echo: hello"
        image = text(server, "get-tiny-image")
        assert "[image/png, " in image and "KB]" in image
        env = json.loads(text(server, "get-env"))
        assert "OPENAI_API_KEY" not in env and SECRET not in json.dumps(env)
    finally:
        server.close()


@pytest.fixture(scope="module")
def http_probe() -> Iterator[str]:
    """The probe serving streamable HTTP on loopback, in a process of its own; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return False
        return True

    try:
        wait_for(listening, START, "the HTTP probe to listen")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


def test_a_streamable_http_server(tmp_path: Path, http_probe: str) -> None:
    server = started(tmp_path, web={"url": http_probe, "headers": {"X-Probe": "configured"}})["web"]
    try:
        assert "web__echo" in {spec.name for spec in server.tools()}
        assert json.loads(text(server, "meta", key="k-http"))[IDEMPOTENCY_META] == "k-http"
        assert text(server, "header", {"name": "x-probe"}) == "configured"
    finally:
        server.close()


def test_servers_that_cannot_start_are_one_line_each_and_the_rest_start(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    begun = time.monotonic()
    servers, lines = open_servers(
        read_config(
            config(
                tmp_path,
                good=PROBE,
                missing={"command": "/no/such/mcp-server"},
                garbage=nonsense("garbage"),
                empty=probe("empty"),
                refused={"url": closed, "headers": {"Authorization": f"Bearer {SECRET}"}},
            )
        ),
        START,
    )
    assert time.monotonic() - begun < START
    assert [server.name for server in servers] == ["good"]
    servers[0].close()
    assert all("\n" not in line and SECRET not in line for line in lines), lines
    missing, garbage, empty, refused = lines
    assert missing == (
        "MCP server missing (/no/such/mcp-server): command not found: /no/such/mcp-server"
    )
    assert garbage.startswith("MCP server garbage (") and "closed the connection during " in garbage
    assert "not JSON-RPC: 'Welcome to a server that talks nonsense!'" in garbage
    assert empty.startswith("MCP server empty (") and empty.endswith("it lists no tools")
    assert refused.startswith(f"MCP server refused ({closed}): initialize: "), refused


def test_a_server_that_never_answers_initialize_is_one_line_after_the_timeout(
    tmp_path: Path,
) -> None:
    begun = time.monotonic()
    servers, (line,) = open_servers(read_config(config(tmp_path, babble=nonsense("babble"))), 2)
    assert servers == [] and time.monotonic() - begun < 2 + SLACK
    assert "did not answer initialize within 2s" in line and "not JSON-RPC: 'Welcome" in line


def test_a_server_that_crashes_mid_call_is_unavailable(
    tmp_path: Path, unavailable: list[str]
) -> None:
    server = started(tmp_path, crashy=PROBE)["crashy"]
    output = server.call("crashy__crash", {}, at())
    assert not output.ok and "\n" not in output.text
    assert "closed the connection during crash" in output.text
    assert "stderr: probe: crashing on purpose" in output.text  # its last words
    assert server.tools() == []
    begun = time.monotonic()
    later = server.call("crashy__echo", {"text": "x"}, at())
    assert time.monotonic() - begun < 0.1
    assert not later.ok and later.text.startswith("MCP server crashy is unavailable: ")
    assert len(unavailable) == 1 and "crashy" in unavailable[0]
    server.close()


def test_a_server_that_hangs_on_a_call_answers_within_the_timeout(
    tmp_path: Path, unavailable: list[str]
) -> None:
    server = started(tmp_path, hangs=PROBE)["hangs"]
    begun = time.monotonic()
    output = server.call("hangs__hang", {}, at(timeout=1))
    assert time.monotonic() - begun < 1 + 2
    assert not output.ok and output.text == "MCP server hangs: hang did not answer within 1s"
    assert server.tools() == [] and not server.call("hangs__echo", {"text": "x"}, at()).ok
    assert unavailable == ["MCP server hangs is unavailable: hang did not answer within 1s"]
    begun = time.monotonic()
    server.close()
    assert time.monotonic() - begun < CLOSE_TIMEOUT


def test_a_malformed_answer_is_one_line_and_the_server_stays(tmp_path: Path) -> None:
    server = started(tmp_path, odd=probe("malformed"))["odd"]
    try:
        output = server.call("odd__answer", {}, at())
        assert output == ToolOutput(False, "answer failed: it answered with a malformed message")
        assert server.tools()
    finally:
        server.close()


FROZEN = """
import sys
from dataclasses import replace
from pathlib import Path
from coop.tools import Invocation
from coop.tools.mcp import open_servers
from coop.tools.mcp_config import read_config
(server,), _ = open_servers(read_config(Path(sys.argv[1])), 60)
at = Invocation(key="k", task_id=7, token=1, worker="w-1", timeout=30)
print("started", flush=True)
sys.stdin.readline()
print(server.call("frozen__freeze", {}, replace(at, timeout=0.5)).ok, flush=True)
"""
"""A worker that leaves with a frozen server and closes nothing: the exit handler must."""


def test_leaving_the_process_with_a_frozen_server_is_bounded(tmp_path: Path) -> None:
    marker = f"frozen-{os.getpid()}-{time.monotonic_ns()}"  # stdio mode ignores it
    worker = subprocess.Popen(
        [sys.executable, "-c", FROZEN, str(config(tmp_path, frozen=probe("stdio", marker)))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": SECRET},
    )
    assert worker.stdin is not None and worker.stdout is not None and worker.stderr is not None
    assert worker.stdout.readline() == "started\n"
    assert running(marker)  # the server, about to freeze
    worker.stdin.close()
    ok = worker.stdout.readline().strip()  # the freeze timed out; now the worker leaves
    begun = time.monotonic()
    assert worker.wait(START) == 0 and ok == "False"
    assert time.monotonic() - begun < CLOSE_TIMEOUT
    assert running(marker) == []
    stderr = worker.stderr.read().strip()
    assert "\n" not in stderr and "frozen is unavailable" in stderr, stderr  # one warning
