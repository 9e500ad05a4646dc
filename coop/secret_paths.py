"""Where a node keeps what programs coop starts for others must not read, and where the
interpreter they may need lives: shared by the `python` tool's sandbox (coop/sandbox.py) and
the MCP servers' isolation (coop/tools/mcp_isolation.py), so that both hide the same things.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from dotenv import find_dotenv

from coop.constants import STATE_DIR_ENV  # not journal: the launcher has no click, no Ray

RUN = Path("/run")
"""The host's sockets (docker's, dbus's, systemd's)."""


def secret_paths() -> list[Path]:
    """What holds secrets: the home dir (keys, ~/.ray, ~/.coop), coop's state dir, /run and
    the `.env` coop would read. Those that exist, resolved, outermost only, never /."""
    home = Path.home()
    state = Path(os.environ.get(STATE_DIR_ENV) or home / ".coop").expanduser()
    dotenv = find_dotenv(usecwd=True)
    wanted = [home, state, RUN, *([Path(dotenv)] if dotenv else [])]
    found = outermost(path.resolve() for path in wanted if path.exists())
    return [path for path in found if path != Path("/")]


def interpreter_dirs() -> list[Path]:
    """The interpreter's installation dirs (a virtualenv's and its base's)."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return outermost(Path(path).resolve() for path in dirs)


def outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` less those inside another of them."""
    kept: list[Path] = []
    for path in sorted(set(paths)):
        if not within(path, kept):
            kept.append(path)
    return kept


def within(path: Path, parents: Iterable[Path]) -> bool:
    return any(path.is_relative_to(parent) for parent in parents)
