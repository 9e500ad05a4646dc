"""What a worker can do: the run's built-in tools (`coop start --tools`), what its node adds
(`coop join --tools`, `--mcp FILE`, `--cap NAME`), and the sandbox its `python` tool runs in.

Checked in the `coop` process before a worker actor starts, so that a bad MCP file, a sandbox
the node lacks or a capability named like a tool is one line there; then assembled in the
actor, on the node that will run the tools.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coop.board import BoardClient
from coop.config import TOOL_CHOICES, RunSettings
from coop.errors import CoopError
from coop.sandbox import Limits, choose
from coop.secrets import keep_config
from coop.tools import ToolProvider
from coop.tools.box import Toolbox
from coop.tools.fetch import SPEC as FETCH
from coop.tools.fetch import Fetch
from coop.tools.functions import FunctionProvider, Tool, ToolDefinitionError, check_placeable
from coop.tools.mcp_config import SEPARATOR, ServerConfig, read_config
from coop.tools.python import SPEC as PYTHON
from coop.tools.python import Python
from coop.tools.workspace import SPECS as WORKSPACE
from coop.tools.workspace import Workspace

log = logging.getLogger(__name__)

MCP_START_TIMEOUT = 30.0
"""Seconds an MCP server has to start and list its tools before it is left out."""
CAP = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
"""A named capability: lower-case, like `gpu`, `browser`, `db-eu`."""
BUILTIN_NAMES = frozenset({*TOOL_CHOICES, *(s.name for s in (*WORKSPACE, PYTHON, FETCH))})
"""The built-in tools' names and capabilities: no Python tool may take one."""


@dataclass(frozen=True)
class Kit:
    """What a worker's node brings beyond the run's settings."""

    tools: tuple[str, ...] = ()  # built-ins enabled here on top of the run's
    mcp: tuple[ServerConfig, ...] = ()  # this node's MCP servers (their env may hold keys)
    caps: tuple[str, ...] = ()  # named capabilities: a GPU, a browser, a private database
    sandbox: str = ""  # the isolation asked for here; "" for the run's
    resources: dict[str, float] = field(default_factory=dict)  # Ray resources to place it by
    functions: tuple[Tool, ...] = ()  # Python tools (`@coop.tool`, `--tool module:function`)

    def builtins(self, settings: RunSettings) -> list[str]:
        return sorted(set(settings.tools) | set(self.tools))

    def check(self, settings: RunSettings) -> None:
        """One CoopError line for what cannot work (before any actor is started)."""
        for name in self.caps:
            if not CAP.match(name):
                raise CoopError(f"--cap {name!r}: lower-case letters, digits, . _ or -")
        for server in self.mcp:
            if server.name.lower() in (*TOOL_CHOICES, *self.caps):
                raise CoopError(
                    f"MCP server {server.name!r} has the name of a built-in tool or a --cap: "
                    "rename it in the file"
                )
        self.check_names()
        self.check_cluster()
        if "python" in self.builtins(settings):
            choose(self.sandbox or settings.sandbox)  # SandboxUnavailable, in one line

    def check_cluster(self) -> None:
        """Some node of the connected cluster can run each placed Python tool."""
        check_placeable([t for t in self.functions if t.placement])

    def check_names(self) -> None:
        """Each Python tool's name is its own: not another's, a built-in's, a --cap's or an MCP
        server's (whose tools are `server__tool`). Needs no cluster: said before connecting."""
        seen: set[str] = set()
        servers = {s.name.lower() for s in self.mcp}
        for t in self.functions:
            owners = {
                "another Python tool's": t.name in seen,
                "a built-in tool's": t.name in BUILTIN_NAMES,
                "a --cap's": t.name in self.caps,
                "an MCP server's": t.name.split(SEPARATOR, 1)[0] in servers,
            }
            taken = next((owner for owner, clash in owners.items() if clash), "")
            if taken:
                raise ToolDefinitionError(
                    f"two tools named {t.name!r}: the name is {taken}; "
                    "give one another with @coop.tool(name=...)"
                )
            seen.add(t.name)


def toolbox(board: BoardClient, settings: RunSettings, kit: Kit) -> tuple[Toolbox, str]:
    """The worker's tools, and the isolation its `python` tool has ("" without it). MCP
    servers that do not start are one warning each and are left out."""
    providers: list[ToolProvider] = []
    isolation = ""
    for name in kit.builtins(settings):
        if name == "workspace":
            providers.append(Workspace(board))
        elif name == "python":
            sandbox = choose(kit.sandbox or settings.sandbox)
            isolation = sandbox.isolation.value
            providers.append(Python(sandbox, Limits(scratch_mb=settings.scratch_mb)))
        elif name == "fetch":
            providers.append(Fetch(settings.fetch_allow))
    if kit.mcp:
        from coop.tools.mcp import open_servers  # the SDK: loaded by workers that have servers

        for config in kit.mcp:  # what the servers were given is masked in whatever they say
            keep_config(config.env, config.headers)
        servers, problems = open_servers(list(kit.mcp), MCP_START_TIMEOUT)
        for line in problems:
            log.warning("%s; its tools are left out", line)
        providers.extend(servers)
    providers.extend(FunctionProvider(t, board) for t in kit.functions)
    return Toolbox(providers), isolation


def read_caps(raw: Sequence[str]) -> tuple[str, ...]:
    """`--cap a --cap b,c` as one sorted tuple of names."""
    return tuple(sorted({n.strip().lower() for item in raw for n in item.split(",") if n.strip()}))


def mcp_file(path: str | None) -> tuple[ServerConfig, ...]:
    """The servers of an `--mcp` file, read here (a bad file is one ToolError line)."""
    return tuple(read_config(Path(path))) if path else ()
