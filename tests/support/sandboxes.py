"""The `python` tool's sandbox levels as tests take them: each level this node can run (a
level it cannot is skipped, saying why), limits small enough to keep tests quick, and a way to
find code still running after its run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from coop.sandbox import Isolation, Limits, ProcessSandbox, Sandbox, SandboxUnavailable, choose

STRONG = [Isolation.BUBBLEWRAP, Isolation.NAMESPACES]
"""The levels that must contain the code."""
QUICK = Limits(cpu_seconds=2, wall_seconds=5, memory_mb=256, processes=16, output_bytes=4096)
"""Limits small enough to keep every test quick."""
SYSTEM_PYTHON = "/usr/bin/python3"
"""An interpreter NOBODY can reach, for the `process` level under root when coop's own lies
where NOBODY cannot (a Python under /root: that level is then unavailable, and says so)."""


def sandbox_of(level: Isolation) -> Sandbox:
    """The sandbox of `level`, or the test skipped with the reason this node cannot run it."""
    try:
        return choose(level.value)
    except SandboxUnavailable as exc:
        problem = exc
    if level is Isolation.PROCESS and os.geteuid() == 0 and Path(SYSTEM_PYTHON).exists():
        return ProcessSandbox(python=SYSTEM_PYTHON)
    pytest.skip(f"{level.value} unavailable here: {problem}")


def strays() -> list[int]:
    """Processes still running some sandbox's code."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.name.isdigit() and argv[1:2] == [b"main.py"]:
                found.append(int(entry.name))
    return found
