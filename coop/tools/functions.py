"""Python functions as tools: `@coop.tool` turns a typed, documented function into a tool the
model can call, in the worker's own process or, with resources, as a Ray task placed wherever
the cluster has them.

The schema the model sees comes from the function's annotations through pydantic, its
description from the docstring; the model's arguments are validated by the same pydantic model
before the call, and what does not fit is an output the model reads. Whatever the function
returns (text, a JSON-able value, a pydantic model) becomes text; what it raises becomes an
output too. A parameter annotated `ToolContext` is filled by coop, not the model: the call's
idempotency key, who calls it for which task, and a handle on the shared workspace.

A placed tool's call runs as a Ray task named for its objective, task and tool, never retried
by Ray (a call is not repeated behind the step ledger's back: the worker records what it
returned) and cancelled at its timeout. Each Python tool is a capability under its own name,
so tasks that need it go to workers that offer it, as other capabilities are routed.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, get_type_hints, overload

import pydantic
import pydantic_core
import ray
from typing_extensions import Unpack  # typing has it from 3.11; pydantic brings this

from coop.board import BoardClient
from coop.errors import CoopError
from coop.text import one_line
from coop.tools import Invocation, ToolOutput, ToolSpec

TOOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
"""A Python tool's name: an OpenAI function name that is also a capability name."""


class ToolDefinitionError(CoopError):
    """A function that cannot be a tool, or a tool that cannot be offered (one line)."""


@dataclass(frozen=True)
class Files:
    """The objective's shared workspace, as a tool function sees it: every write is made under
    the calling task's lease, keyed by the call's idempotency key (so a task redone after a
    crash does not write twice)."""

    board: BoardClient
    at: Invocation
    _writes: list[int] = field(default_factory=lambda: [0], repr=False)

    def list_files(self) -> list[tuple[str, int]]:
        """(path, size in bytes) of every file."""
        return self.board.list_files()

    def read(self, path: str) -> str | None:
        return self.board.read_file(path)

    def write(self, path: str, content: str) -> tuple[bool, str]:
        """(written, what the board said); the n-th write of a call has the n-th key."""
        self._writes[0] += 1
        key = f"{self.at.key}/py{self._writes[0]}"
        at = self.at
        return self.board.write_file(at.task_id, at.token, at.worker, path, content, key)


@dataclass(frozen=True)
class ToolContext:
    """What coop tells a tool function about its call (annotate a parameter with it)."""

    key: str  # the idempotency key: objective/task/step, the same on every attempt of the task
    objective_id: str
    task_id: int
    worker: str
    workspace: Files


@dataclass(frozen=True)
class Placement:
    """Where each call of a tool runs: with none of these, in the worker's process; else as a
    Ray task with them."""

    resources: Mapping[str, float] = field(default_factory=dict)
    num_cpus: float | None = None
    memory: int | None = None  # bytes
    runtime_env: Mapping[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(self.resources or self.num_cpus is not None or self.memory or self.runtime_env)

    def options(self) -> dict[str, Any]:
        """Ray's keyword arguments for the task (GPU and CPU go by their own keywords)."""
        custom = dict(self.resources)
        opts: dict[str, Any] = {}
        if "GPU" in custom:
            opts["num_gpus"] = custom.pop("GPU")
        cpus = custom.pop("CPU", self.num_cpus)
        if cpus is not None:
            opts["num_cpus"] = cpus
        if custom:
            opts["resources"] = custom
        if self.memory:
            opts["memory"] = self.memory
        if self.runtime_env:
            opts["runtime_env"] = dict(self.runtime_env)
        return opts

    def demand(self) -> dict[str, float]:
        """What one call asks of a single node, as `ray.nodes()` counts resources."""
        need = {k: float(v) for k, v in self.resources.items()}
        need.setdefault("CPU", 1.0 if self.num_cpus is None else float(self.num_cpus))
        if self.memory:
            need["memory"] = float(self.memory)
        return {k: v for k, v in need.items() if v > 0}


class Tool:
    """A function offered to the model as a tool; calling it calls the function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        placement: Placement | None = None,
        timeout: float | None = None,
    ) -> None:
        fn = fn.fn if isinstance(fn, Tool) else fn  # a tool renamed or placed anew
        if not callable(fn) or not inspect.isfunction(inspect.unwrap(fn)):
            raise ToolDefinitionError(f"{fn!r} is not a function: only functions can be tools")
        functools.update_wrapper(self, fn)
        self.fn: Callable[..., Any] = fn
        self.name: str = name or fn.__name__
        self.placement = placement or Placement()
        self.timeout = timeout
        where = f"tool {self.name!r} ({fn.__module__}.{fn.__qualname__})"
        if not TOOL_NAME.match(self.name):
            raise ToolDefinitionError(
                f"{where}: a tool's name is lower-case letters, digits, _ or -, at most 32 "
                "(give one with @coop.tool(name=...))"
            )
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"{where}: timeout must be positive seconds")
        self.description = inspect.getdoc(fn) or ""
        if not self.description.strip():
            raise ToolDefinitionError(f"{where} has no docstring: it is what the model reads")
        self.context, self.arguments = _arguments(fn, where)
        try:
            schema = self.arguments.model_json_schema()
        except (pydantic.PydanticUserError, pydantic_core.SchemaError) as exc:
            raise ToolDefinitionError(f"{where}: {one_line(str(exc), 200)}") from None
        schema.pop("title", None)
        self.parameters = schema
        self.is_async = inspect.iscoroutinefunction(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<coop tool {self.name}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        """By reference when the module holds this very tool (its module is imported where
        it is unpickled: a node imports the tool by its path), else the function and options."""
        module = sys.modules.get(self.fn.__module__)
        qualname: str = self.fn.__qualname__
        if self.fn.__module__ != "__main__" and getattr(module, qualname, None) is self:
            return qualname
        return (Tool, (self.fn, self.name, self.placement, self.timeout))

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters, timeout=self.timeout or 0.0)

    def invoke(self, args: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Validate, call, and turn what it returned or raised into an output."""
        try:
            fitted = self.arguments.model_validate(args)
        except pydantic.ValidationError as exc:
            said = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return ToolOutput.error(f"bad arguments for {self.name}: {one_line(said, 300)}")
        kwargs = {k: getattr(fitted, k) for k in type(fitted).model_fields}
        if self.context:
            kwargs[self.context] = context
        try:
            value = self.fn(**kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
        except Exception as exc:  # a tool that raises is an output the model reads
            return ToolOutput.error(f"{self.name} failed: {type(exc).__name__}: {exc}")
        return as_text(self.name, value)


async def _awaited(value: Any) -> Any:
    return await value


def as_text(name: str, value: Any) -> ToolOutput:
    """What a tool returned, as the text the model reads."""
    if isinstance(value, str):
        return ToolOutput(True, value)
    if value is None:
        return ToolOutput(True, "(no output)")
    try:
        if isinstance(value, pydantic.BaseModel):
            return ToolOutput(True, value.model_dump_json())
        return ToolOutput(True, pydantic_core.to_json(value).decode())
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        kind = type(value).__name__
        return ToolOutput.error(
            f"{name} returned a {kind}, which cannot be turned into text: {one_line(str(exc), 120)}"
        )


def _arguments(fn: Callable[..., Any], where: str) -> tuple[str, type[pydantic.BaseModel]]:
    """The name of the ToolContext parameter ("" if none), and a pydantic model of the rest."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an annotation that names nothing importable
        raise ToolDefinitionError(f"{where}: its annotations do not resolve: {exc}") from None
    context = ""
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *{param.name} cannot be a tool's parameter")
        if param.name not in hints:
            raise ToolDefinitionError(f"{where}: parameter {param.name!r} has no annotation")
        hint = hints[param.name]
        if hint is ToolContext:
            context = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hint, default)
    try:
        model = pydantic.create_model(
            f"{fn.__name__}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )
    except (pydantic.PydanticUserError, pydantic_core.SchemaError, TypeError) as exc:
        said = one_line(str(exc).split("\n\n", 1)[0], 200)
        message = f"{where}: a parameter's type cannot be described: {said}"
        raise ToolDefinitionError(message) from None
    return context, model


class Options(TypedDict, total=False):
    """What `@coop.tool(...)` takes: a name, a placement (each call a Ray task with
    `resources={"GPU": 1}`, `num_cpus=`, `memory=` bytes, `runtime_env=`) and a timeout in
    seconds."""

    name: str
    resources: Mapping[str, float]
    num_cpus: float
    memory: int
    runtime_env: Mapping[str, Any]
    timeout: float


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(**options: Unpack[Options]) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None, /, **options: Unpack[Options]
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """`@coop.tool`, or `@coop.tool(...)` with `Options`."""
    placement = Placement(
        dict(options.get("resources") or {}),
        options.get("num_cpus"),
        options.get("memory"),
        options.get("runtime_env"),
    )

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(f, options.get("name"), placement, options.get("timeout"))

    return make(fn) if fn is not None else make


def load(path: str) -> Tool:
    """The tool at `package.module:function` (`coop join --tool`): a `@coop.tool`, or a plain
    typed, documented function made one; looked for on sys.path and in the current directory."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ToolDefinitionError(f"--tool {path!r}: give it as package.module:function")
    here = os.getcwd()  # as uvicorn and rq do: `coop start --tool mytools:f` beside mytools.py
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)  # workers find it too: Ray adds the driver's cwd to theirs
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised on import
        said = one_line(f"{type(exc).__name__}: {exc}", 200)
        raise ToolDefinitionError(f"--tool {path!r} does not import: {said}") from None
    found = getattr(module, attr, None)
    if isinstance(found, Tool):
        return found
    if found is None or not inspect.isfunction(found):
        raise ToolDefinitionError(f"--tool {path!r}: {module_name} has no function {attr!r}")
    return Tool(found)


class FunctionProvider:
    """One Python tool, under its own name as capability."""

    def __init__(self, tool: Tool, board: BoardClient) -> None:
        self.name = tool.name
        self.tool = tool
        self.board = board

    def tools(self) -> list[ToolSpec]:
        return [self.tool.spec()]

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        oid = at.key.split("/", 1)[0]
        context = ToolContext(at.key, oid, at.task_id, at.worker, Files(self.board, at))
        if not self.tool.placement:
            return self.tool.invoke(args, context)
        task = _placed.options(
            name=f"coop:{oid}:task-{at.task_id}:{self.name}",
            max_retries=0,  # a call is never repeated behind the step ledger's back
            **self.tool.placement.options(),
        )
        ref = task.remote(self.tool, args, context)
        try:
            out: ToolOutput = ray.get(ref, timeout=at.timeout)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            return ToolOutput.error(
                f"{self.name} did not answer within {at.timeout:g}s; its Ray task was cancelled"
            )
        except ray.exceptions.RayError as exc:  # its worker died, its runtime_env failed
            said = one_line(str(exc).strip().splitlines()[-1] if str(exc).strip() else "", 200)
            return ToolOutput.error(f"{self.name} failed: {type(exc).__name__}: {said}")
        return out

    def close(self) -> None:
        """Nothing held: a placed call's task ends with the call."""


@ray.remote
def _placed(tool: Tool, args: dict[str, Any], context: ToolContext) -> ToolOutput:
    """One placed call, on the node Ray chose for its resources."""
    return tool.invoke(args, context)


def check_placeable(tools: list[Tool]) -> None:
    """One line for a placed tool no node of the cluster could ever run (its resources exceed
    every node's totals): said at start, not a call that waits forever."""
    if not tools:
        return
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    nodes: list[dict[str, float]] = [n.get("Resources", {}) for n in alive]
    for t in tools:
        need = t.placement.demand() if t.placement else {}
        if not need or any(all(have.get(k, 0.0) >= v for k, v in need.items()) for have in nodes):
            continue
        short = next(
            (k for k, v in need.items() if all(have.get(k, 0.0) < v for have in nodes)), ""
        )
        if short:
            most = max((have.get(short, 0.0) for have in nodes), default=0.0)
            raise ToolDefinitionError(
                f"tool {t.name!r} asks for {need[short]:g} {short}: no node of the cluster has "
                f"that much (the most any node has: {most:g})"
            )
        raise ToolDefinitionError(
            f"tool {t.name!r} asks for {need}: no single node of the cluster has all of it"
        )
