"""Views of boards: plain rich tables, which degrade to text when output is not a terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from coop.text import one_line
from coop.types import Objective, Snapshot


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


def render_status(console: Console, snap: Snapshot) -> None:
    console.print(f"[bold]{snap.objective_id}[/bold]  {one_line(snap.objective, 100)}",
                  highlight=False)
    reason = snap.reason.value if snap.reason else None
    console.print(f"state: {_state(snap.state.value, reason, snap.detail)}   "
                  f"model: {snap.llm_label}   planner: {snap.planner or '-'}", highlight=False)
    tasks = Table("pending", "leased", "completed", "dead-lettered", "awaiting planning",
                  title="tasks")
    tasks.add_row(*map(str, (len(snap.pending), len(snap.leased), snap.completed, len(snap.dead),
                             snap.unplanned)))
    console.print(tasks)
    if snap.workers:
        workers = Table("instance", "completed", "failed", "model calls", "tokens", "last seen",
                        title="instances")
        for w in sorted(snap.workers, key=lambda w: w.worker):
            workers.add_row(w.worker, str(w.completed), str(w.failed), str(w.usage.calls),
                            str(w.usage.tokens), _ago(w.last_seen))
        console.print(workers)
    usage = Table("agent", "calls", "prompt tokens", "completion tokens", title="usage")
    for kind, u in snap.usage.items():
        usage.add_row(kind, str(u.calls), str(u.prompt_tokens), str(u.completion_tokens))
    console.print(usage)
    if snap.dead:
        dead = Table("task", "attempts", "last error", title="dead letters")
        for t in snap.dead:
            dead.add_row(f"#{t.id} {one_line(t.text, 50)}", str(t.attempts),
                         one_line(t.last_error, 80))
        console.print(dead)
