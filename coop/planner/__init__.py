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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from coop import cluster, journal, registry, report
from coop import memory as memories
from coop.board import BoardClient
from coop.calls import Context, metered
from coop.config import RunSettings
from coop.errors import CoopError
from coop.llm import LLM, LLMFatalError, make_llm
from coop.planner.jobs import Review
from coop.planner.loop import Planner
from coop.planner.synthesis import synthesize
from coop.types import Answer, Kind, Reason, Snapshot

log = logging.getLogger(__name__)


class Crew(Protocol):
    """Workers this process started: set working once the objective is planned here, waited
    for before the run's report is written."""

    def begin(self) -> None: ...

    def dismiss(self) -> None: ...

    def wait(self, stop: threading.Event, *, ended: bool = False) -> object: ...


@dataclass(frozen=True)
class Hooks:
    """What other roles lend `coop start`: local workers, a progress line, an approval prompt,
    the live export of its trace."""

    workers: Callable[[BoardClient, RunSettings, str], Crew]
    """Local workers for the objective (its text), started but not yet working (`Crew.begin`)."""
    progress: Callable[[BoardClient], AbstractContextManager[None]] | None = None
    review: Review | None = None
    traces: Callable[[BoardClient], AbstractContextManager[None]] | None = None  # live spans
    opened: Callable[[BoardClient], None] | None = None  # told once the board is planned here
    check: Callable[[], None] | None = None
    """What the local workers need of the cluster (a placed tool some node can run), checked
    once connected and before the objective is opened: a bad kit is one line, nothing made."""


def _open(
    objective: str,
    settings: RunSettings,
    root: Path,
    hooks: Hooks,
    *,
    resume: bool,
    standby: bool,
) -> tuple[BoardClient, str, RunSettings, Crew | None]:
    """The board to plan: created, or (resume/standby) found live or revived from its journal.
    Returns it, the objective's text, its settings and, for a board it created, the local
    workers: their processes start beside the board's (they need ~1 s to, as it does), not
    after it. None: the board is not new, and its workers start once it is planned here."""
    if resume or standby:
        try:
            board = registry.find_or_revive(objective, root)
        except registry.ObjectiveNotFound:
            if resume:
                raise
        else:
            return board, board.describe().text, board.run_settings(), None
    board, nonce = registry.spawn_board(objective, settings, root)
    crew = hooks.workers(board, settings, objective)
    try:
        registry.confirm_board(board, nonce)
    except BaseException:  # not ours, or it could not start: they never work
        crew.dismiss()
        raise
    return board, objective, settings, crew


@dataclass(frozen=True)
class Finished:
    """How a `coop start` ended: the board's last word, the report and the answer's file."""

    snapshot: Snapshot
    report: Path
    answer: Path | None  # None when the run wrote no answer (it failed, or could not)


def start(
    objective: str,
    settings: RunSettings,
    hooks: Hooks,
    *,
    address: str | None,
    resume: bool,
    standby: bool,
    changes: dict[str, object] | None = None,
) -> Finished:
    """Open the objective, seed it, plan it (with local workers) to the end, and write its
    answer and its report. `changes`: new caps for a resumed objective (a finished one runs
    again with them)."""
    name = cluster.instance_name()
    root = journal.state_dir()
    checked = 0  # tokens the check of the model spent: charged once the board is open
    llm: LLM | None = None  # a new objective's client, checked before anything is made
    if not (resume or standby):  # a missing key, model or memory fails here, before anything
        llm = make_llm(settings, name, "planner")
        checked = llm.check()
        memories.check(settings, root)
        # decided once for the objective: workers do not try for an encoding the planner lacks
        settings = replace(settings, exact_tokens=llm.tokenizer.exact)
    conn = cluster.connect(address, start_local=True, stream_logs=True)
    if hooks.check is not None:
        hooks.check()
    board, objective, settings, crew = _open(
        objective, settings, root, hooks, resume=resume, standby=standby
    )
    oid, new = board.objective_id, crew is not None
    try:
        if llm is None:  # settings from the board: its model and memory are checked now
            llm = make_llm(settings, name, "planner")
            checked = llm.check()
            memories.check(settings, root)
        if checked:
            board.record_usage(name, Kind.EMBEDDING.value, checked, 0)
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
        planner = Planner(
            Context(board, llm, memory, settings, objective, name),
            stop,
            hooks.review if interactive else None,
        )
        planner.claim(wait=standby)
        reopened = board.amend(name, dict(changes or {}))
        if reopened:
            log.info("objective %s reopened with %s", oid, _said(changes or {}))
            planner.settings = settings = board.run_settings()
        if new:
            board.add([settings.initial_task], planner=name)
        if hooks.opened is not None:
            hooks.opened(board)
        if crew is None:
            crew = hooks.workers(board, settings, objective)
        crew.begin()
    except BaseException:  # nothing planned here: workers started for it never work
        if crew is not None:
            crew.dismiss()
        raise
    showing = (
        hooks.progress(board)
        if hooks.progress is not None and not interactive
        else contextlib.nullcontext()
    )
    answered: Answer | None = None
    failed: LLMFatalError | None = None  # the model refused the planner: reported, then raised
    tracing = hooks.traces(board) if hooks.traces is not None else contextlib.nullcontext()
    with tracing, showing:
        try:
            planned = planner.run(fresh_plan=reopened)  # back once the board has finished
            crew.wait(stop, ended=True)  # their last results and files belong in the answer
            files = _workspace(board)
            if planned or not board.answers():
                answered = _answer(planner, board, files)
        except LLMFatalError as exc:
            board.stop(Reason.FAILED, str(exc))
            failed = exc
        except BaseException:
            stop.set()  # leaving early (Ctrl-C, lost claim): our workers stop with us
            raise
        finally:
            planner.release()
            crew.wait(stop)
    snapshot = board.snapshot()
    path = report.write(root, snapshot, board.results(), board.all_events())  # whatever follows
    if failed is not None:  # as when a worker met the refusal first: what was done, reported
        log.info("report: %s", path)
        raise failed
    answer_path = report.write_answer(root, snapshot) if answered and answered.text else None
    try:
        folder = report.write_workspace(root, oid, files)
    except CoopError as exc:
        log.warning("%s", exc)
    else:
        if folder is not None:
            log.info("workspace: %d file(s) in %s", len(files), folder)
    return Finished(snapshot, path, answer_path)


def _workspace(board: BoardClient) -> dict[str, str]:
    """The workspace's files, path -> text, in path order."""
    return {path: board.read_file(path) or "" for path, _ in board.list_files()}


def _answer(planner: Planner, board: BoardClient, files: dict[str, str]) -> Answer | None:
    """The run's answer, journaled as the next revision; none after a failed run."""
    _, reason, detail = board.state()
    if reason is Reason.FAILED or reason is None:
        return None
    log.info("writing the answer to the objective (Ctrl-C again to skip)")
    results = board.results()
    pending = board.pulse().pending
    ended = f"{reason.value}{f' ({detail})' if detail else ''}; tasks completed: "
    ended += f"{len(results)}, still pending: {pending}"
    answering = make_llm(planner.settings, planner.name, "answer")  # the answer's own model
    written = synthesize(replace(planner.ctx, llm=answering), results, ended, list(files.items()))
    answer = board.record_answer(planner.name, written)
    if answer.text:
        log.info(
            "answer written (revision %d, %d task(s) cited)", answer.revision, len(answer.cited)
        )
    else:
        log.warning("no answer: %s", answer.missing)
    return answer


def _said(changes: dict[str, object]) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in changes.items())
