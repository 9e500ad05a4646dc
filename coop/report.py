"""What an objective produced: its answer, a Markdown report (the answer first, then how the
run ended, then every result) or JSON lines, for people and for tools."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from coop.errors import CoopError
from coop.journal import Event
from coop.types import Answer, Result, Snapshot, Usage

_HEADING = re.compile(r"^(#{1,4}) ", re.MULTILINE)


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def judged(answer: Answer | None) -> str:
    """Whether the answer judged the objective met, in words."""
    if answer is None or not answer.text:
        return "no answer"
    if answer.met is None:
        return "not judged"
    return "judged met" if answer.met else "judged not met"


def flawed(answer: Answer | None) -> str:
    """What is wrong with a kept answer, in words ("" when nothing is)."""
    return f"the model's answer {answer.flaw}" if answer is not None and answer.flaw else ""


def unmatched(answer: Answer | None) -> str:
    """Why a kept answer is not the JSON its schema asked for, in words ("" when it is)."""
    if answer is None or not answer.invalid:
        return ""
    return f"the answer does not match its schema ({answer.invalid})"


def tally(counts: dict[str, int]) -> str:
    """Counts by reason, biggest first: "3 (2 a placeholder, 1 restates the prompt)"."""
    if not counts:
        return ""
    parts = ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda c: -c[1]))
    return f"{sum(counts.values())} ({parts})"


def markdown(snap: Snapshot, results: Sequence[Result]) -> str:
    reason = snap.reason.value if snap.reason else snap.state.value
    total_tokens, total_cost, estimated = snap.total.tokens, snap.total.cost, snap.total.estimated
    lines = [f"# {snap.objective}", "", "## Answer", ""]
    answer = snap.answer
    if answer is not None and answer.text:
        lines += [
            _HEADING.sub(r"##\1 ", answer.text),  # its headings sit below the report's
            "",
            f"*Revision {answer.revision} · cites "
            + (", ".join(f"#{t}" for t in answer.cited) or "no task")
            + f" · objective {judged(answer)}"
            + (f" · **{flawed(answer)}**" if answer.flaw else "")
            + (f" · **{unmatched(answer)}**" if answer.invalid else "")
            + "*",
        ]
    else:
        why = answer.missing if answer is not None else "the run has not ended yet"
        lines.append(f"*No answer: {why}.*")
    lines += [
        "",
        "## How the run ended",
        "",
        f"- Objective id: `{snap.objective_id}`",
        f"- Model: {snap.llm_label}",
        f"- Outcome: **{reason}**"
        + (f" — {snap.detail}" if snap.detail else "")
        + f"; objective {judged(answer)}",
        f"- Started: {_when(snap.created)}",
        f"- Tasks: {snap.completed} completed, {len(snap.pending)} pending, "
        f"{len(snap.dead)} dead-lettered; duplicates rejected: "
        f"{snap.progress.exact_duplicates} exact, {snap.progress.near_duplicates} near; "
        f"proposals refused as not tasks: {tally(snap.progress.refused) or 0}"
        + (
            f"; model replies not understood: {tally(snap.progress.unreadable)}"
            if snap.progress.unreadable
            else ""
        )
        + (
            f"; results kept though degenerate: {tally(snap.progress.flawed)}"
            if snap.progress.flawed
            else ""
        ),
        f"- Usage: {total_tokens} tokens, ${total_cost:.4f}"
        + (f" ({estimated} call(s) charged by estimate)" if estimated else ""),
        f"- Steps replayed after a lost worker: {snap.replays.steps} "
        f"({snap.replays.calls} model calls, {snap.replays.tokens} tokens not paid again)",
        "",
        "## Usage",
        "",
        "| agent | model | calls | prompt tokens | completion tokens | cost (USD) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {kind} | {snap.settings.model_for(kind)} | {u.calls} | {u.prompt_tokens} | "
        f"{u.completion_tokens} | {u.cost:.4f} |"
        for kind, u in snap.usage.items()
        if u.calls
    ]
    models = by_model(snap)
    if len(models) > 1:
        lines += ["", "| model | calls | tokens | cost (USD) |", "|---|---:|---:|---:|"]
        lines += [f"| {m} | {u.calls} | {u.tokens} | {u.cost:.4f} |" for m, u in models.items()]
    if snap.tools:
        lines += [
            "",
            "## Tools",
            "",
            "| tool | calls | failed | mean seconds | bytes answered |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {t.calls} | {t.failed} | {t.seconds / t.calls:.2f} | {t.bytes} |"
            for name, t in sorted(snap.tools.items())
        ]
    if snap.files:
        lines += ["", "## Workspace", ""]
        lines += [f"- `{name}` ({size:,} bytes)" for name, size in snap.files]
    lines += ["", "## Results, in order of completion", ""]
    for r in results:
        lines += [
            f"### {r.seq + 1}. {r.task}",
            "",
            f"*task #{r.task_id} · {r.worker} · {_when(r.finished_at)}"
            + (f" · **the model's result {r.flaw}**" if r.flaw else "")
            + "*",
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
                **({"flaw": r.flaw} if r.flaw else {}),
            }
        )
        + "\n"
        for r in results
    )


def by_model(snap: Snapshot) -> dict[str, Usage]:
    """The run's usage and cost per model (each role may have its own; caps count them all)."""
    kinds: dict[str, list[Usage]] = {}
    for kind, u in snap.usage.items():
        if u.calls:
            kinds.setdefault(snap.settings.model_for(kind), []).append(u)
    return {model: Usage.total(parts) for model, parts in kinds.items()}


def final(snap: Snapshot) -> str:
    """The objective's answer alone (`coop results --final`)."""
    answer = snap.answer
    if answer is None or not answer.text:
        why = answer.missing if answer is not None else "its run has not ended yet"
        raise CoopError(f"{snap.objective_id} has no answer: {why}")
    wrong = "; ".join(w for w in (flawed(answer), unmatched(answer)) if w)
    note = f"> Note: {wrong} (kept as the model wrote it).\n\n" if wrong else ""
    return note + answer.text.rstrip() + "\n"


def final_json(snap: Snapshot) -> str:
    """The answer as the JSON its schema asked for (`coop results --final --format json`)."""
    answer = snap.answer
    if answer is not None and answer.data:
        return answer.data + "\n"
    if not snap.settings.answer_schema:
        raise CoopError(
            f"{snap.objective_id} was not asked for JSON: start it with --answer-schema"
        )
    why = unmatched(answer) or (answer.missing if answer else "its run has not ended yet")
    raise CoopError(f"{snap.objective_id} has no JSON answer: {why}")


def path(root: Path, objective_id: str) -> Path:
    return root / "reports" / f"{objective_id}.md"


def save(target: Path, text: str | Iterable[str], private: bool = False) -> None:
    """Write a file of the user's (or, `private`, one only its owner may read); a path that
    cannot be written is one line, not a traceback."""
    try:
        if private:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.touch(mode=0o600)
        with target.open("w", encoding="utf-8") as out:
            out.writelines([text] if isinstance(text, str) else text)
    except OSError as exc:
        raise CoopError(f"cannot write {target}: {exc.strerror or exc}") from None


def write(root: Path, snap: Snapshot, results: Sequence[Result], events: Iterable[Event]) -> Path:
    """The report, and beside it the whole event tape as JSON lines (`<id>.events.jsonl`),
    under the state dir; readable only by their owner, like the journal."""
    report = path(root, snap.objective_id)
    save(report, markdown(snap, results), private=True)
    save(report.with_suffix(".events.jsonl"), (e.to_json() + "\n" for e in events), True)
    return report


def write_workspace(root: Path, objective_id: str, files: dict[str, str]) -> Path | None:
    """The shared workspace as a folder beside the report (`<id>.workspace/`), when it has
    files; paths were checked by the board (relative, no `..`). Every file that can be written
    is; the ones that cannot (a journal from before the board refused `notes` beside
    `notes/x`, a full disk) are one CoopError at the end, after the rest."""
    if not files:
        return None
    folder = path(root, objective_id).with_suffix(".workspace")
    failed: list[str] = []
    for name, content in files.items():
        try:
            save(folder / name, content, private=True)
        except CoopError as exc:
            failed.append(f"{name!r} ({exc})")
    if failed:
        raise CoopError(
            f"{len(failed)} of {len(files)} workspace file(s) not exported to {folder}: "
            + "; ".join(failed)
        )
    return folder


def write_answer(root: Path, snap: Snapshot) -> Path:
    """The answer's newest revision as a Markdown file beside the report (every revision is
    in the journal)."""
    target = path(root, snap.objective_id).with_suffix(".answer.md")
    save(target, final(snap), private=True)
    return target
