"""Python functions as tools (`@coop.tool`): defined here, handed to worker actors through Ray's
serialization, called through the stand-in model's tool calls over HTTP; their outputs on the
tape. And every way a function or a set of tools can be wrong, as one line before anything
starts."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

import coop
from coop import crew, registry
from coop.board import BoardClient
from coop.config import RunSettings
from coop.simulate import Simulator
from coop.testing.standin import MakeStandIn
from coop.tools import Invocation, ToolOutput
from coop.tools.box import Toolbox
from coop.tools.functions import (
    FunctionProvider,
    Tool,
    ToolDefinitionError,
    as_text,
    check_placeable,
    load,
)
from coop.tools.kit import Kit
from coop.tools.mcp_config import ServerConfig
from coop.types import EventKind, Reason
from tests.support.procs import (
    STATE_DIR,
    assert_one_line_error,
    coop_env,
    run_coop,
    spawn_start,
    unique,
)


@coop.tool
def lookup(city: str, ctx: coop.ToolContext) -> dict[str, Any]:
    """The population of a city, and who asked."""
    return {"city": city, "people": len(city) * 1000, "key": ctx.key, "worker": ctx.worker}


@coop.tool(name="square", timeout=5)
async def square_later(n: int) -> int:
    """The square of n, after a moment."""
    await asyncio.sleep(0.01)
    return n * n


@coop.tool
def broken(reason: str) -> str:
    """A tool that always raises."""
    raise RuntimeError(f"broken on purpose: {reason}")


@coop.tool
def opaque() -> object:
    """A tool whose answer is no text."""
    return threading.Lock()


@coop.tool
def note(path: str, ctx: coop.ToolContext) -> str:
    """Writes a note to the shared workspace."""
    written, said = ctx.workspace.write(path, f"from task {ctx.task_id}")
    return f"{written}: {said}"


@coop.tool(num_cpus=0.1)
def dies(marker: str) -> str:
    """Counts its runs in a file, then ends its own process."""
    with open(marker, "a") as f:
        f.write("ran\n")
    os._exit(1)


@coop.tool(num_cpus=0.1, runtime_env={"env_vars": {"COOP_TOOL_TEST": "set by runtime_env"}})
def environ(name: str) -> str:
    """A variable of the process the call ran in."""
    return os.environ.get(name, "unset")


def _steps(board: BoardClient, tool: str) -> list[dict[str, Any]]:
    return [
        e.data
        for e in board.all_events()
        if e.kind is EventKind.STEP and e.data["kind"] == "tool" and e.data["tool"] == tool
    ]


def test_python_tools_in_worker_actors_answer_the_models_calls(
    make_standin: MakeStandIn,
    ray_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A planner (`coop start --workers 0`) and a worker actor started from this process with
    this module's tools: every task calls each; validation, raising, async, a value that is
    no text, the ToolContext's idempotency key and a workspace write are all on the tape."""
    server = make_standin(
        simulator=Simulator(fanout=2, limit=2),
        tool_args={
            "lookup": [{"city": "Oslo"}],
            "square": [{"n": "seven"}, {"n": 7}],
            "broken": [{"reason": "no"}],
            "opaque": [{}],
            "note": [{"path": "notes/n.md"}],
        },
    )
    env = coop_env(ray_cluster, server)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, env[name])
    objective = unique("Count the people of Oslo")
    start, oid = spawn_start(
        objective, "--workers", "0", "--max-steps", "20", env=env, log=tmp_path / "start.log"
    )
    board = registry.find(oid)
    kit = Kit(functions=(lookup, square_later, broken, opaque, note))
    workers = crew.launch_crew(
        board, board.run_settings(), objective, count=1, concurrency=1, kit=kit
    )
    workers.begin()
    (report,) = workers.wait(threading.Event())
    assert start.wait(60) == 0, (tmp_path / "start.log").read_text()
    assert report.completed == 3 and not report.fatal
    snap = board.snapshot()
    assert snap.reason is Reason.DONE
    offered = {w.worker: w.caps for w in snap.workers}[report.worker]
    assert {"lookup", "square", "broken", "opaque", "note"} <= set(offered)
    looked = _steps(board, "lookup")
    assert len(looked) == 3 and all(s["ok"] for s in looked)
    keys = {s["text"].split('"key":"')[1].split('"')[0] for s in looked}
    tasks = {e.data["task"] for e in board.all_events() if e.kind is EventKind.STEP}
    assert keys == {f"{oid}/{t}/2" for t in tasks}  # objective/task/step, the call's own
    squares = _steps(board, "square")
    assert squares[0]["ok"] is False and "bad arguments for square" in squares[0]["text"]
    assert [s["text"] for s in squares[1:]] == ["49", "49"]
    assert all(
        not s["ok"] and "broken failed: RuntimeError: broken on purpose: no" in s["text"]
        for s in _steps(board, "broken")
    )
    assert all(
        not s["ok"] and "opaque returned a lock" in s["text"] for s in _steps(board, "opaque")
    )
    notes = _steps(board, "note")
    assert sum(s["text"].startswith("True") for s in notes) >= 1
    assert board.read_file("notes/n.md") is not None


def test_results_become_text() -> None:
    assert as_text("t", "plain") == ToolOutput(True, "plain")
    assert as_text("t", {"a": [1, 2.5, None]}) == ToolOutput(True, '{"a":[1,2.5,null]}')
    assert as_text("t", None) == ToolOutput(True, "(no output)")
    out = as_text("t", object())
    assert not out.ok and "t returned a object, which cannot be turned into text" in out.text


def _tool(source: str) -> Callable[[], Tool]:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return lambda: Tool(namespace["f"])


@pytest.mark.parametrize(
    "source, said",
    [
        ("def f(a):\n    'Doc.'\n", "parameter 'a' has no annotation"),
        ("def f(a: int):\n    pass\n", "has no docstring"),
        (
            "import threading\ndef f(a: threading.Lock):\n    'Doc.'\n",
            "a parameter's type cannot be described",
        ),
        ("def f(*a: int):\n    'Doc.'\n", "*a cannot be a tool's parameter"),
        ("def F(a: int):\n    'Doc.'\nf = F\n", "a tool's name is lower-case"),
    ],
)
def test_a_function_that_cannot_be_a_tool_is_one_line(source: str, said: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        _tool(source)()
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "kit, said",
    [
        (Kit(functions=(lookup, lookup)), "the name is another Python tool's"),
        (Kit(functions=(coop.tool(name="python")(broken),)), "the name is a built-in tool's"),
        (
            Kit(functions=(coop.tool(name="workspace_read")(broken),)),
            "the name is a built-in tool's",
        ),
        (Kit(functions=(lookup,), caps=("lookup",)), "the name is a --cap's"),
        (
            Kit(functions=(coop.tool(name="time__now")(broken),), mcp=(ServerConfig("time"),)),
            "the name is an MCP server's",
        ),
    ],
)
def test_two_tools_with_one_name_are_one_line(kit: Kit, said: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        kit.check(RunSettings())
    assert said in str(caught.value)


@pytest.mark.parametrize(
    "path, said",
    [
        ("tests.support.nowhere:f", "does not import: ModuleNotFoundError"),
        ("tests.test_pytools:absent", "has no function 'absent'"),
        ("tests.test_pytools:test_results_become_text", "has no docstring"),
        ("tests.test_pytools", "give it as package.module:function"),
        ("tests.test_pytools:ToolOutput", "has no function 'ToolOutput'"),
    ],
)
def test_an_import_path_that_names_no_tool_is_one_line(path: str, said: str) -> None:
    with pytest.raises(ToolDefinitionError) as caught:
        load(path)
    assert said in str(caught.value)


def test_an_import_path_gives_the_tool_itself() -> None:
    assert load("tests.test_pytools:lookup") is lookup


def test_a_resource_no_node_has_is_one_line_naming_it(ray_cluster: Cluster) -> None:
    assert ray.is_initialized()
    check_placeable([coop.tool(num_cpus=1, memory=1024)(broken)])  # the head has that
    with pytest.raises(ToolDefinitionError) as caught:
        check_placeable([coop.tool(resources={"TPU": 1})(broken)])
    assert "asks for 1 TPU: no node of the cluster has that much" in str(caught.value)
    with pytest.raises(ToolDefinitionError, match="asks for 64 CPU"):
        check_placeable([coop.tool(num_cpus=64)(broken)])


@pytest.mark.parametrize(
    "args, said",
    [
        (["join", "x", "--tool", "tests.nowhere:f"], "--tool 'tests.nowhere:f' does not import"),
        (["join", "x", "--tool", "tests.test_pytools:absent"], "has no function 'absent'"),
        (
            ["start", "y", "--llm", "offline", *["--tool", "tests.test_pytools:lookup"] * 2],
            "two tools named 'lookup': the name is another Python tool's",
        ),
        (
            ["join", "x", "--cap", "note", "--tool", "tests.test_pytools:note"],
            "the name is a --cap's",
        ),
    ],
)
def test_bad_tools_on_the_command_line_are_one_line_before_connecting(
    args: list[str], said: str
) -> None:
    """No cluster is given or running for these: the line comes before any connection."""
    proc = run_coop(*args, env=coop_env(None, RAY_ADDRESS="127.0.0.1:1"), timeout=60)
    assert_one_line_error(proc, said)


def test_a_placed_call_is_never_retried_and_takes_its_runtime_env(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    """Ray retries a task whose worker died (3 times by default): a placed tool's call is made
    once — the step ledger, not Ray, decides what runs again."""
    board = registry.create_board(unique("Placed calls"), RunSettings(llm="offline"), STATE_DIR)
    box = Toolbox([FunctionProvider(t, board) for t in (dies, environ)])
    at = Invocation(f"{board.objective_id}/1/2", 1, 1, "w", timeout=60.0)
    marker = tmp_path / "runs"
    ran = box.run("dies", json.dumps({"marker": str(marker)}), at)
    assert not ran.output.ok and ran.output.text.startswith("dies failed: ")
    assert marker.read_text() == "ran\n"
    ran = box.run("environ", json.dumps({"name": "COOP_TOOL_TEST"}), at)
    assert ran.output == ToolOutput(True, "set by runtime_env")
