"""The `mcpServers` file (the format Claude Desktop, Cursor and VS Code read), parsed and
checked. Apart from the sessions (coop/tools/mcp.py) because reading a config needs none of the
MCP SDK, whose import costs most of a second: every process that starts, a worker with no MCP
server, `coop start` itself, reads its tool settings, and only one with servers loads the SDK."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coop.config import redact_url
from coop.text import one_line
from coop.tools import ToolError
from coop.tools.mcp_isolation import Isolation

SEPARATOR = "__"
"""Between the server's name and the tool's in the name the model sees."""
SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
"""A server name: fit for a capability and a tool-name prefix, leaving room for the tool."""
ISOLATION = "isolation"
"""The key of a stdio server's entry that names its isolation (`Isolation`)."""
ISOLATIONS = tuple(isolation.value for isolation in Isolation)
"""The values it takes."""


@dataclass(frozen=True)
class ServerConfig:
    """One entry of `mcpServers`: a command to run over stdio, or a streamable-HTTP URL."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    isolation: Isolation | None = None  # a stdio server's; None: the node's default

    @property
    def where(self) -> str:
        """The server as an error message names it: its command, or its URL less secrets."""
        return self.command if self.command is not None else redact_url(self.url or "")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that names no key twice (json would keep the last one, silently)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(f"{key!r} appears twice in one object")
        data[key] = value
    return data


def read_config(path: Path) -> list[ServerConfig]:
    """The servers an `mcpServers` file describes, in its order; a bad file is one ToolError."""

    def bad(problem: str) -> ToolError:
        return ToolError(f"MCP config {path}: {problem}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise bad("no such file") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OSError, ValueError) as exc:
        raise bad(one_line(str(exc))) from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise bad('expected {"mcpServers": {"<name>": {"command": …} or {"url": …}, …}}')
    return [_server_config(name, entry, bad) for name, entry in servers.items()]


def _server_config(name: str, entry: Any, bad: Callable[[str], ToolError]) -> ServerConfig:
    if not SERVER_NAME.fullmatch(name):
        raise bad(f"server name {name!r}: use 1 to 32 letters, digits, _ or -")
    if not isinstance(entry, dict) or ("command" in entry) == ("url" in entry):
        raise bad(f"server {name}: give it either a command (stdio) or a url (streamable HTTP)")
    if "command" in entry:
        command, args, env = entry["command"], entry.get("args", []), entry.get("env", {})
        if not isinstance(command, str) or not command.strip():
            raise bad(f"server {name}: command must be a non-empty string")
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise bad(f"server {name}: args must be a list of strings")
        if not _string_map(env):
            raise bad(f"server {name}: env must map names to strings")
        isolation = entry.get(ISOLATION)
        if isolation is not None and isolation not in ISOLATIONS:
            raise bad(f"server {name}: {ISOLATION} must be one of {', '.join(ISOLATIONS)}")
        return ServerConfig(
            name,
            command=command,
            args=tuple(args),
            env=env,
            isolation=None if isolation is None else Isolation(isolation),
        )
    if ISOLATION in entry:
        raise bad(f"server {name}: {ISOLATION} is for a stdio server (a command), not a url")
    url, headers = entry["url"], entry.get("headers", {})
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise bad(f"server {name}: url must be an http:// or https:// URL")
    if not _string_map(headers):
        raise bad(f"server {name}: headers must map names to strings")
    return ServerConfig(name, url=url, headers=headers)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
