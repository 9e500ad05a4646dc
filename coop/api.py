"""coop as a library: `run`, `start`, `open` and `join`, the four things the CLI's `start`,
`status`/`events`/`results` and `join` do, for scripts, notebooks and Ray Jobs.

Settings are keyword arguments with the flags' names and defaults (`max_tasks=`, `workers=`,
`tools=`…), read from the same declaration as the flags and the `COOP_*` variables
(declare.py); a wrong one is a `SettingError` with the line the CLI prints. A process already
connected to Ray (`ray.init()`, a Ray Job's driver) keeps its connection; one that is not
joins the cluster it finds, or starts a local one, as `coop start` does.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from coop import config, journal, registry, tracing
from coop.board import BoardClient
from coop.config import JoinSettings, RunSettings, StartSettings
from coop.declare import SettingError, resolve
from coop.runs import Planning, Run

if TYPE_CHECKING:  # the planner, the workers and their tools are loaded by what runs them:
    # openai, mcp and pydantic cost `coop status` and every reader a second or more
    from pydantic import BaseModel

    from coop.planner.jobs import Review
    from coop.tools.functions import Tool
    from coop.worker import WorkerReport

_RUN = frozenset(f.name for f in fields(RunSettings))


@dataclass(frozen=True)
class Terminal:
    """What a person at a terminal adds to planning (the CLI's): a progress line and
    answering approvals at the prompt."""

    progress: Callable[[BoardClient], AbstractContextManager[None]] | None = None
    review: Review | None = None


def run(objective: str, *, answer_type: type[BaseModel] | None = None, **settings: Any) -> Run:
    """Plan `objective` to its end in this thread, with this process's workers, and write its
    answer and report as `coop start` does; the finished Run. `answer_type`: a pydantic model
    the answer is JSON of (`Run.answer_as(answer_type)` reads it), as `--answer-schema`."""
    settings, functions = own_tools(settings)
    values = _resolved(settings, answer_type)
    return plan(objective, values, background=False, explicit=settings, functions=functions)


def start(objective: str, *, answer_type: type[BaseModel] | None = None, **settings: Any) -> Run:
    """Begin `objective` and return once its board exists: the planner goes on in a thread of
    this process, with this process's workers. `Run.wait()` for its end; a script that ends
    sooner waits for it at exit (`Run.stop()` ends it sooner, its work kept)."""
    settings, functions = own_tools(settings)
    values = _resolved(settings, answer_type)
    return plan(objective, values, background=True, explicit=settings, functions=functions)


def own_tools(settings: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[Tool, ...]]:
    """`tools=` mixes built-in tools' names with Python functions (`tools=[search,
    "workspace"]`): the names are the run's setting, stored in its board; the functions are
    this process's workers' own tools, which reach its worker actors through Ray's pickling."""
    from coop.tools.functions import Tool

    given = settings.get("tools")
    if given is None or isinstance(given, str):
        return dict(settings), ()
    names = tuple(t for t in given if isinstance(t, str))
    functions = tuple(
        t if isinstance(t, Tool) else Tool(t) for t in given if not isinstance(t, str)
    )
    return {**settings, "tools": names}, functions


def _resolved(settings: Mapping[str, Any], answer_type: type[BaseModel] | None) -> dict[str, Any]:
    config.load_env()  # `.env`'s COOP_* variables, as for the CLI
    if answer_type is not None:
        if "answer_schema" in settings:
            raise SettingError("give answer_type= or answer_schema=, not both")
        settings = {**settings, "answer_schema": answer_type.model_json_schema()}
    return resolve(settings, RunSettings, StartSettings)


def open(objective: str, *, address: str | None = None) -> Run:
    """An objective by id, unique id prefix or text: live on the cluster, or read from its
    journal when no cluster has it (then it can be read, not stopped or approved)."""
    config.load_env()
    return Run(registry.reader(objective, journal.state_dir(), address))


def join(objective: str, **settings: Any) -> WorkerReport:
    """Work on a running objective with one worker of this process until it finishes, as
    `coop join` does (`concurrency=`, `tools=`, `mcp=`, `cap=`, `resources=`, `node=`…)."""
    config.load_env()
    settings, functions = own_tools(settings)
    return work(objective, JoinSettings(**resolve(settings, JoinSettings)), functions)


def work(objective: str, given: JoinSettings, functions: tuple[Tool, ...] = ()) -> WorkerReport:
    """`join` and `coop join`: one path, from settings already checked. `functions`: Python
    tools given as functions, besides those `given.tool` names by path."""
    from coop import crew
    from coop.tools.functions import load
    from coop.tools.kit import Kit, mcp_file, read_caps

    kit = Kit(
        given.tools,
        mcp_file(given.mcp),
        read_caps(given.cap),
        given.sandbox or "",
        given.resources or {},
        (*map(load, given.tool), *functions),
    )
    kit.check_names()
    return crew.join(objective, given.address, given.concurrency, given.node, kit)


def plan(
    objective: str,
    values: Mapping[str, Any],
    *,
    background: bool,
    explicit: Collection[str],
    terminal: Terminal | None = None,
    functions: tuple[Tool, ...] = (),
) -> Run:
    """`run` and `start`, and `coop start`: one path, from every setting of RunSettings and
    StartSettings already checked (`values`). `explicit`: the settings the user gave, the caps
    of which a resumed objective takes. `functions`: Python tools of this process's workers
    given as functions, besides those `--tool` names by path."""
    from coop import crew, planner
    from coop.tools.functions import load
    from coop.tools.kit import Kit, mcp_file, read_caps

    own = StartSettings(**{k: v for k, v in values.items() if k not in _RUN})
    run_settings = {k: v for k, v in values.items() if k in _RUN}
    traces = None
    if tracing.configured(own.otlp_endpoint):  # off, and OpenTelemetry not loaded, when unset
        tracing.check(own.otlp_endpoint)
        traces = functools.partial(
            tracing.live, endpoint=own.otlp_endpoint, content=own.otlp_content
        )
    text = objective.strip() if own.resume else config.check_objective(objective)
    kit = Kit(  # for this process's own workers
        mcp=mcp_file(own.mcp), caps=read_caps(own.cap), functions=(*map(load, own.tool), *functions)
    )
    kit.check_names()
    changes = {n: run_settings[n] for n in RunSettings.REOPENABLE if n in explicit}
    planning = Planning()
    opened: list[BoardClient] = []
    ready = threading.Event()

    def on_open(board: BoardClient) -> None:
        opened.append(board)
        ready.set()

    hooks = planner.Hooks(
        workers=functools.partial(
            crew.launch_crew, count=own.workers, concurrency=own.concurrency, kit=kit
        ),
        progress=terminal.progress if terminal else None,
        review=terminal.review if terminal else None,
        traces=traces,
        opened=on_open,
        check=kit.check_cluster,
    )
    checked = config.new_settings(**run_settings)

    def go() -> None:
        try:
            planning.finished = planner.start(
                text,
                checked,
                hooks,
                address=own.address,
                resume=own.resume,
                standby=own.standby,
                changes=changes if own.resume or own.standby else None,
            )
        except BaseException as exc:
            planning.error = exc
            if not background:
                raise
        finally:
            ready.set()

    if not background:
        go()
        return Run(opened[0], planning)
    # not a daemon: a script that ends after `coop.start` waits for its objective's end (as
    # for a thread of its own), instead of killing its planner and workers mid-run
    planning.thread = threading.Thread(target=go, name=f"coop-planner-{text[:20]}")
    planning.thread.start()
    ready.wait()
    if not opened:  # it failed before the board was there: nothing started
        assert planning.error is not None
        raise planning.error
    return Run(opened[0], planning)
