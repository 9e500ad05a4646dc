"""What agents can do besides write: tools, offered to the model through the OpenAI tools API
(function calling) and run by the worker that holds the task.

A `ToolProvider` is a source of tools — a built-in (the shared workspace, sandboxed Python,
HTTP fetch) or one MCP server — under a capability name the board routes tasks by. Each of its
tools is described by a `ToolSpec` (what the model sees) and answers a call with a
`ToolOutput` (what the model gets back). A provider never raises for what a tool did: a
failed call is an output with `ok=False` that the model can read and act on; only a provider
that cannot work at all (a server that will not start) is an error, and its tools are then
left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from coop.errors import CoopError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What the OpenAI tools API accepts as a function name."""


class ToolError(CoopError):
    """A tool provider cannot be used at all (one line; its tools are left out)."""


@dataclass(frozen=True)
class ToolSpec:
    name: str  # unique among the worker's tools, NAME-shaped
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    unsafe_to_repeat: bool = False  # a call cut short by a crash is not simply run again
    timeout: float = 0.0  # seconds a call may take; 0: the toolbox's

    def openai(self) -> dict[str, Any]:
        """The spec as the OpenAI tools API takes it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class Invocation:
    """Who calls a tool, for which task, and the call's idempotency key."""

    key: str  # objective/task/step: the same on every attempt of the task, so a redo is seen
    task_id: int
    token: int  # the lease's fencing token: a write under a lost lease is refused
    worker: str
    timeout: float  # seconds the call may take


@dataclass(frozen=True)
class ToolOutput:
    ok: bool
    text: str  # what the model reads: a result, or what went wrong

    @classmethod
    def error(cls, text: str) -> ToolOutput:
        return cls(False, text)


class ToolProvider(Protocol):
    """A source of tools under one capability name (`workspace`, `python`, an MCP server's)."""

    name: str

    def tools(self) -> list[ToolSpec]: ...

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        """Run `tool` with validated `args` within `at.timeout`. A provider that can pass the
        idempotency key `at.key` on does (a keyed write, a request header, MCP request
        metadata). Never raises for what the tool did."""
        ...

    def close(self) -> None: ...
