"""Running the real `coop` console script as a user would, and waiting for what it does."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from coop import constants as C
from coop.testing.cluster import COOP

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root."""
SECRET = "sk-test-DO-NOT-LEAK-4f9a2c71e0"
"""The API key every test process is given; it must appear in no output, file or record."""
STATE_DIR = Path(tempfile.mkdtemp(prefix="coop-test-state-"))
"""The test session's COOP_STATE_DIR: never the user's ~/.coop."""


def unique(text: str) -> str:
    """An objective no other test uses: boards are detached and outlive a test."""
    return f"{text} [{uuid.uuid4().hex[:6]}]"


def coop_env(cluster: Any, standin: Any = None, **extra: str) -> dict[str, str]:
    """The environment of a `coop` process: this one's, less any OPENAI_/COOP_/RAY_ADDRESS
    setting of the developer's, pointed at `cluster` (a ray Cluster) and `standin`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COOP_", "RAY_ADDRESS"))
    }
    env.update(C.LOOPBACK_ENV, PYTHONUNBUFFERED="1", COLUMNS="200", COOP_STATE_DIR=str(STATE_DIR))
    if cluster is not None:
        env["RAY_ADDRESS"] = cluster.address
    if standin is not None:
        env.update(OPENAI_BASE_URL=standin.base_url, OPENAI_API_KEY=SECRET)
    env.update(extra)
    return env


def run_coop(
    *args: str,
    env: dict[str, str],
    timeout: float = 120,
    cwd: Path | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COOP), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def side_by_side(*calls: Callable[[], T]) -> list[T]:
    """Each of `calls` in a thread of its own, their values in the order given: for commands
    that do not depend on one another (a `coop` or `ray` process mostly starts up, and on two
    cores two at a time take the time of one)."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def run_coops(
    *commands: list[str], env: dict[str, str], timeout: float = 120
) -> list[subprocess.CompletedProcess[str]]:
    """`run_coop` of each of `commands`, side by side."""
    run = functools.partial(run_coop, env=env, timeout=timeout)
    return side_by_side(*(functools.partial(run, *command) for command in commands))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Bad input's contract: a non-zero exit, no traceback anywhere, one line on stderr."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(lines) == 1 and lines[0].startswith("coop: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def spawn_coop(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(
        [str(COOP), *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True
    )


def spawn_start(
    objective: str, *flags: str, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[str], str]:
    """`coop start` in the background, returned once its board exists (or it has exited)."""
    from coop import registry
    from coop.text import objective_id

    proc = spawn_coop("start", objective, *flags, env=env, log=log)
    oid = objective_id(objective)
    wait_for(lambda: oid in registry.board_ids() or proc.poll() is not None, 60, "the board")
    return proc, oid


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    explain: Callable[[], str] | None = None,
) -> Any:
    """`predicate()`'s first true value within `timeout` seconds; else a failure naming
    `what`, with `explain()` (made only then: the end of the logs, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    said = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{said}")


def closed_port() -> int:
    """A loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


JOINED = re.compile(r"joined \S+ as (\S+)")


def worker_name(log: Path, timeout: float = 60) -> str:
    """The name of the worker a `coop join` process started (it says so in its log)."""

    def named() -> str | None:
        found = JOINED.search(log.read_text()) if log.exists() else None
        return found.group(1) if found else None

    name: str = wait_for(named, timeout, f"the worker of {log.name}")
    return name
