"""Journals written by an earlier format open, upgrade and replay to the board they recorded.

The fixtures under tests/fixtures/journals were made by coop at `coop-journal/1`, before the
format changed: a whole offline objective with tools, resumed once with a larger cap, and an
idle board driven through every public method (approvals, a failure, a release, an expiry, an
answer revised after a reopen). `expected.json` holds, for each, what that coop's board showed
after replaying it and the tape `coop events --json` printed: the state and tape of the
upgraded journal must be the same.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest

from coop import events as ev
from coop import journal
from coop.board import Board
from coop.registry import _settings
from coop.types import EventKind, Lease

FIXTURES = Path(__file__).parent / "fixtures" / "journals"
EXPECTED = FIXTURES / "expected.json"
NAMES = ["objective-with-tools-and-resume", "idle-board-with-answer"]


def state_of(board: Board) -> dict[str, Any]:
    """What a replayed board shows, as JSON: every view a reader of the journal has."""
    snap = board.snapshot()
    shown: dict[str, Any] = json.loads(
        json.dumps(
            {
                "state": [snap.state.value, snap.reason and snap.reason.value, snap.detail],
                "pending": [t.id for t in snap.pending],
                "tasks": [asdict(t) for t in snap.pending + snap.dead],
                "leased": [(lease.task.id, lease.token, lease.worker) for lease in snap.leased],
                "completed": snap.completed,
                "unplanned": snap.unplanned,
                "results": [asdict(r) for r in board.results()],
                "usage": {k: asdict(u) for k, u in snap.usage.items()},
                "progress": asdict(snap.progress),
                "answers": [asdict(a) for a in board.answers()],
                "tools": {k: asdict(v) for k, v in snap.tools.items()},
                "files": snap.files,
                "replays": asdict(snap.replays),
                "workers": sorted(
                    (w.worker, w.completed, w.failed, w.tool_calls, asdict(w.usage))
                    for w in snap.workers
                ),
                "settings": asdict(snap.settings),
                "steps": {
                    str(tid): [asdict(s) for s in board.steps(tid)[0]]
                    for tid, _ in board.task_texts()
                },
            },
            default=str,
        )
    )
    return shown


def opened(name: str, root: Path, *, readonly: bool) -> Board:
    """The fixture journal `name`, copied under `root`, opened as its objective's board."""
    (root / "journal").mkdir(parents=True, exist_ok=True)
    info = journal.read_info(FIXTURES / f"{name}.db")
    path = journal.journal_path(root, info.objective_id)
    if not path.exists():
        shutil.copy(FIXTURES / f"{name}.db", path)
    return Board(
        info.objective_id,
        info.objective,
        _settings(info),
        "n",
        str(root),
        clock=lambda: info.created + 10_000,
        readonly=readonly,
    )


def tape(board: Board) -> list[str]:
    return [e.to_json() for e in board.events(0, 100_000)]


NEWER: dict[str, dict[str, Any]] = {
    "settings": {
        "planner_model": "",
        "worker_model": "",
        "answer_model": "",
        "role_prices": [],
        "instructions": "",
        "answer_schema": "",
        "planner_ttl": 15.0,
        "retry_delay": 2.0,
    },
    "answers": {"data": "", "invalid": ""},
}
"""What coop gained after the fixtures were made: a replayed older journal shows each at the
default a journal without it means (so it is checked, then left out of the comparison)."""


def as_old(state: dict[str, Any]) -> dict[str, Any]:
    """`state` without the fields of NEWER, each asserted to hold its default."""
    settings = dict(state["settings"])
    for key, default in NEWER["settings"].items():
        assert settings.pop(key) == default, key
    answers = []
    for answer in state["answers"]:
        answer = dict(answer)
        for key, default in NEWER["answers"].items():
            assert answer.pop(key) == default, key
        answers.append(answer)
    return {**state, "settings": settings, "answers": answers}


def tape_as_old(lines: list[str]) -> list[str]:
    """The tape without the answers' fields of NEWER, each asserted to hold its default."""
    out = []
    for line in lines:
        event = json.loads(line)
        if event["event"] == EventKind.ANSWER.value:
            for key, default in NEWER["answers"].items():
                assert event.pop(key) == default, key
            line = json.dumps(event)
        out.append(line)
    return out


def expected() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(EXPECTED.read_text())
    return found


@pytest.mark.parametrize("name", NAMES)
def test_an_older_journal_opens_upgrades_and_replays_to_the_same_board(
    tmp_path: Path, name: str
) -> None:
    want = expected()[name]
    before = opened(name, tmp_path, readonly=True)  # a reader leaves the old file as it was
    assert as_old(state_of(before)) == want["state"]
    assert tape_as_old(tape(before)) == want["tape"]
    path = before._journal.path  # type: ignore[union-attr]
    assert _format(path) == "coop-journal/1"

    upgraded = opened(name, tmp_path, readonly=False)
    assert _format(path) == journal.FORMAT != "coop-journal/1"
    assert as_old(state_of(upgraded)) == want["state"]
    assert tape_as_old(tape(upgraded))[: len(want["tape"])] == want["tape"]
    upgraded._journal.close()  # type: ignore[union-attr]
    again = opened(name, tmp_path, readonly=False)  # an upgraded journal opens as it is
    assert as_old(state_of(again)) == want["state"]


def test_an_upgraded_journal_goes_on_recording(tmp_path: Path) -> None:
    board = opened("idle-board-with-answer", tmp_path, readonly=False)
    board.claim_planner("planner-2")
    board.add(["zeta task"], planner="planner-2")
    board.approve([t.id for t in board.awaiting_approval()])
    lease = board.lease("w3")
    assert isinstance(lease, Lease)
    board.complete(lease.task.id, lease.token, "w3", "zeta done")
    board._journal.close()  # type: ignore[union-attr]
    rebuilt = opened("idle-board-with-answer", tmp_path, readonly=True)
    assert rebuilt.results()[-1].text == "zeta done"
    live, replayed = state_of(board), state_of(rebuilt)
    del live["workers"], replayed["workers"]  # who was seen: not journaled, by design
    assert replayed == live


def _format(path: Path) -> str:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    found: str = json.loads(value)
    return found


def test_format_1_lines_of_older_coops_upgrade_explicitly() -> None:
    """Keys earlier coops did not write come from `upgrade_v1`, not from handler defaults."""
    added = ev.upgrade_v1(EventKind.ADDED, {"tasks": [[1, "a", None]], "planned": 3})
    assert added == {
        "tasks": [[1, "a", None]],
        "planned": None,
        "exact": 0,
        "near": 0,
        "hold": False,
        "planned_upto": 3,
    }
    assert ev.decode(EventKind.ADDED, added).planned_upto == 3  # type: ignore[attr-defined]
    leased = ev.upgrade_v1(EventKind.LEASED, {"id": 1, "token": 1, "worker": "w", "expires": 9})
    assert ev.decode(EventKind.LEASED, leased) == ev.Leased(1, 1, "w", 9, 0, 0.0)
    usage = {"worker": "w", "kind": "execution", "prompt": 1, "completion": 2, "latency": None}
    used = ev.decode(EventKind.USAGE, ev.upgrade_v1(EventKind.USAGE, usage))
    assert isinstance(used, ev.Usage) and used.latency == 0.0
    with pytest.raises(TypeError):  # format 2 holds every key: none is made up
        ev.decode(EventKind.LEASED, {"id": 1, "token": 1, "worker": "w", "expires": 9})


def test_every_kind_has_one_type_and_its_line_round_trips() -> None:
    assert set(ev.TYPES) == set(EventKind)
    step = ev.Step(3, 1, "w", 1, "model", "t", [("c", "f", "{}")], "", "", True, 1, 2, 0.5, 0)
    line = json.loads(json.dumps(ev.encode(step)))
    assert list(line) == [f.name for f in fields(ev.Step)]  # the tape's keys, in order
    assert ev.decode(EventKind.STEP, line) == ev.Step(**{**line, "calls": [["c", "f", "{}"]]})
    usage = ev.Usage("w", "execution", 1, 2, 0.1, None)
    assert list(ev.encode(usage)) == ["worker", "kind", "prompt", "completion", "latency", "task"]
