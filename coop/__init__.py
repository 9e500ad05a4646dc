"""coop: distributed, cooperative autonomous agents on Ray.

    import coop
    run = coop.run("Plan a community garden", llm="offline", max_tasks=5)
    print(run.answer.text)

The public API (`run`, `start`, `open`, `join`, `Run`, `tool`, `ToolContext`, `CoopError`,
`SettingError`) is loaded on first use, so that `import coop` stays cheap: Ray is imported
when a run or a tool needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coop.api import join, open, run, start
    from coop.declare import SettingError
    from coop.errors import CoopError
    from coop.runs import Run
    from coop.tools.functions import ToolContext, tool

__all__ = [
    "CoopError",
    "Run",
    "SettingError",
    "ToolContext",
    "join",
    "open",
    "run",
    "start",
    "tool",
]

_WHERE = {
    "run": "coop.api",
    "start": "coop.api",
    "open": "coop.api",
    "join": "coop.api",
    "Run": "coop.runs",
    "SettingError": "coop.declare",
    "CoopError": "coop.errors",
    "tool": "coop.tools.functions",
    "ToolContext": "coop.tools.functions",
}


def __getattr__(name: str) -> Any:
    """The public names, imported when first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module 'coop' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
