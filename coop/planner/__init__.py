"""`coop start`: the main instance, the only one that creates and prioritizes tasks.

This module opens the objective, seeds it, starts local workers and runs the planner
(`loop.Planner`) to the end, then writes the report. What belongs to other roles — the
workers it starts, the progress line, a person's approval prompt — reaches it as `Hooks`
from the command line, so that no role imports another.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from coop import cluster, journal, registry, report
from coop import memory as memories
from coop.board import BoardClient
from coop.calls import Context, metered
from coop.config import RunSettings
from coop.llm import LLMFatalError, make_llm
from coop.planner.jobs import Review
from coop.planner.loop import Planner
from coop.types import Reason, Snapshot

log = logging.getLogger(__name__)


class Crew(Protocol):
    """Workers this process started: waited for before the run's report is written."""

    def wait(self, stop: threading.Event) -> object: ...


@dataclass(frozen=True)
class Hooks:
    """What other roles lend `coop start`: local workers, a progress line, an approval prompt."""

    workers: Callable[[BoardClient, RunSettings], Crew]
    progress: Callable[[BoardClient], AbstractContextManager[None]] | None = None
    review: Review | None = None


def _open(
    objective: str, settings: RunSettings, root: Path, *, resume: bool, standby: bool
) -> tuple[BoardClient, str, RunSettings, bool]:
    """The board to plan: created, or (resume/standby) found live or revived from its journal.
    Returns it, the objective's text, its settings and whether it is new."""
    if resume or standby:
        try:
            board = registry.find_or_revive(objective, root)
        except registry.ObjectiveNotFound:
            if resume:
                raise
        else:
            return board, board.describe().text, board.run_settings(), False
    return registry.create_board(objective, settings, root), objective, settings, True


def start(
    objective: str,
    settings: RunSettings,
    hooks: Hooks,
    *,
    address: str | None,
    resume: bool,
    standby: bool,
) -> tuple[Snapshot, Path]:
    """Open the objective, seed it, plan it (with local workers) to the end. Returns the final
    snapshot and the path of the report written about it."""
    name = cluster.instance_name()
    root = journal.state_dir()
    if not (resume or standby):  # a missing key or memory fails here, before anything exists
        make_llm(settings, name)
        memories.check(settings, root)
    conn = cluster.connect(address, start_local=True, stream_logs=True)
    board, objective, settings, new = _open(
        objective, settings, root, resume=resume, standby=standby
    )
    oid = board.objective_id
    if resume or standby:  # settings from the board: its memory is checked now
        memories.check(settings, root)
    llm = make_llm(settings, name)
    stop = cluster.stop_on_signals()
    log.info("objective %s — model: %s — journal in %s", oid, llm.label, root)
    log.info(
        "Ray cluster %s%s; dashboard %s; add workers with: coop join %s --address %s",
        conn.address,
        " (started here: it ends with this run)" if conn.started_here else "",
        conn.dashboard or "off",
        oid,
        conn.address,
    )
    memory = memories.open_memory(settings, oid, llm, root, metered(board, name))
    interactive = settings.approve and sys.stdin.isatty() and hooks.review is not None
    ctx = Context(board, llm, memory, settings, objective, name)
    planner = Planner(ctx, stop, hooks.review if interactive else None)
    planner.claim(wait=standby)
    if new:
        board.add([settings.initial_task], planner=name)
    crew = hooks.workers(board, settings)
    showing = (
        hooks.progress(board)
        if hooks.progress is not None and not interactive
        else contextlib.nullcontext()
    )
    with showing:
        try:
            planner.run()
        except LLMFatalError as exc:
            board.stop(Reason.FAILED, str(exc))
            raise
        except BaseException:
            stop.set()  # leaving early (Ctrl-C, lost claim): our workers stop with us
            raise
        finally:
            board.release_planner(name)
            crew.wait(stop)
    snapshot = board.snapshot()
    path = report.write(root, snapshot, board.results(), board.all_events())
    return snapshot, path
