"""Views of boards: plain rich tables, which degrade to text when output is not a terminal."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from coop import constants as C
from coop.board import BoardClient, BoardUnavailable
from coop.journal import Event
from coop.text import one_line
from coop.types import EventKind, Objective, Pulse, Snapshot, State, Task


def _ago(t: float) -> str:
    secs = max(0.0, time.time() - t)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


def _state(snap_state: str, reason: str | None, detail: str = "") -> str:
    text = snap_state if not reason else f"{snap_state} ({reason})"
    return f"{text}: {one_line(detail, 160)}" if detail else text


def render_list(console: Console, objectives: Sequence[Objective]) -> None:
    if not objectives:
        console.print('no objectives on this cluster; start one with `coop start "..."`')
        return
    table = Table("id", "objective", "created", "state")
    for o in objectives:
        table.add_row(
            o.id,
            one_line(o.text, 60),
            _ago(o.created),
            _state(o.state.value, o.reason.value if o.reason else None),
        )
    console.print(table)


def _budget(snap: Snapshot) -> str:
    s = snap.settings
    tokens, cost = snap.total.tokens, snap.total.cost
    parts = [
        f"tasks {snap.completed}/{s.max_tasks}",
        f"tokens {tokens}" + (f"/{s.max_tokens}" if s.max_tokens else ""),
        f"cost ${cost:.4f}" + (f"/${s.max_cost:g}" if s.max_cost else ""),
    ]
    if s.max_minutes:
        parts.append(f"time limit {s.max_minutes:g} min per planner session")
    return "budget: " + ", ".join(parts)


def status_view(snap: Snapshot, recent: Sequence[Event] = ()) -> Group:
    """Everything `coop status` shows, as one renderable: printed once, or live."""
    reason = snap.reason.value if snap.reason else None
    p = snap.progress
    head = Text.from_markup(
        f"[bold]{snap.objective_id}[/bold]  {escape(one_line(snap.objective, 100))}\n"
        f"state: {escape(_state(snap.state.value, reason, snap.detail))}   "
        f"model: {escape(snap.llm_label)}   planner: {escape(snap.planner or '-')}\n"
        f"{_budget(snap)}\nprogress: stalls {p.stalls}/{C.STALL_LIMIT}, replans "
        f"{p.replans}/{C.MAX_REPLANS}, repeating batches {p.repeating}/{C.LOOP_BATCHES}, "
        f"completion checks {p.checks}"
    )
    parts: list[Any] = [head]
    tasks = Table(
        "pending",
        "awaiting approval",
        "leased",
        "completed",
        "dead-lettered",
        "awaiting planning",
        "duplicates rejected",
        title="tasks",
    )
    tasks.add_row(
        *map(
            str,
            (
                len(snap.pending),
                snap.awaiting,
                len(snap.leased),
                snap.completed,
                len(snap.dead),
                snap.unplanned,
                f"{p.exact_duplicates} exact, {p.near_duplicates} near",
            ),
        )
    )
    parts.append(tasks)
    if snap.workers:
        workers = Table(
            "instance",
            "completed",
            "per min",
            "failed",
            "in flight",
            "model calls",
            "tokens",
            "cost",
            "last seen",
            title="instances",
        )
        flying = Counter(lease.worker for lease in snap.leased)
        for w in sorted(snap.workers, key=lambda w: w.worker):
            workers.add_row(
                w.worker,
                str(w.completed),
                f"{w.per_minute:.1f}",
                str(w.failed),
                str(flying[w.worker]),
                str(w.usage.calls),
                str(w.usage.tokens),
                f"${w.usage.cost:.4f}",
                _ago(w.last_seen),
            )
        parts.append(workers)
    usage = Table("agent", "calls", "prompt tokens", "completion tokens", "cost", title="usage")
    for kind, u in snap.usage.items():
        usage.add_row(
            kind, str(u.calls), str(u.prompt_tokens), str(u.completion_tokens), f"${u.cost:.4f}"
        )
    total = snap.total
    usage.add_row(
        "total",
        str(total.calls),
        str(total.prompt_tokens),
        str(total.completion_tokens),
        f"${total.cost:.4f}",
        style="bold",
    )
    parts.append(usage)
    if snap.dead:
        dead = Table("task", "attempts", "last error", title="dead letters")
        for t in snap.dead:
            dead.add_row(
                f"#{t.id} {one_line(t.text, 50)}", str(t.attempts), one_line(t.last_error, 80)
            )
        parts.append(dead)
    if recent:
        parts.append(Text("recent events\n" + "\n".join(event_line(e) for e in recent)))
    return Group(*parts)


def render_status(console: Console, snap: Snapshot) -> None:
    console.print(status_view(snap), highlight=False)


def watch(console: Console, board: BoardClient, interval: float = 1.0) -> Snapshot:
    """`coop status --watch`: redraw until the objective finishes (or Ctrl-C)."""
    with Live(console=console, auto_refresh=False) as live:
        while True:
            snap = board.snapshot()
            live.update(status_view(snap, board.recent_events(8)), refresh=True)
            if snap.state is State.FINISHED or not board.live:
                return snap
            time.sleep(interval)


def pulse_line(p: Pulse, elapsed: float) -> str:
    line = (
        f"{p.completed}/{p.max_tasks} done · {p.pending} pending · {p.leased} in flight"
        f"{f' · {p.dead} dead' if p.dead else ''} · {p.tokens:,} tokens · ${p.cost:.4f}"
        f" · {int(elapsed // 60)}:{int(elapsed % 60):02d}"
    )
    return line if p.state is State.RUNNING else f"{line} · {p.state.value}"


@contextlib.contextmanager
def progress_line(console: Console, board: BoardClient, interval: float = 1.0) -> Iterator[None]:
    """A live line at the bottom of the terminal while `coop start` runs; log lines (which
    follow sys.stderr) scroll above it."""
    began, done = time.monotonic(), threading.Event()
    spinner = Spinner("dots", "starting…")

    def refresh() -> None:
        while not done.wait(interval):
            try:
                pulse = board.pulse(timeout=interval * 5)
            except BoardUnavailable:
                continue  # the board is restarting: keep the last line
            spinner.update(text=pulse_line(pulse, time.monotonic() - began))

    with Live(spinner, console=console, refresh_per_second=4, transient=True):
        thread = threading.Thread(target=refresh, name="progress-line", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(interval * 6)


def event_line(e: Event) -> str:
    """One line of the tape: sequence, time, kind, then what matters for that kind."""
    d = e.data
    bits = [f"{e.seq:>6}", time.strftime("%H:%M:%S", time.localtime(e.at)), f"{e.kind.value:<10}"]
    task = d.get("id", d.get("task"))
    if task is not None:
        bits.append(f"#{task}")
    bits += [str(d[key]) for key in ("worker", "instance") if key in d]
    if e.kind is EventKind.USAGE:
        bits.append(
            f"{d['kind']} {d['prompt']}+{d['completion']} tokens {d.get('latency') or 0:.2f}s"
        )
    elif e.kind is EventKind.ADDED:
        bits += [f"#{t[0]} {one_line(t[1], 50)}" for t in d["tasks"]]
    elif e.kind is EventKind.COMPLETED:
        bits.append(one_line(d["text"], 60))
    elif e.kind is EventKind.FAILED:
        bits.append(("dead: " if d["dead"] else "") + one_line(d["error"], 80))
    elif e.kind is EventKind.STOPPING:
        bits.append(d["reason"] + (f": {one_line(d['detail'], 80)}" if d["detail"] else ""))
    return "  ".join(bits)


def tape(
    board: BoardClient,
    *,
    since: int,
    follow: bool,
    as_json: bool,
    out: Callable[[str], None] = click.echo,
) -> None:
    """`coop events`: print the tape from `since`; with `follow`, keep printing until the
    objective finishes (or Ctrl-C)."""
    while True:
        for e in board.all_events(since):
            out(e.to_json() if as_json else event_line(e))
            since = e.seq
        if not (follow and board.live) or board.state()[0] is State.FINISHED:
            return
        time.sleep(0.5)


def review(board: BoardClient, *, approve_all: bool, drop: Sequence[int]) -> tuple[int, int]:
    """`coop approve`: decide the waiting tasks from flags, or by asking. Returns how many
    were approved and dropped."""
    waiting = board.awaiting_approval()
    if approve_all or drop:
        yes = [t.id for t in waiting if t.id not in drop] if approve_all else []
        no = list(drop)
    else:
        yes, no = review_tasks(waiting) if waiting else ([], [])
    return board.approve(yes), board.drop(no)


def review_tasks(tasks: Sequence[Task]) -> tuple[list[int], list[int]]:
    """Ask a person about each new task: (approved ids, dropped ids). Unanswered ones wait
    for `coop approve`."""
    approve: list[int] = []
    drop: list[int] = []
    click.echo(f"{len(tasks)} new task(s) await approval:", err=True)
    for t in tasks:
        answer = click.prompt(
            f"  #{t.id} {one_line(t.text, 100)}  [a]pprove / [d]rop / [l]ater",
            default="a",
            err=True,
            type=click.Choice(["a", "d", "l"]),
            show_choices=False,
        )
        if answer == "a":
            approve.append(t.id)
        elif answer == "d":
            drop.append(t.id)
    return approve, drop
