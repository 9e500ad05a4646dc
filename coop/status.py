"""Views of boards: plain rich tables, which degrade to text when output is not a terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table

from coop import constants as C
from coop.text import one_line
from coop.types import Objective, Snapshot, Task


def _ago(t: float) -> str:
    secs = max(0.0, time.time() - t)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


def _state(snap_state: str, reason: str | None, detail: str = "") -> str:
    text = snap_state if not reason else f"{snap_state} ({reason})"
    return f"{text}: {one_line(detail, 160)}" if detail else text


def render_list(console: Console, objectives: Sequence[Objective]) -> None:
    if not objectives:
        console.print("no objectives on this cluster; start one with `coop start \"...\"`")
        return
    table = Table("id", "objective", "created", "state")
    for o in objectives:
        table.add_row(o.id, one_line(o.text, 60), _ago(o.created),
                      _state(o.state.value, o.reason.value if o.reason else None))
    console.print(table)


def _budget(snap: Snapshot) -> str:
    s = snap.settings
    tokens = sum(u.tokens for u in snap.usage.values())
    cost = sum(u.cost for u in snap.usage.values())
    parts = [f"tasks {snap.completed}/{s.max_tasks}",
             f"tokens {tokens}" + (f"/{s.max_tokens}" if s.max_tokens else ""),
             f"cost ${cost:.4f}" + (f"/${s.max_cost:g}" if s.max_cost else "")]
    if s.max_minutes:
        parts.append(f"time limit {s.max_minutes:g} min per planner session")
    return "budget: " + ", ".join(parts)


def render_status(console: Console, snap: Snapshot) -> None:
    console.print(f"[bold]{snap.objective_id}[/bold]  {one_line(snap.objective, 100)}",
                  highlight=False)
    reason = snap.reason.value if snap.reason else None
    console.print(f"state: {_state(snap.state.value, reason, snap.detail)}   "
                  f"model: {snap.llm_label}   planner: {snap.planner or '-'}", highlight=False)
    p = snap.progress
    console.print(f"{_budget(snap)}\nprogress: stalls {p.stalls}/{C.STALL_LIMIT}, replans "
                  f"{p.replans}/{C.MAX_REPLANS}, repeating batches {p.repeating}/"
                  f"{C.LOOP_BATCHES}, completion checks {p.checks}", highlight=False)
    tasks = Table("pending", "awaiting approval", "leased", "completed", "dead-lettered",
                  "awaiting planning", "duplicates rejected", title="tasks")
    tasks.add_row(*map(str, (len(snap.pending), snap.awaiting, len(snap.leased), snap.completed,
                             len(snap.dead), snap.unplanned,
                             f"{p.exact_duplicates} exact, {p.near_duplicates} near")))
    console.print(tasks)
    if snap.workers:
        workers = Table("instance", "completed", "failed", "model calls", "tokens", "cost",
                        "last seen", title="instances")
        for w in sorted(snap.workers, key=lambda w: w.worker):
            workers.add_row(w.worker, str(w.completed), str(w.failed), str(w.usage.calls),
                            str(w.usage.tokens), f"${w.usage.cost:.4f}", _ago(w.last_seen))
        console.print(workers)
    usage = Table("agent", "calls", "prompt tokens", "completion tokens", "cost", title="usage")
    for kind, u in snap.usage.items():
        usage.add_row(kind, str(u.calls), str(u.prompt_tokens), str(u.completion_tokens),
                      f"${u.cost:.4f}")
    total = [sum(getattr(u, a) for u in snap.usage.values())
             for a in ("calls", "prompt_tokens", "completion_tokens", "cost")]
    usage.add_row("total", *map(str, total[:3]), f"${total[3]:.4f}", style="bold")
    console.print(usage)
    if snap.dead:
        dead = Table("task", "attempts", "last error", title="dead letters")
        for t in snap.dead:
            dead.add_row(f"#{t.id} {one_line(t.text, 50)}", str(t.attempts),
                         one_line(t.last_error, 80))
        console.print(dead)


def review_tasks(tasks: Sequence[Task]) -> tuple[list[int], list[int]]:
    """Ask a person about each new task: (approved ids, dropped ids). Unanswered ones wait
    for `coop approve`."""
    approve: list[int] = []
    drop: list[int] = []
    click.echo(f"{len(tasks)} new task(s) await approval:", err=True)
    for t in tasks:
        answer = click.prompt(f"  #{t.id} {one_line(t.text, 100)}  [a]pprove / [d]rop / "
                              "[l]ater", default="a", err=True,
                              type=click.Choice(["a", "d", "l"]), show_choices=False)
        if answer == "a":
            approve.append(t.id)
        elif answer == "d":
            drop.append(t.id)
    return approve, drop
