"""Tool statistics: per tool, across the objective, its calls, failures, seconds and bytes —
each call counted once, from its journaled `tool` event."""

from __future__ import annotations

from dataclasses import replace

from coop.types import ToolStats


class ToolTally:
    def __init__(self) -> None:
        self._tools: dict[str, ToolStats] = {}

    def count(self, tool: str, ok: bool, seconds: float, size: int) -> None:
        stats = self._tools.setdefault(tool, ToolStats())
        stats.calls += 1
        stats.failed += not ok
        stats.seconds += seconds
        stats.bytes += size

    def view(self) -> dict[str, ToolStats]:
        """A copy for a snapshot."""
        return {name: replace(stats) for name, stats in self._tools.items()}
