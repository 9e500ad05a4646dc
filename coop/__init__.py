"""coop: distributed, cooperative autonomous agents on Ray."""

from coop.tools.functions import ToolContext, tool

__all__ = ["ToolContext", "tool"]
