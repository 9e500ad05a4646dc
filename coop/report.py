"""What an objective produced, as a Markdown report or JSON lines: for people and for tools."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from coop.journal import Event
from coop.types import Result, Snapshot


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def markdown(snap: Snapshot, results: Sequence[Result]) -> str:
    reason = snap.reason.value if snap.reason else snap.state.value
    total_tokens, total_cost = snap.total.tokens, snap.total.cost
    lines = [
        f"# {snap.objective}",
        "",
        f"- Objective id: `{snap.objective_id}`",
        f"- Model: {snap.llm_label}",
        f"- Outcome: **{reason}**" + (f" — {snap.detail}" if snap.detail else ""),
        f"- Started: {_when(snap.created)}",
        f"- Tasks: {snap.completed} completed, {len(snap.pending)} pending, "
        f"{len(snap.dead)} dead-lettered; duplicates rejected: "
        f"{snap.progress.exact_duplicates} exact, {snap.progress.near_duplicates} near",
        f"- Usage: {total_tokens} tokens, ${total_cost:.4f}",
        "",
        "## Usage",
        "",
        "| agent | calls | prompt tokens | completion tokens | cost (USD) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {kind} | {u.calls} | {u.prompt_tokens} | {u.completion_tokens} | {u.cost:.4f} |"
        for kind, u in snap.usage.items()
        if u.calls
    ]
    lines += ["", "## Results, in order of completion", ""]
    for r in results:
        lines += [
            f"### {r.seq + 1}. {r.task}",
            "",
            f"*task #{r.task_id} · {r.worker} · {_when(r.finished_at)}*",
            "",
            r.text,
            "",
        ]
    if snap.dead:
        lines += ["## Dead letters", ""]
        lines += [
            f"- #{t.id} {t.text} — {t.attempts} attempts; last error: {t.last_error}"
            for t in snap.dead
        ]
        lines.append("")
    return "\n".join(lines)


def jsonl(snap: Snapshot, results: Sequence[Result]) -> str:
    simulated = snap.settings.simulated
    return "".join(
        json.dumps(
            {
                "objective_id": snap.objective_id,
                "seq": r.seq,
                "task_id": r.task_id,
                "task": r.task,
                "result": r.text,
                "worker": r.worker,
                "finished_at": r.finished_at,
                "simulated": simulated,
            }
        )
        + "\n"
        for r in results
    )


def path(root: Path, objective_id: str) -> Path:
    return root / "reports" / f"{objective_id}.md"


def write(root: Path, snap: Snapshot, results: Sequence[Result], events: Iterable[Event]) -> Path:
    """The report, and beside it the whole event tape as JSON lines (`<id>.events.jsonl`),
    under the state dir; readable only by their owner, like the journal."""
    report = path(root, snap.objective_id)
    report.parent.mkdir(mode=0o700, exist_ok=True)
    report.touch(mode=0o600)
    report.write_text(markdown(snap, results))
    tape = report.with_suffix(".events.jsonl")
    tape.touch(mode=0o600)
    with tape.open("w", encoding="utf-8") as out:
        out.writelines(e.to_json() + "\n" for e in events)
    return report
