"""What an MCP stdio server can reach of the worker that starts it, at each isolation the
machine has (skipped, saying why, where one is missing): a hostile server
(tests/support/mcp_hostile.py), started by the real McpServer code in a worker process that
has the keys in its environment, tries the worker's /proc environ and memory, the home dir,
coop's state dir and the `.env`, and answers with what it got, reversed too. Each case asserts
the refusal itself, and that no key, not even a scrubbed one, came back."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coop.sandbox import NOBODY
from coop.tools import ToolError
from coop.tools.mcp_config import read_config
from coop.tools.mcp_isolation import Isolation, default_isolation, unavailable
from tests.support.procs import SECRET
from tests.test_mcp import START, config, started, text

HOSTILE = Path(__file__).with_name("support") / "mcp_hostile.py"
"""The hostile server's script."""
STORE_SECRET = "wv-test-DO-NOT-LEAK-7c1d0b93aa"
"""The memory store's key, the worker's other secret."""
DENIED = "PermissionError: Permission denied"
"""How a refused open reads in the hostile server's answer."""
ABSENT = "FileNotFoundError: No such file or directory"
"""How a path the server cannot see reads in its answer."""
ROOT = os.geteuid() == 0
"""Whether the tests run as root, as coop may (then `user` works, and a worker of another
user is made with setpriv)."""
SETPRIV = (f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
"""How the tests become NOBODY."""
WORKER = """
import os, sys
from coop.tools import Invocation
from coop.tools.mcp import open_servers
from coop.tools.mcp_config import ServerConfig
from coop.tools.mcp_isolation import Isolation
isolation, python, script = sys.argv[1:]
env = {"PRY_PIDS": str(os.getpid()), "PRY_FILES": os.environ.get("PRY_FILES", "")}
server = ServerConfig("hostile", python, (script,), env, isolation=Isolation(isolation))
opened, lines = open_servers([server], 60)
at = Invocation(key="k", task_id=7, token=1, worker="w-1", timeout=30)
print(os.getpid(), *lines, *(s.call("hostile__pry", {}, at).text for s in opened), sep="\\n")
"""
"""A worker: it opens the hostile server the way a worker actor does, with the keys in its
environment from its start, and prints its pid and what the server answered (or why it did
not start)."""


@dataclass(frozen=True)
class Case:
    """An isolation, and who the worker runs as."""

    isolation: Isolation
    root: bool  # the worker runs as root (else as a user of its own)

    def __str__(self) -> str:
        return f"{self.isolation.value}-{'root' if self.root else 'user'}"


@pytest.fixture
def home() -> Iterator[Path]:
    """A home dir for the worker, outside the private /tmp of a sandbox (so that its mask, not
    the private /tmp, is what hides it): a state dir and a project's `.env` that hold the key,
    readable by their owner only, as coop leaves them."""
    path = Path(tempfile.mkdtemp(prefix=".coop-mcp-test-", dir=Path.home()))
    for name in ("state/journal", "project/.env"):
        (path / name).parent.mkdir()
        (path / name).write_text(f"OPENAI_API_KEY={SECRET}\n")
        (path / name).chmod(0o600)
    yield path
    shutil.rmtree(path)


def reachable_python() -> str | None:
    """An interpreter NOBODY may run (the hostile server needs only the standard library), or
    None."""
    for python in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if python and shutil.which("setpriv"):
            probe = subprocess.run(
                ["setpriv", *SETPRIV, "--", python, "-c", ""], capture_output=True, check=False
            )
            if probe.returncode == 0:
                return python
    return None


def as_other_user(argv: list[str]) -> list[str]:
    """`argv` run by a user that is not root, as coop on a node where it is not: itself when
    the tests do not run as root, else NOBODY, with coop's interpreter shown again past the
    dir (root's home) that would keep NOBODY from it. Skips, saying why, when it cannot."""
    if not ROOT:
        return argv
    if shutil.which("bwrap") is None or shutil.which("setpriv") is None:
        pytest.skip("a worker of another user needs bwrap and setpriv here")
    prefix = Path(sys.prefix).resolve()
    if Path(sys.base_prefix).resolve() != prefix:
        pytest.skip("a worker of another user is made here for a Python outside a virtualenv")
    closed = [parent for parent in prefix.parents if not parent.stat().st_mode & 0o001][:1]
    shown = ["--dev-bind", "/", "/"]
    for top in closed:
        shown += ["--tmpfs", str(top)]
        for parent in reversed(prefix.parents):
            if parent != top and parent.is_relative_to(top):
                shown += ["--perms", "0755", "--dir", str(parent)]
        shown += ["--ro-bind", str(prefix), str(prefix)]
    return ["bwrap", *shown, "--", "setpriv", *SETPRIV, "--", *argv]


def pry(case: Case, home: Path) -> tuple[int, str]:
    """The worker's pid and what the hostile server answered it, at `case`."""
    python = sys.executable
    if case.isolation is Isolation.USER and case.root:
        python = reachable_python() or pytest.skip("no interpreter NOBODY may run")
    if case.root:
        if not ROOT:
            pytest.skip("needs root")
        if why := unavailable(case.isolation):
            pytest.skip(f"isolation {case.isolation.value} does not work here: {why}")
    argv = [sys.executable, "-c", WORKER, case.isolation.value, python, str(HOSTILE)]
    env = {
        **os.environ,
        "OPENAI_API_KEY": SECRET,
        "WEAVIATE_API_KEY": STORE_SECRET,
        "HOME": str(home),
        "COOP_STATE_DIR": str(home / "state"),
        "PRY_FILES": f"{home / 'state/journal'}:{home / 'project/.env'}",
    }
    worker = subprocess.run(
        argv if case.root else as_other_user(argv),
        env=env,
        cwd=home / "project",
        capture_output=True,
        text=True,
        timeout=2 * START,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr
    pid, answer = worker.stdout.split("\n", 1)
    return int(pid), answer


def assert_no_key(answer: str) -> None:
    """No key came back in any form: not as is, not reversed, not even scrubbed."""
    for key in (SECRET, STORE_SECRET):
        assert key not in answer and key[::-1] not in answer, answer
    assert "***" not in answer and "_API_KEY=" not in answer, answer


ROOT_CASES = [Case(Isolation.SANDBOX, True), Case(Isolation.USER, True)]
"""coop as root: the server runs as NOBODY, without capabilities."""


@pytest.mark.parametrize("case", ROOT_CASES, ids=str)
def test_a_server_of_root_reaches_no_key(case: Case, home: Path) -> None:
    pid, answer = pry(case, home)
    assert_no_key(answer)
    lines = answer.split("\nreversed: ")[0].splitlines()
    assert lines[0] == f"uid: {NOBODY}"
    refusal = ABSENT if case.isolation is Isolation.SANDBOX else DENIED
    for target in (f"/proc/{pid}/environ", f"/proc/{pid}/mem"):
        assert f"{target}: {refusal}" in lines, answer
    for path in ("state/journal", "project/.env"):
        assert f"{home / path}: {refusal}" in lines, answer


def test_a_server_of_a_worker_of_another_user_reaches_no_key(home: Path) -> None:
    """Isolation `none`: a server of the worker's own user, whom only the worker's being
    non-dumpable keeps from its environment and memory."""
    pid, answer = pry(Case(Isolation.NONE, False), home)
    assert_no_key(answer)
    for target in (f"/proc/{pid}/environ", f"/proc/{pid}/mem"):
        assert f"{target}: {DENIED}" in answer, answer


def test_a_sandboxed_server_of_a_worker_of_another_user_sees_none_of_its_processes(
    home: Path,
) -> None:
    pid, answer = pry(Case(Isolation.SANDBOX, False), home)
    if answer.startswith("MCP server hostile"):
        pytest.skip(answer.strip())  # no sandbox for a user here: it said why
    assert_no_key(answer)
    for target in (f"/proc/{pid}/environ", f"/proc/{pid}/mem"):
        assert f"{target}: {ABSENT}" in answer, answer


def test_isolation_user_needs_root_and_says_so_in_one_line(home: Path) -> None:
    _, answer = pry(Case(Isolation.USER, False), home)
    assert answer.strip() == (
        f"MCP server hostile ({sys.executable}): isolation user does not work on this node: "
        "coop does not run as root, so it cannot run a server as another user"
    )


ONE_OF = "isolation must be one of sandbox, user, none"
"""What a stdio server's entry with a bad isolation is told."""
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "an unknown isolation": ({"command": "x", "isolation": "jail"}, ONE_OF),
    "not a string": ({"command": "x", "isolation": 1}, ONE_OF),
    "on a url": (
        {"url": "http://h/mcp", "isolation": "none"},
        "isolation is for a stdio server (a command), not a url",
    ),
}
"""Entries whose isolation is wrong, and what their line says."""


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_isolation_is_one_line_naming_the_server(case: str, tmp_path: Path) -> None:
    entry, problem = BAD[case]
    path = config(tmp_path, odd=entry)
    with pytest.raises(ToolError) as raised:
        read_config(path)
    line = str(raised.value)
    assert line == f"MCP config {path}: server odd: {problem}"


def test_the_default_is_the_strongest_that_works_here_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    default_isolation.cache_clear()
    with caplog.at_level(logging.INFO, logger="coop.tools.mcp_isolation"):
        chosen, again = default_isolation(), default_isolation()
    expected = next(
        (level for level in (Isolation.SANDBOX, Isolation.USER) if unavailable(level) is None),
        Isolation.NONE,
    )
    assert chosen is again is expected
    if shutil.which("bwrap") and ROOT and shutil.which("setpriv"):
        assert chosen is Isolation.SANDBOX  # as on CI: coop as root, bubblewrap installed
    (said,) = [record.getMessage() for record in caplog.records]
    assert ("unisolated" if chosen is Isolation.NONE else f'"{chosen.value}"') in said, said


@pytest.mark.skipif(not (shutil.which("node") and shutil.which("npx")), reason="needs node and npx")
@pytest.mark.parametrize("isolation", [Isolation.USER, Isolation.SANDBOX], ids=str)
def test_server_everything_through_npx_isolated(
    isolation: Isolation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """npx needs a HOME it can write (its cache) and the network to the npm registry."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    if why := unavailable(isolation):
        pytest.skip(f"isolation {isolation.value} does not work here: {why}")
    entry = {
        "command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-everything"],
        "isolation": isolation.value,
    }
    server = started(tmp_path, timeout=300, everything=entry)["everything"]
    try:
        assert text(server, "echo", {"message": "hello"}) == "Echo: hello"
        env = json.loads(text(server, "get-env"))
        assert SECRET not in json.dumps(env) and env["HOME"] != str(Path.home())
    finally:
        server.close()
