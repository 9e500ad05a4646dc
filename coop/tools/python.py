"""The `python` tool: code the model writes runs in a sandbox (see coop/sandbox.py), one
process per call, and the model reads what it printed and how it ended."""

from __future__ import annotations

from typing import Any

from coop.sandbox import Limits, Run, Sandbox
from coop.tools import Invocation, ToolOutput, ToolSpec

SPEC = ToolSpec(
    "python",
    "Run Python 3 code in a sandbox (no network, no files but a small scratch dir that is "
    "gone after the call, limited CPU time and memory) and return what it printed. Print "
    "what you want to see.",
    {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "a whole Python program"}},
        "required": ["code"],
        "additionalProperties": False,
    },
)


class Python:
    name = "python"

    def __init__(self, sandbox: Sandbox, limits: Limits | None = None) -> None:
        self.sandbox = sandbox
        self.limits = limits or Limits()

    def tools(self) -> list[ToolSpec]:
        return [SPEC]

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        wall = min(self.limits.wall_seconds, at.timeout)
        limits = Limits(**{**vars(self.limits), "wall_seconds": wall})
        run = self.sandbox.run(str(args["code"]), limits)
        return ToolOutput(run.exit_code == 0 and not run.truncated, describe(run))

    def close(self) -> None:
        """Each call's process is gone when it returns."""


def describe(run: Run) -> str:
    """How the run ended, then what it printed."""
    if run.timed_out:
        how = f"stopped: it ran past {run.seconds:.0f}s of wall time"
    elif run.cpu_exceeded:
        how = "stopped: it used up its CPU time"
    elif run.memory_exceeded:
        how = "stopped: it ran out of memory"
    elif run.scratch_exceeded:
        how = "stopped: it wrote more than its scratch space"
    elif run.exit_code < 0:
        how = f"killed by signal {-run.exit_code}"
    else:
        how = f"exit code {run.exit_code}"
    parts = [f"[{how}; sandbox: {run.isolation.value}]"]
    if run.stdout:
        parts.append(run.stdout)
    if run.stderr:
        parts.append(f"[stderr]\n{run.stderr}")
    if run.truncated:
        parts.append("[output cut at the limit; the run was stopped]")
    return "\n".join(parts)
