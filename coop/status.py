"""Views of boards: plain rich tables, which degrade to text when output is not a terminal."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text

from coop import constants as C
from coop.board import BoardClient, BoardUnavailable
from coop.journal import Event
from coop.report import flawed, judged, tally, unmatched
from coop.tables import UNBOUNDED, Col, fit
from coop.text import one_line
from coop.types import Answer, EventKind, Objective, Pulse, Snapshot, State, Task


def _ago(t: float) -> str:
    """How long ago `t` was; "-" for a time never recorded (a board rebuilt from its journal
    has not seen its instances yet)."""
    if not t:
        return "-"
    secs = max(0.0, time.time() - t)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"


def _state(snap_state: str, reason: str | None, detail: str = "") -> str:
    text = snap_state if not reason else f"{snap_state} ({reason})"
    return f"{text}: {one_line(detail, 160)}" if detail else text


def render_list(console: Console, objectives: Sequence[Objective]) -> None:
    if not objectives:
        console.print('no objectives on this cluster; start one with `coop start "..."`')
        return
    cols = [Col("id"), Col("objective", text=True), Col("created"), Col("state", text=True)]
    rows = [
        [
            o.id,
            one_line(o.text, 60),
            _ago(o.created),
            _state(o.state.value, o.reason.value if o.reason else None),
        ]
        for o in objectives
    ]
    console.print(fit("", cols, rows, console.width))


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


def status_view(snap: Snapshot, recent: Sequence[Event] = (), width: int = UNBOUNDED) -> Group:
    """Everything `coop status` shows, as one renderable fitted to `width`: printed once, or
    live."""
    reason = snap.reason.value if snap.reason else None
    p = snap.progress
    head = Text.from_markup(
        f"[bold]{snap.objective_id}[/bold]  {escape(one_line(snap.objective, 100))}\n"
        f"state: {escape(_state(snap.state.value, reason, snap.detail))}   "
        f"model: {escape(snap.llm_label)}   planner: {escape(snap.planner or '-')}\n"
        f"{_budget(snap)}\nprogress: stalls {p.stalls}/{C.STALL_LIMIT}, replans "
        f"{p.replans}/{C.MAX_REPLANS}, repeating batches {p.repeating}/{C.LOOP_BATCHES}, "
        f"completion checks {p.checks}"
        + (f"\nunreadable replies: {tally(p.unreadable)}" if p.unreadable else "")
        + (f"\nresults kept though degenerate: {tally(p.flawed)}" if p.flawed else "")
        + (f"\nanswer: {escape(_answer_line(snap.answer))}" if snap.answer else "")
        + _replay_line(snap)
    )
    parts: list[Any] = [head]
    tasks = [
        Col("pending"),
        Col("awaiting approval", "approval"),
        Col("leased"),
        Col("completed", "done"),
        Col("dead-lettered", "dead"),
        Col("awaiting planning", "unplanned"),
        Col("duplicates rejected", "duplicates"),
        Col("not tasks refused", "refused", text=True),
    ]
    counts = (len(snap.pending), snap.awaiting, len(snap.leased), snap.completed, len(snap.dead))
    row = [*map(str, counts), str(snap.unplanned)]
    row.append(f"{p.exact_duplicates} exact, {p.near_duplicates} near")
    row.append(tally(p.refused) or "0")
    parts.append(fit("tasks", tasks, [row], width))
    if snap.workers:
        flying = Counter(lease.worker for lease in snap.leased)
        workers = [
            Col("instance"),
            Col("completed", "done"),
            Col("per min", "/min", optional=True),
            Col("failed", "fail"),
            Col("in flight", "held"),
            Col("model calls", "calls", optional=True),
            Col("tokens"),
            Col("cost"),
            Col("tool calls", "tools", optional=True),
            Col("last seen", "seen", optional=True),
            Col("can use", "caps", optional=True, text=True),
        ]
        rows = [
            [
                w.worker,
                str(w.completed),
                f"{w.per_minute:.1f}" if w.last_seen else "-",
                str(w.failed),
                str(flying[w.worker]),
                str(w.usage.calls),
                str(w.usage.tokens),
                f"${w.usage.cost:.4f}",
                str(w.tool_calls),
                _ago(w.last_seen),
                _kit(w.caps, w.sandbox),
            ]
            for w in sorted(snap.workers, key=lambda w: w.worker)
        ]
        parts.append(fit("instances", workers, rows, width))
    if snap.tools:
        tools = [
            Col("tool"),
            Col("calls"),
            Col("failed", "fail"),
            Col("mean seconds", "mean s"),
            Col("bytes answered", "bytes", optional=True),
        ]
        rows = [
            [name, str(t.calls), str(t.failed), f"{t.seconds / t.calls:.2f}", str(t.bytes)]
            for name, t in sorted(snap.tools.items())
        ]
        parts.append(fit("tools", tools, rows, width))
    if snap.lacking:
        waiting = [Col("task", text=True), Col("needs what no live worker has", "lacks", text=True)]
        by_id = {t.id: t for t in snap.pending}
        rows = [
            [f"#{tid} {one_line(by_id[tid].text, 50)}", ", ".join(caps)]
            for tid, caps in snap.lacking.items()
            if tid in by_id
        ]
        parts.append(fit("waiting for a capability", waiting, rows, width))
    usage = [
        Col("agent"),
        Col("model", text=True),
        Col("calls"),
        Col("prompt tokens", "prompt"),
        Col("completion tokens", "completion"),
        Col("cost"),
    ]
    total = snap.total
    rows = [
        [
            k,
            snap.settings.model_for(k) if k != "total" else "",
            str(u.calls),
            str(u.prompt_tokens),
            str(u.completion_tokens),
            f"${u.cost:.4f}",
        ]
        for k, u in [*snap.usage.items(), ("total", total)]
    ]
    parts.append(fit("usage", usage, rows, width))
    if snap.dead:
        dead = [Col("task", text=True), Col("attempts", "tries"), Col("last error", text=True)]
        rows = [
            [f"#{t.id} {one_line(t.text, 50)}", str(t.attempts), one_line(t.last_error, 80)]
            for t in snap.dead
        ]
        parts.append(fit("dead letters", dead, rows, width))
    if recent:
        parts.append(Text("recent events\n" + "\n".join(event_line(e) for e in recent)))
    return Group(*parts)


def _replay_line(snap: Snapshot) -> str:
    """What the step ledger saved, and what was charged by estimate, once there is any."""
    r, charged = snap.replays, snap.total.estimated
    parts = []
    if r.tasks:
        parts.append(
            f"{r.tasks} task(s) resumed: {r.steps} step(s) replayed, {r.calls} model call(s) "
            f"not paid again ({r.tokens:,} tokens, ${r.cost:.4f})"
            + (f", {r.unknown} unsafe tool call(s) of unknown outcome" if r.unknown else "")
        )
    if charged:
        parts.append(f"{charged} call(s) in flight at a lost worker charged by estimate")
    return f"\nsteps: {'; '.join(parts)}" if parts else ""


def _kit(caps: Sequence[str], sandbox: str) -> str:
    """What a worker can do, with its python sandbox's isolation."""
    return ", ".join(f"python ({sandbox})" if c == "python" and sandbox else c for c in caps) or "-"


def _answer_line(answer: Answer | None) -> str:
    if answer is None or not answer.text:
        return f"missing: {answer.missing if answer else 'not yet'}"
    cites = f"cites {len(answer.cited)} task(s)"
    flaw = f"; {flawed(answer)}" if answer.flaw else ""
    flaw += f"; {unmatched(answer)}" if answer.invalid else ""
    return f"revision {answer.revision}, {cites}, objective {judged(answer)}{flaw}"


def render_status(console: Console, snap: Snapshot) -> None:
    console.print(status_view(snap, width=console.width), highlight=False)


ANSWER_LINES = 8
"""Lines of the answer `coop start` shows at the end; the rest is in its file."""


def render_answer(console: Console, answer: Answer | None, path: Path | None) -> None:
    """The end of `coop start`: where the answer is and how it begins, or why there is none."""
    if answer is None:
        return
    if not answer.text or path is None:
        console.print(f"no answer: {answer.missing}", highlight=False, soft_wrap=True)
        return
    lines = answer.text.strip().splitlines()
    console.print(f"answer: {path}", highlight=False, soft_wrap=True)
    for line in lines[:ANSWER_LINES]:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if len(lines) > ANSWER_LINES:
        console.print(f"  … ({len(lines) - ANSWER_LINES} more lines)", highlight=False)


def watch(console: Console, board: BoardClient, interval: float = 1.0) -> Snapshot:
    """`coop status --watch`: redraw until the objective finishes (or Ctrl-C)."""
    with Live(console=console, auto_refresh=False) as live:
        while True:
            board.refresh()  # a journal view rereads the journal
            snap = board.snapshot()
            view = status_view(snap, board.recent_events(8), console.width)
            live.update(view, refresh=True)
            if snap.state is State.FINISHED:
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
            + (" (estimated: in flight at a lost worker)" if d.get("estimated") else "")
        )
    elif e.kind is EventKind.ADDED:
        bits += [f"#{t[0]} {one_line(t[1], 50)}" for t in d["tasks"]]
        bits += [f"refused {one_line(text, 40)!r}: {why}" for text, why in d.get("refused", ())]
    elif e.kind is EventKind.UNREADABLE:
        bits.append(f"{d['kind']}: {one_line(d['text'], 80)!r}")
    elif e.kind is EventKind.COMPLETED:
        bits.append(one_line(d["text"], 60))
        if d.get("flaw"):
            bits.append(f"[the model's result {d['flaw']}]")
    elif e.kind is EventKind.FAILED:
        bits.append(("dead: " if d["dead"] else "") + one_line(d["error"], 80))
    elif e.kind is EventKind.TOOL:
        state = "ok" if d["ok"] else "failed"
        size = d.get("bytes", 0)  # a journal from before bytes were counted has none
        bits.append(f"{d['tool']} step {d['step']} {state} {d['latency']:.2f}s {size} bytes")
    elif e.kind is EventKind.STEP:
        bits.append(f"step {d['step']} {d['kind']}" + (f" {d['tool']}" if d["tool"] else ""))
    elif e.kind is EventKind.REPLAYED:
        bits.append(f"{d['steps']} step(s) replayed, {d['calls']} model call(s) saved")
    elif e.kind is EventKind.WROTE:
        bits.append(f"{d['path']} ({len(d['content'].encode('utf-8')):,} bytes)")
    elif e.kind is EventKind.STOPPING:
        bits.append(d["reason"] + (f": {one_line(d['detail'], 80)}" if d["detail"] else ""))
    return "  ".join(bits)


def stream(board: BoardClient, *, since: int, follow: bool) -> Iterator[Event]:
    """The tape from `since`; with `follow`, kept going until the objective finishes. The
    state is looked at before the tape is read: a run that ended after the read would
    otherwise leave its last events (the last completion, the stop) unread."""
    while True:
        ended = follow and board.state()[0] is State.FINISHED
        for e in board.all_events(since):
            yield e
            since = e.seq
        if not follow or ended:
            return
        time.sleep(0.5)
        board.refresh()  # a journal view rereads the journal


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
    for e in stream(board, since=since, follow=follow):
        out(e.to_json() if as_json else event_line(e))


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
