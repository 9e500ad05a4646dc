"""The views: `coop status` (once and --watch), and the event tape (`coop events`)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from rich.console import Console

from coop import registry, status
from coop.board import Board, BoardClient
from coop.config import RunSettings
from coop.testing.cluster import COOP
from coop.testing.standin import MakeStandIn
from coop.types import Lease, Reason, Snapshot, State
from tests.support.procs import SECRET, coop_env, run_coop, spawn_coop, spawn_start, unique


def test_events_follow_a_run_to_its_end_and_hold_no_secret(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = make_standin(latency=0.2)
    objective = unique("Tape it all")
    env = coop_env(ray_cluster, server)
    start, oid = spawn_start(objective, "--workers", "2", env=env, log=tmp_path / "start.log")
    follow = spawn_coop("events", oid, "--follow", env=env, log=tmp_path / "follow.log")
    watch = spawn_coop("status", oid, "--watch", env=env, log=tmp_path / "watch.log")
    assert start.wait(120) == 0
    assert follow.wait(60) == 0 and watch.wait(60) == 0  # both leave when the run ends
    lines = (tmp_path / "follow.log").read_text().splitlines()
    kinds = {line.split()[2] for line in lines if line[:6].strip().isdigit()}
    assert {"added", "leased", "completed", "usage", "stopping", "planner"} <= kinds
    assert "finished (done)" in (tmp_path / "watch.log").read_text()
    tape = run_coop("events", oid, "--json", env=env)
    rows = [json.loads(line) for line in tape.stdout.splitlines()]
    assert [r["seq"] for r in rows] == sorted({r["seq"] for r in rows})
    calls = [r for r in rows if r["event"] == "usage"]
    model_calls = [c for c in server.calls if c.status == 200 and c.kind != "models"]
    assert len(calls) == len(model_calls)  # every model call (the check's listing is none)
    assert all(r["latency"] >= 0 and r["worker"] for r in calls)
    executions = [r for r in calls if r["kind"] == "execution"]
    assert executions and all(r["latency"] >= 0.2 and r["task"] for r in executions)
    every = tape.stdout + "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert SECRET not in every
    since = run_coop("events", oid, "--since", str(rows[-3]["seq"]), env=env)
    assert len(since.stdout.splitlines()) == 2


def test_status_shows_budget_progress_and_instances(ray_cluster: Cluster) -> None:
    env = coop_env(ray_cluster)
    objective = unique("Show me")
    assert (
        run_coop("start", objective, "--llm", "offline", "--max-cost", "1", env=env).returncode == 0
    )
    out = run_coop("status", objective, env=env).stdout
    for needle in (
        "finished (done)",
        "budget: tasks 13/25",
        "cost $0.0000/$1",
        "completion checks",
        "instances",
        "in flight",
        "total",
        "simulated",
    ):
        assert needle in out, needle
    board = registry.find(objective)
    assert board.snapshot().completed == 13


def on_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `coop` with its output on a pseudo-terminal, as a person at a shell would."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(COOP), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("quiet", [False, True])
def test_start_shows_a_live_progress_line_on_a_terminal_only(
    make_standin: MakeStandIn, ray_cluster: Cluster, tmp_path: Path, quiet: bool
) -> None:
    server = make_standin(latency=0.3)
    env = coop_env(ray_cluster, server)
    args = ["start", unique("Line it up"), "--workers", "2"]
    piped = None
    if not quiet:  # beside it, output that is not a terminal: plain log lines only
        with (tmp_path / "out").open("w") as said, (tmp_path / "err").open("w") as logged:
            piped = subprocess.Popen(
                [str(COOP), *args[:1], unique("Line it up"), *args[2:]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=said,
                stderr=logged,
            )
    code, out = on_terminal(*(["--quiet"] if quiet else []), *args, env=env)
    assert code == 0, out
    line = re.compile(r"\d+/25 done · \d+ pending · \d+ in flight · [\d,]+ tokens · \$")
    assert bool(line.search(out)) is not quiet, out[-2000:]
    assert ("task #1 done by" in out) is not quiet  # log lines scroll above the live line

    if piped is not None:
        assert piped.wait(120) == 0
        printed, logs = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
        assert not line.search(printed + logs) and "task #1 done by" in logs


def test_following_the_tape_reads_what_came_before_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run ends between the follower's read of the tape and its look at the state (a
    thread descheduled there, say): what was journaled before the end — the last completion,
    the stop — is still read, not lost because the state already says finished."""
    settings = RunSettings(llm="offline").validate()
    board = Board("ends-0a1b2c3d", "End now", settings, "n", str(tmp_path))
    board.add(["only"])
    lease = board.lease("w1")
    assert isinstance(lease, Lease)
    view = BoardClient.in_process(board)
    looked = view.state

    def look_after_the_end() -> object:  # the run ends just before the follower looks
        if board.snapshot().state is not State.FINISHED:
            board.complete(lease.task.id, lease.token, "w1", "done")
            board.stop(Reason.STOPPED)
        return looked()

    monkeypatch.setattr(view, "state", look_after_the_end)
    kinds = [e.kind.value for e in status.stream(view, since=0, follow=True)]
    assert kinds[:2] == ["added", "leased"] and {"completed", "stopping"} <= set(kinds), kinds


def test_a_journal_view_keeps_following_the_journal_to_the_end(tmp_path: Path) -> None:
    """With no cluster to reach, `status --watch` and `events --follow` read the journal
    again and again: they see a run that goes on elsewhere, and leave when it ends."""
    settings = RunSettings(llm="offline").validate()
    board = Board("follow-0a1b2c3d", "Follow me", settings, "n", str(tmp_path))
    board.add(["first", "second"])

    def read() -> Board:
        return Board("follow-0a1b2c3d", "Follow me", settings, "r", str(tmp_path), readonly=True)

    view = BoardClient.in_process(read(), reread=read)
    assert not view.live
    seen: list[str] = []
    tape = threading.Thread(
        target=status.tape,
        args=(view,),
        kwargs=dict(since=0, follow=True, as_json=False, out=seen.append),
    )
    screen = io.StringIO()
    shown: list[Snapshot] = []
    watcher = threading.Thread(
        target=lambda: shown.append(status.watch(Console(file=screen, width=120), view, 0.1))
    )
    tape.start()
    watcher.start()
    for worker in ("w1", "w2"):
        lease = board.lease(worker)
        assert isinstance(lease, Lease)
        time.sleep(0.3)
        board.complete(lease.task.id, lease.token, worker, f"done by {worker}")
    board.stop(Reason.DONE, "all done")
    tape.join(20)
    watcher.join(20)
    assert not tape.is_alive() and not watcher.is_alive()
    assert sum(" completed " in line for line in seen) == 2 and "stopping" in seen[-1]
    assert shown[0].completed == 2 and "finished (done)" in screen.getvalue()
