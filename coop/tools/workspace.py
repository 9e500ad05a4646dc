"""The `workspace` tools: list, read and write the objective's shared files, which live on the
board (see board/files.py) so that every worker on every node sees the same ones.

A write is made under the task's lease (a worker that lost it cannot write) and keyed by the
call's idempotency key (a task redone after a crash does not write twice).
"""

from __future__ import annotations

from typing import Any

from coop.board import BoardClient
from coop.board.files import MAX_FILE_BYTES
from coop.tools import Invocation, ToolOutput, ToolSpec

PATH = {"type": "string", "description": "a relative path, like notes/costs.md"}
SPECS = [
    ToolSpec(
        "workspace_list",
        "List the files of the team's shared workspace, with their sizes.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    ),
    ToolSpec(
        "workspace_read",
        "Read a file of the team's shared workspace.",
        {
            "type": "object",
            "properties": {"path": PATH},
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "workspace_write",
        "Write (create or replace) a file in the team's shared workspace, where every agent "
        f"can read it. At most {MAX_FILE_BYTES // 1024} KiB.",
        {
            "type": "object",
            "properties": {"path": PATH, "content": {"type": "string"}},
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    ),
]


class Workspace:
    name = "workspace"

    def __init__(self, board: BoardClient) -> None:
        self.board = board

    def tools(self) -> list[ToolSpec]:
        return list(SPECS)

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        if tool == "workspace_list":
            files = self.board.list_files()
            lines = [f"{path}  ({size:,} bytes)" for path, size in files]
            return ToolOutput(True, "\n".join(lines) or "the workspace is empty")
        if tool == "workspace_read":
            text = self.board.read_file(str(args["path"]))
            if text is None:
                return ToolOutput.error(f"no file {args['path']!r} in the workspace")
            return ToolOutput(True, text)
        ok, said = self.board.write_file(
            at.task_id, at.token, at.worker, str(args["path"]), str(args["content"]), at.key
        )
        return ToolOutput(ok, said)

    def close(self) -> None:
        """The files stay on the board."""
