"""The `coop` command: parses flags (merged with `COOP_*` env vars, both declared once in
declare.py's way) and hands off to the Python API (api.py); every expected failure becomes one
line and an exit code in `main`, the one place that maps them."""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click
import ray
from click.core import ParameterSource
from rich.console import Console

from coop import api, cluster, config, journal, registry, report, secrets, status, tables, tracing
from coop.config import JoinSettings, NodeSettings, RunSettings, StartSettings
from coop.declare import option, options
from coop.errors import CoopError
from coop.text import one_line

console = tables.wide_console()
address_option = option(NodeSettings, "address")
otlp_endpoint_option = option(StartSettings, "otlp_endpoint")
otlp_content_option = option(StartSettings, "otlp_content")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(quiet: bool) -> None:
    """Distributed, cooperative autonomous agents on Ray."""
    config.configure_logging(quiet)


@cli.command()
@click.argument("objective")
@options(RunSettings, StartSettings)
def start(objective: str, **settings: Any) -> int:
    """Create OBJECTIVE and plan it to the end: the only instance that creates tasks."""
    ctx = click.get_current_context()
    typed = [n for n in settings if ctx.get_parameter_source(n) is ParameterSource.COMMANDLINE]
    live = sys.stderr.isatty() and logging.getLogger("coop").isEnabledFor(logging.INFO)
    progress = functools.partial(status.progress_line, Console(stderr=True)) if live else None
    terminal = api.Terminal(progress, status.review_tasks)
    run = api.plan(objective, settings, background=False, terminal=terminal, explicit=typed)
    assert run.finished is not None  # planned here, to its end
    done = run.finished
    status.render_status(console, done.snapshot)
    status.render_answer(console, done.snapshot.answer, done.answer)
    console.print(f"report: {done.report}", highlight=False, soft_wrap=True)
    return done.snapshot.reason.exit_code if done.snapshot.reason else 0


@cli.command()
@click.argument("objective")
@options(JoinSettings)
def join(objective: str, **settings: Any) -> int:
    """Work on OBJECTIVE (id, id prefix or exact text) until it finishes."""
    done = api.work(objective, JoinSettings(**settings))
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
    run = api.open(objective, address=address)
    if watch:
        status.watch(console, run.board)
    else:
        status.render_status(console, run.status())
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
    if otlp and (follow or since):
        raise click.UsageError("--otlp sends the whole tape: not with --follow or --since")
    if otlp:
        tracing.check(otlp_endpoint)
    run = api.open(objective, address=address)
    if otlp:
        sent = tracing.export(run.board, otlp_endpoint, content=otlp_content)
        click.echo(f"{sent} spans of {run.id} sent", err=True)
    else:
        status.tape(run.board, since=since, follow=follow, as_json=as_json)
    return 0


@cli.command()
@click.argument("objective")
@click.option("--all", "approve_all", is_flag=True, help="Approve every waiting task.")
@click.option("--drop", type=int, multiple=True, metavar="ID", help="Drop this task (repeatable).")
@address_option
def approve(objective: str, approve_all: bool, drop: tuple[int, ...], address: str | None) -> int:
    """Approve or drop the tasks of OBJECTIVE that wait for a person (`start --approve`)."""
    run = api.open(objective, address=address)
    if approve_all or drop:
        approved, dropped = run.approve(None if approve_all else [], drop)
    else:  # ask, task by task
        approved, dropped = status.review(run.live(), approve_all=False, drop=())
    console.print(f"{run.id}: {approved} approved, {dropped} dropped", highlight=False)
    return 0


@cli.command()
@click.argument("objective")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "jsonl", "json"]),
    default="markdown",
    show_default=True,
    help="json: with --final, the answer as its --answer-schema asked.",
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
    if fmt == "json" and not final:
        raise click.UsageError("--format json is the answer's: add --final")
    run = api.open(objective, address=address)
    snap = run.status()
    if final:
        text = report.final_json(snap) if fmt == "json" else report.final(snap)
    else:
        done = run.results()
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
    run = api.open(objective, address=address)
    console.print(f"{run.id}: {run.stop().value}", highlight=False)
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
    if cluster.leave():
        _finish()
    # else Ray's exit hook would wait on the same broken connection: straight out
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, as `coop … | head`
            stream.flush()
    os._exit(code)


def _finish() -> None:
    """Python's exit less its teardown: other threads end and the exit hooks run (logging's
    flush; coop's own: MCP servers closed, the cluster's address file withdrawn), as they
    would; freeing every module, which with Ray and openai loaded costs each command 0.3–0.5 s
    of CPU and wall time after its work is done and written, is left to the process's end."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
