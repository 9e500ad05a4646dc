"""The `coop` command: parses flags (merged with `COOP_*` env vars) and hands off to one role."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import ray
from rich.console import Console

from coop import (
    cluster,
    config,
    crew,
    journal,
    planner,
    registry,
    report,
    secrets,
    status,
    tables,
    tracing,
)
from coop import constants as C
from coop.errors import CoopError
from coop.text import one_line
from coop.tools.functions import load
from coop.tools.kit import Kit, mcp_file, read_caps
from coop.types import Reason

F = TypeVar("F", bound=Callable[..., Any])
console = tables.wide_console()
address_option = click.option(
    "--address",
    envvar="RAY_ADDRESS",
    metavar="HOST:PORT",
    help="Ray cluster to use [env RAY_ADDRESS].",
)


def _int(name: str, default: int, minimum: int, help: str) -> Callable[[F], F]:
    return click.option(
        name,
        type=click.IntRange(min=minimum),
        default=default,
        show_default=True,
        envvar=f"COOP_{name[2:].upper().replace('-', '_')}",
        help=help,
    )


mcp_option = click.option(
    "--mcp",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="MCP servers for this node's workers: an mcpServers JSON file (stdio or url).",
)
tool_option = click.option(
    "--tool",
    "python_tools",
    multiple=True,
    metavar="MODULE:FUNCTION",
    help="A Python function this node's workers offer as a tool, imported by its path, "
    "e.g. mypkg.tools:search (repeatable; a @coop.tool keeps its name and placement).",
)
cap_option = click.option(
    "--cap",
    multiple=True,
    metavar="NAME",
    help="A capability this node's workers have, e.g. gpu or browser (repeatable).",
)

otlp_endpoint_option = click.option(
    "--otlp-endpoint",
    metavar="URL",
    help="OTLP/HTTP collector for the objective's trace, e.g. http://localhost:6006 "
    "[env OTEL_EXPORTER_OTLP_ENDPOINT; headers from OTEL_EXPORTER_OTLP_HEADERS].",
)
otlp_content_option = click.option(
    "--otlp-content",
    is_flag=True,
    help="Put the model's replies, tool outputs and the answer on the spans (the journal holds "
    "no prompts); scrubbed of secrets. Default: counts, names and times only.",
)


def _tools(help: str) -> Callable[[F], F]:
    """`--tools a,b`, checked against the built-in tools."""
    return click.option(
        "--tools",
        callback=lambda ctx, param, value: _names(value),
        default="",
        envvar="COOP_TOOLS",
        metavar="A,B",
        help=help,
    )


def _names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """`a,b c` as ("a", "b", "c"): tools given with commas, spaces or both."""
    text = value if isinstance(value, str) else ",".join(value)
    names = {n.strip().lower() for n in text.replace(" ", ",").split(",") if n.strip()}
    unknown = sorted(names - set(config.TOOL_CHOICES))
    if unknown:
        choices = ", ".join(config.TOOL_CHOICES)
        raise click.BadParameter(f"unknown tool {unknown[0]!r}: choose from {choices}")
    return tuple(sorted(names))


def _resources(raw: str | None) -> dict[str, float]:
    """`--resources '{"GPU": 1}'` as a dict, or one line."""
    if not raw:
        return {}
    bad = click.BadParameter(
        """a JSON object of positive numbers, like '{"GPU": 1}'""", param_hint="--resources"
    )
    try:
        value = json.loads(raw)
        amounts = {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}
    except (ValueError, TypeError):
        raise bad from None
    if not amounts or min(amounts.values()) <= 0:
        raise bad
    return amounts


def _role_model(role: str, help: str) -> Callable[[F], F]:
    """`--<role>-model`: one role's own model (config.ROLES), else `--model`."""
    return click.option(
        f"--{role}-model",
        envvar=f"COOP_{role.upper()}_MODEL",
        default="",
        help=f"{help} Default: --model.",
    )


def _float(name: str, default: float, kind: click.FloatRange, help: str) -> Callable[[F], F]:
    return click.option(
        name,
        type=kind,
        default=default,
        show_default=True,
        envvar=f"COOP_{name[2:].upper().replace('-', '_')}",
        help=help,
    )


def _choice(name: str, choices: tuple[str, ...], help: str) -> Callable[[F], F]:
    """An option with a closed set of values, the first the default, with its COOP_ variable."""
    return click.option(
        name,
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        envvar=f"COOP_{name[2:].upper().replace('-', '_')}",
        help=help,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(quiet: bool) -> None:
    """Distributed, cooperative autonomous agents on Ray."""
    config.configure_logging(quiet)


@cli.command()
@click.argument("objective")
@_choice(
    "--llm",
    config.LLM_CHOICES,
    "openai: any OpenAI-compatible server; offline: the simulated model.",
)
@click.option("--model", envvar="COOP_MODEL", default=C.DEFAULT_MODEL, show_default=True)
@_role_model("planner", "The planner's model: task creation, prioritization, the completion check.")
@_role_model("worker", "The workers' model: the steps of each task.")
@_role_model("answer", "The model that writes the answer from the results.")
@click.option(
    "--embedding-model",
    envvar="COOP_EMBEDDING_MODEL",
    default=C.DEFAULT_EMBEDDING_MODEL,
    show_default=True,
)
@click.option(
    "--tokenizer",
    envvar="COOP_TOKENIZER",
    default="",
    metavar="FILE|NAME",
    help="An open model's tokenizer.json (or Hugging Face name in the local cache) for "
    "exact prompt fitting; needs coop[tokenizers]. Default: tiktoken's, else an estimate.",
)
@click.option(
    "--initial-task", envvar="COOP_INITIAL_TASK", default=C.DEFAULT_INITIAL_TASK, show_default=True
)
@_choice(
    "--memory",
    C.MEMORY_CHOICES,
    "Where results are shared: coop's in-cluster store, a Weaviate server "
    "(WEAVIATE_URL, WEAVIATE_API_KEY) or embedded Weaviate.",
)
@click.option(
    "--weaviate-collection",
    envvar="COOP_WEAVIATE_COLLECTION",
    default=C.DEFAULT_COLLECTION,
    show_default=True,
    help="Weaviate collection holding every objective's results, one tenant each.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an objective (id, prefix or text), live or from its journal.",
)
@click.option(
    "--standby",
    is_flag=True,
    help="If another planner runs this objective, wait and take over when it stops.",
)
@_int("--workers", C.DEFAULT_WORKERS, 0, "Worker loops in this process; 0 plans only.")
@_int("--concurrency", C.DEFAULT_CONCURRENCY, 1, "Tasks in flight per local worker.")
@_int("--max-tasks", C.DEFAULT_MAX_TASKS, 1, "Stop after this many completed tasks.")
@_int("--max-attempts", C.DEFAULT_MAX_ATTEMPTS, 1, "Attempts before a task is dead-lettered.")
@_int("--context-k", C.DEFAULT_CONTEXT_K, 0, "Results from memory given to each execution.")
@_int("--max-prompt-tokens", C.DEFAULT_MAX_PROMPT_TOKENS, 1, "Token budget of one prompt.")
@_int(
    "--planner-calls",
    C.DEFAULT_PLANNER_CALLS,
    1,
    "Most task-creation calls in flight at once; demand decides how many are made.",
)
@_int("--rpm", 0, 0, "Model requests per minute across the cluster (0: no limit).")
@_int("--tpm", 0, 0, "Model tokens per minute across the cluster (0: no limit).")
@_int("--max-tokens", 0, 0, "Stop when the objective has used this many tokens (0: no cap).")
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0.0),
    default=0.0,
    envvar="COOP_MAX_COST",
    help="Stop when the objective has cost this many USD (0: no cap); prices from "
    "the built-in table or COOP_PRICES.",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0.0),
    default=0.0,
    envvar="COOP_MAX_MINUTES",
    help="Stop after this many minutes of planning.",
)
@_float(
    "--synthesis-reserve",
    C.DEFAULT_SYNTHESIS_RESERVE,
    click.FloatRange(min=0.0, max=1.0, max_open=True),
    "Share of --max-tokens and --max-cost no task may use: kept for writing the answer.",
)
@click.option(
    "--approve",
    is_flag=True,
    envvar="COOP_APPROVE",
    help="New tasks wait for a person: `coop approve`, or a prompt in this terminal.",
)
@_float(
    "--model-timeout",
    C.DEFAULT_MODEL_TIMEOUT,
    click.FloatRange(min=1.0),
    "Seconds to wait for one answer from the model server before retrying.",
)
@_float(
    "--lease-ttl",
    C.DEFAULT_LEASE_TTL,
    click.FloatRange(min=1.0),
    "Seconds a silent worker keeps a task before it is requeued.",
)
@_tools(f"Built-in tools every worker offers the model: {', '.join(config.TOOL_CHOICES)}.")
@_int("--max-steps", C.DEFAULT_MAX_STEPS, 1, "Model and tool calls one task may take.")
@_choice(
    "--sandbox",
    config.SANDBOX_CHOICES,
    "Isolation for the python tool: the strongest the node has, or exactly the one named.",
)
@_int(
    "--scratch-mb",
    C.DEFAULT_SCRATCH_MB,
    1,
    "MiB a python call may write: its /tmp and its /dev/shm, each (RAM, gone with the call).",
)
@click.option(
    "--fetch-allow",
    multiple=True,
    envvar="COOP_FETCH_ALLOW",
    metavar="CIDR",
    help="A network the fetch tool may reach though not public (repeatable).",
)
@mcp_option
@tool_option
@cap_option
@otlp_endpoint_option
@otlp_content_option
@address_option
def start(
    objective: str,
    resume: bool,
    standby: bool,
    workers: int,
    concurrency: int,
    address: str | None,
    mcp: str | None,
    python_tools: tuple[str, ...],
    cap: tuple[str, ...],
    otlp_endpoint: str | None,
    otlp_content: bool,
    **settings: Any,
) -> int:
    """Create OBJECTIVE and plan it to the end: the only instance that creates tasks."""
    traces = None
    if tracing.configured(otlp_endpoint):  # off, and OpenTelemetry not loaded, when unset
        traces = functools.partial(tracing.live, endpoint=otlp_endpoint, content=otlp_content)
        tracing.check(otlp_endpoint)
    text = objective.strip() if resume else config.check_objective(objective)
    live = sys.stderr.isatty() and logging.getLogger("coop").isEnabledFor(logging.INFO)
    kit = Kit(  # for this process's own workers
        mcp=mcp_file(mcp), caps=read_caps(cap), functions=tuple(map(load, python_tools))
    )
    kit.check_names()
    settings["fetch_allow"] = tuple(settings["fetch_allow"])
    hooks = planner.Hooks(
        workers=functools.partial(crew.start_crew, count=workers, concurrency=concurrency, kit=kit),
        progress=functools.partial(status.progress_line, Console(stderr=True)) if live else None,
        review=status.review_tasks,
        traces=traces,
        check=kit.check_cluster,
    )
    ctx = click.get_current_context()
    changes = {  # caps given on the command line: a resumed objective takes them
        name: settings[name]
        for name in config.RunSettings.REOPENABLE
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    }
    done = planner.start(
        text,
        config.new_settings(**settings),
        hooks,
        address=address,
        resume=resume,
        standby=standby,
        changes=changes if resume or standby else None,
    )
    status.render_status(console, done.snapshot)
    status.render_answer(console, done.snapshot.answer, done.answer)
    console.print(f"report: {done.report}", highlight=False, soft_wrap=True)
    return done.snapshot.reason.exit_code if done.snapshot.reason else 0


@cli.command()
@click.argument("objective")
@_int("--concurrency", C.DEFAULT_CONCURRENCY, 1, "Tasks in flight in this worker.")
@click.option(
    "--node",
    metavar="NODE_ID",
    help="Run the worker on this Ray node (id or unique prefix, see `ray list nodes`); "
    "default: the node this command runs on.",
)
@_tools("Built-in tools this worker offers besides the run's.")
@mcp_option
@tool_option
@cap_option
@click.option(
    "--resources",
    metavar="JSON",
    help="Ray resources the worker needs, e.g. '{\"GPU\": 1}': it runs where they are.",
)
@click.option(
    "--sandbox",
    type=click.Choice(config.SANDBOX_CHOICES),
    help="Isolation for this worker's python tool (default: the run's).",
)
@address_option
def join(
    objective: str,
    concurrency: int,
    node: str | None,
    address: str | None,
    tools: tuple[str, ...],
    mcp: str | None,
    python_tools: tuple[str, ...],
    cap: tuple[str, ...],
    resources: str | None,
    sandbox: str | None,
) -> int:
    """Work on OBJECTIVE (id, id prefix or exact text) until it finishes."""
    kit = Kit(
        tools,
        mcp_file(mcp),
        read_caps(cap),
        sandbox or "",
        _resources(resources),
        tuple(map(load, python_tools)),
    )
    kit.check_names()
    done = crew.join(objective, address, concurrency, node, kit)
    console.print(
        f"{done.worker} on node {done.node[:8] or '?'}: {done.completed} completed, "
        f"{done.failed} failed; objective {done.final_state.value}",
        highlight=False,
    )
    return 1 if done.fatal else 0


@cli.command(name="list")
@address_option
def list_(address: str | None) -> int:
    """Objectives on the cluster, and those in this machine's journals."""
    status.render_list(console, registry.list_objectives(journal.state_dir(), address))
    return 0


@cli.command(name="status")
@click.argument("objective")
@click.option("-w", "--watch", is_flag=True, help="Keep redrawing until the objective ends.")
@address_option
def status_(objective: str, watch: bool, address: str | None) -> int:
    """Tasks by state, instances, usage and budget of OBJECTIVE, live or from its journal."""
    board = registry.reader(objective, journal.state_dir(), address)
    if watch:
        status.watch(console, board)
    else:
        status.render_status(console, board.snapshot())
    return 0


@cli.command()
@click.argument("objective")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the objective ends.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--since", type=click.IntRange(min=0), default=0, help="After this sequence number.")
@click.option(
    "--otlp",
    is_flag=True,
    help="Send the tape as one OpenTelemetry trace instead of printing it (again: same ids).",
)
@otlp_endpoint_option
@otlp_content_option
@address_option
def events(
    objective: str,
    follow: bool,
    as_json: bool,
    since: int,
    otlp: bool,
    otlp_endpoint: str | None,
    otlp_content: bool,
    address: str | None,
) -> int:
    """The tape of OBJECTIVE: every state change and model call, in order."""
    if otlp:
        if follow or since:
            raise click.UsageError("--otlp sends the whole tape: not with --follow or --since")
        tracing.check(otlp_endpoint)
        board = registry.reader(objective, journal.state_dir(), address)
        sent = tracing.export(board, otlp_endpoint, content=otlp_content)
        click.echo(f"{sent} spans of {board.objective_id} sent", err=True)
        return 0
    status.tape(
        registry.reader(objective, journal.state_dir(), address),
        since=since,
        follow=follow,
        as_json=as_json,
    )
    return 0


@cli.command()
@click.argument("objective")
@click.option("--all", "approve_all", is_flag=True, help="Approve every waiting task.")
@click.option("--drop", type=int, multiple=True, metavar="ID", help="Drop this task (repeatable).")
@address_option
def approve(objective: str, approve_all: bool, drop: tuple[int, ...], address: str | None) -> int:
    """Approve or drop the tasks of OBJECTIVE that wait for a person (`start --approve`)."""
    cluster.connect(address, start_local=False)
    board = registry.find(objective)
    approved, dropped = status.review(board, approve_all=approve_all, drop=drop)
    console.print(f"{board.objective_id}: {approved} approved, {dropped} dropped", highlight=False)
    return 0


@cli.command()
@click.argument("objective")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "jsonl"]),
    default="markdown",
    show_default=True,
)
@click.option("--final", is_flag=True, help="Only the objective's answer, as Markdown.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write to this file instead of standard output.",
)
@address_option
def results(objective: str, fmt: str, final: bool, output: str | None, address: str | None) -> int:
    """The results of OBJECTIVE, live or from its journal, as Markdown or JSON lines; with
    --final, its answer alone."""
    board = registry.reader(objective, journal.state_dir(), address)
    snap = board.snapshot()
    if final:
        text = report.final(snap)
    else:
        done = board.results()
        text = report.markdown(snap, done) if fmt == "markdown" else report.jsonl(snap, done)
    if output:
        report.save(Path(output), text)
    else:
        click.echo(text, nl=False)
    return 0


@cli.command()
@click.argument("objective")
@address_option
def stop(objective: str, address: str | None) -> int:
    """Ask every instance of OBJECTIVE to stop: no new leases, in-flight work is kept."""
    cluster.connect(address, start_local=False)
    board = registry.find(objective)
    state = board.stop(Reason.STOPPED)
    console.print(f"{board.objective_id}: {state.value}", highlight=False)
    return 0


@cli.command()
@click.argument("objective")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@address_option
def delete(objective: str, yes: bool, address: str | None) -> int:
    """Remove OBJECTIVE for good: its results in memory, its journal and its finished actors."""
    root = journal.state_dir()
    target = registry.doomed(objective, root, address)
    question = (
        f"Delete {target.objective.id} ({one_line(target.objective.text, 60)}) and all its results?"
    )
    if not (yes or click.confirm(question)):
        console.print("nothing deleted", highlight=False)
        return 1
    for line in registry.delete(target, root):
        console.print(f"removed {line}", highlight=False, soft_wrap=True)
    kept = report.path(root, target.objective.id)
    if kept.exists():
        console.print(f"kept the report {kept} (and its events file)", soft_wrap=True)
    return 0


def main() -> None:
    """Entry point: every expected failure is one line on stderr and a non-zero exit."""
    config.load_env()
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `coop`: the help, not an error
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        code = 0
    except click.ClickException as exc:
        click.echo(f"coop: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("coop: interrupted", err=True)
        code = 130
    except CoopError as exc:
        click.echo(f"coop: error: {secrets.scrub(str(exc))}", err=True)
        code = 1
    except ray.exceptions.RayActorError as exc:
        click.echo(
            f"coop: error: a coop actor died ({type(exc).__name__}); "
            "`coop list` shows what is left",
            err=True,
        )
        code = 1
    code = code if isinstance(code, int) else 0
    if not cluster.leave():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # Ray's exit hook would wait on the same broken connection
    sys.exit(code)
