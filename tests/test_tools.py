"""The toolbox (every fault a model or a tool can make is an output, never a crash), the shared
workspace, the `python` tool over the sandbox, and what a worker's kit may hold."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from coop.board.files import MAX_FILE_BYTES
from coop.config import RunSettings
from coop.errors import CoopError
from coop.sandbox import Limits, SandboxUnavailable, choose
from coop.tools import Invocation, ToolOutput, ToolSpec
from coop.tools.box import MAX_OUTPUT_CHARS, Toolbox
from coop.tools.kit import Kit, read_caps
from coop.tools.mcp_config import ServerConfig
from coop.tools.python import Python
from coop.tools.workspace import Workspace
from coop.types import Lease
from tests.support.board import in_process
from tests.support.procs import SECRET

AT = Invocation("obj/7/2", 7, 1, "w", timeout=2.0)


class Echo:
    """A provider whose one tool does what its arguments say: answer, raise, hang, flood."""

    name = "echo"

    def tools(self) -> list[ToolSpec]:
        schema = {
            "type": "object",
            "properties": {"say": {"type": "string"}, "times": {"type": "integer"}},
            "required": ["say"],
            "additionalProperties": False,
        }
        return [ToolSpec("echo", "Say it back.", schema)]

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        if args["say"] == "raise":
            raise RuntimeError("the tool broke")
        if args["say"] == "hang":
            time.sleep(30)
        return ToolOutput(True, args["say"] * args.get("times", 1))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "name, arguments, ok, said",
    [
        ("echo", '{"say": "hi"}', True, "hi"),
        ("nope", "{}", False, "there is no tool 'nope'; the tools are: echo"),
        ("echo", "{not json", False, "bad arguments for echo: Expecting property name"),
        ("echo", '["a list"]', False, "bad arguments for echo: the arguments must be a JSON"),
        ("echo", '{"times": 2}', False, "bad arguments for echo: 'say' is a required property"),
        ("echo", '{"say": 3}', False, "bad arguments for echo: 3 is not of type 'string'"),
        ("echo", '{"say": "hi", "x": 1}', False, "Additional properties are not allowed"),
        ("echo", '{"say": "raise"}', False, "echo failed: RuntimeError: the tool broke"),
    ],
)
def test_every_fault_is_an_output_the_model_reads(
    name: str, arguments: str, ok: bool, said: str
) -> None:
    ran = Toolbox([Echo()]).run(name, arguments, AT)
    assert ran.output.ok is ok and said in ran.output.text


def test_a_tool_that_hangs_is_abandoned_at_its_timeout() -> None:
    began = time.monotonic()
    ran = Toolbox([Echo()]).run("echo", '{"say": "hang"}', AT)
    assert not ran.output.ok and "did not answer within 2s" in ran.output.text
    assert time.monotonic() - began < 5


def test_megabytes_are_cut_and_secrets_never_reach_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ran = Toolbox([Echo()]).run("echo", f'{{"say": "x{SECRET}", "times": 100000}}', AT)
    assert ran.size > 1_000_000 and len(ran.output.text) < MAX_OUTPUT_CHARS + 100
    assert "[output cut: " in ran.output.text and SECRET not in ran.output.text


def test_what_a_tool_answered_is_counted_in_bytes() -> None:
    """The tape's tool event says how big an answer was in bytes (UTF-8), not characters."""
    ran = Toolbox([Echo()]).run("echo", '{"say": "é🍅", "times": 3}', AT)
    assert ran.output.text == "é🍅" * 3 and ran.size == 3 * (2 + 4)


def test_the_workspace_is_shared_fenced_keyed_and_bounded() -> None:
    board = in_process("Share files", max_tasks=10)
    board.add(["write", "read"])
    writer, reader = board.lease("a"), board.lease("b")
    assert isinstance(writer, Lease) and isinstance(reader, Lease)
    box = Toolbox([Workspace(board)])
    at = Invocation("o/1/2", writer.task.id, writer.token, "a", 5.0)
    wrote = box.run("workspace_write", '{"path": "notes/plan.md", "content": "step one"}', at)
    assert wrote.output.ok and "wrote notes/plan.md" in wrote.output.text
    again = box.run("workspace_write", '{"path": "notes/plan.md", "content": "twice"}', at)
    assert "already written by this step" in again.output.text  # the same key: a redo
    seen = box.run("workspace_read", '{"path": "./notes//plan.md"}', AT)
    assert seen.output.text == "step one"
    assert "notes/plan.md  (8 bytes)" in box.run("workspace_list", "{}", AT).output.text
    for path, why in [("../etc/passwd", "no '..'"), ("/abs", "no leading /"), ("", "1 to 200")]:
        out = box.run("workspace_write", f'{{"path": "{path}", "content": "x"}}', at).output
        assert not out.ok and why in out.text
    big = '{"path": "big", "content": "' + "x" * (MAX_FILE_BYTES + 1) + '"}'
    out = box.run("workspace_write", big, replace(at, key="o/1/3")).output
    assert not out.ok and "more than a file may hold" in out.text
    board.complete(writer.task.id, writer.token, "a", "done")  # the lease ends with its task
    late = box.run("workspace_write", '{"path": "late", "content": "x"}', replace(at, key="o/1/4"))
    assert not late.output.ok and "lease on task #1 was lost" in late.output.text
    assert board.snapshot().files == [("notes/plan.md", 8)]


@pytest.mark.parametrize(
    "path", ["a\n/b", "notes\n", "\tnotes", "x\x00y", "report\u202etxt.md", "\u200bnotes", "a\x85b"]
)
def test_a_workspace_name_with_a_control_or_format_character_is_refused(path: str) -> None:
    board = in_process("Odd names", max_tasks=10)
    board.add(["write"])
    lease = board.lease("a")
    assert isinstance(lease, Lease)
    at = Invocation("o/1/2", lease.task.id, lease.token, "a", 5.0)
    box = Toolbox([Workspace(board)])
    out = box.run("workspace_write", json.dumps({"path": path, "content": "x"}), at).output
    assert not out.ok and "not written: a path has no control or format characters" in out.text
    assert "\n" not in out.text and board.snapshot().files == []


def test_a_name_is_a_file_or_a_folder_never_both() -> None:
    """Either order, and a folder deeper up: refused at the write with one line, so the
    workspace can always be exported as a folder."""
    board = in_process("Files and folders", max_tasks=10)
    board.add(["write"])
    lease = board.lease("a")
    assert isinstance(lease, Lease)
    box = Toolbox([Workspace(board)])
    keys = iter(range(100))

    def write(path: str) -> ToolOutput:
        at = Invocation(f"o/1/{next(keys)}", lease.task.id, lease.token, "a", 5.0)
        return box.run("workspace_write", json.dumps({"path": path, "content": "x"}), at).output

    assert write("notes").ok and write("docs/a/x.md").ok
    for path, why in [
        ("notes/x", "not written: notes is a file, so it cannot hold notes/x"),
        ("notes/deep/x", "not written: notes is a file, so it cannot hold notes/deep/x"),
        ("docs", "not written: docs is a folder (it holds docs/a/x.md), not a file"),
        ("docs/a", "not written: docs/a is a folder (it holds docs/a/x.md), not a file"),
        ("docs/a/x.md/y", "not written: docs/a/x.md is a file, so it cannot hold docs/a/x.md/y"),
    ]:
        out = write(path)
        assert not out.ok and out.text == why
    assert write("notes").ok and write("docs/a/y.md").ok  # a file again, a folder again
    assert [p for p, _ in board.snapshot().files] == ["docs/a/x.md", "docs/a/y.md", "notes"]


def available_sandbox() -> Any:
    try:
        return choose("auto")
    except SandboxUnavailable as exc:
        pytest.skip(f"no sandbox on this node: {exc}")


def test_python_runs_code_in_the_sandbox_and_says_how_it_ended() -> None:
    tool = Python(available_sandbox(), Limits(cpu_seconds=2, wall_seconds=5))
    box = Toolbox([tool])
    ok = box.run("python", '{"code": "print(sum(range(10)))"}', AT).output
    assert ok.ok and "45" in ok.text and "exit code 0" in ok.text and "sandbox:" in ok.text
    loop = box.run("python", '{"code": "while True: pass"}', AT).output
    assert not loop.ok and ("CPU time" in loop.text or "wall time" in loop.text)
    raised = box.run("python", '{"code": "raise SystemExit(3)"}', AT).output
    assert not raised.ok and "exit code 3" in raised.text


def test_python_calls_run_side_by_side() -> None:
    tool = Python(available_sandbox())
    outs: list[ToolOutput] = []
    threads = [
        threading.Thread(
            target=lambda i=i: outs.append(tool.call("python", {"code": f"print({i})"}, AT))
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o.text.splitlines()[-1] for o in outs) == ["0", "1", "2", "3"]


def test_a_kit_that_cannot_work_is_one_line_before_any_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = RunSettings(llm="offline", tools=("python",)).validate()
    with pytest.raises(CoopError, match="--cap 'GPU!'"):
        Kit(caps=("GPU!",)).check(settings)
    clash = ServerConfig(name="python", command="some-mcp-server")
    with pytest.raises(CoopError, match="has the name of a built-in tool"):
        Kit(mcp=(clash,)).check(settings)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SandboxUnavailable) as caught:
        Kit(sandbox="bubblewrap").check(settings)
    assert "\n" not in str(caught.value)
    assert read_caps(["gpu,Browser", " gpu "]) == ("browser", "gpu")
