"""The journal: a rebuilt board is the board that was; bad files and full disks lose nothing."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from coop import cluster
from coop.board import Board, BoardClient
from coop.config import RunSettings
from coop.journal import Journal, JournalError, journal_path, list_journals, state_dir
from coop.journal import _create as journal_create
from coop.memory.cluster import VectorStore
from coop.simulate import lexical_embedding
from coop.testing.standin import StandIn
from coop.text import objective_id
from coop.types import EventKind, Lease, Outcome, Reason, State
from tests.support.board import Clock, drive, leased
from tests.support.procs import STATE_DIR, coop_env, run_coop, spawn_coop, unique, wait_for

OID = "journal-test-0a1b2c3d"


def journaled(root: Path, clock: Clock | None = None, **settings: object) -> Board:
    run = RunSettings(llm="offline", **settings).validate()  # type: ignore[arg-type]
    return Board(OID, "objective", run, "nonce", str(root), clock=clock or Clock())


View = tuple[
    list[int],
    list[tuple[int, str, str]],
    list[tuple[int, int, str]],
    State,
    "Reason | None",
    int,
    dict[str, dict[str, object]],
    int,
]
"""What a board shows: its pending ids first, then results, dead letters, state, reason, tasks
planned from, usage and the next task id."""


def view(board: Board) -> View:
    snap = board.snapshot()
    return (
        [t.id for t in snap.pending],
        [(r.task_id, r.text, r.worker) for r in board.results()],
        [(t.id, t.attempts, t.last_error) for t in snap.dead],
        snap.state,
        snap.reason,
        snap.completed - snap.unplanned,
        {k: vars(u) for k, u in snap.usage.items()},
        board._books.tasks.next_id,
    )


@pytest.mark.parametrize("seed", range(12))
def test_a_rebuilt_board_is_the_board_that_was(tmp_path: Path, seed: int) -> None:
    clock = Clock()
    board = journaled(tmp_path, clock, lease_ttl=5, max_attempts=2, max_tasks=10_000)
    drive(board, clock, random.Random(seed), 300)
    before = view(board)
    live = board.snapshot().leased
    in_flight = {lease.task.id for lease in live}
    max_token = board._books.leases.next_token - 1
    board._journal.close()  # type: ignore[union-attr]

    rebuilt = journaled(tmp_path, Clock())
    after = view(rebuilt)
    pending_before, *rest_before = before
    pending_after, *rest_after = after
    assert rest_after == rest_before
    # leases do not survive: their tasks come back first, the rest keep their order
    assert set(pending_after[: len(in_flight)]) == in_flight
    assert pending_after[len(in_flight) :] == pending_before
    if live:  # tokens keep rising after a rebuild: a pre-restart holder is fenced out
        fresh = [leased(rebuilt, "new") for _ in live]
        assert {f.task.id for f in fresh} == in_flight
        assert min(f.token for f in fresh) > max_token
        zombie = live[0]
        assert rebuilt.complete(zombie.task.id, zombie.token, "zombie", "x") is Outcome.STALE


def test_a_completion_is_committed_before_it_is_acknowledged(tmp_path: Path) -> None:
    board = journaled(tmp_path)
    board.add(["write it"])
    lease = leased(board)
    assert board.complete(lease.task.id, lease.token, "w", "the result") is Outcome.ACCEPTED
    other = sqlite3.connect(journal_path(tmp_path, OID))  # a second reader sees it already
    kinds = [k for (k,) in other.execute("SELECT kind FROM events ORDER BY seq")]
    assert (
        kinds[-1] == "completed"
        and "the result"
        in other.execute("SELECT data FROM events WHERE kind = 'completed'").fetchone()[0]
    )


def test_state_dir_is_private(tmp_path: Path) -> None:
    root = state_dir(str(tmp_path / "state"))
    assert (root.stat().st_mode & 0o777) == 0o700
    journaled(root)
    assert (journal_path(root, OID).stat().st_mode & 0o777) == 0o600


def test_unusable_state_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="COOP_STATE_DIR"):
        state_dir(str(blocker / "state"))


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, b"SQLite format 3\x00" + b"\xff" * 200])
def test_corrupt_journal_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = journal_path(state_dir(str(tmp_path)), OID)
    path.write_bytes(content)
    with pytest.raises(JournalError, match="left untouched"):
        journaled(tmp_path)
    assert path.read_bytes() == content
    found, problems = list_journals(tmp_path)
    assert found == [] and list(problems) == [OID]


def test_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = journal_path(state_dir(str(tmp_path)), OID)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (name TEXT)")
    db.execute("INSERT INTO people VALUES ('ada')")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="not a readable coop journal"):
        journaled(tmp_path)
    assert path.read_bytes() == before


def test_a_journal_appears_whole(tmp_path: Path) -> None:
    """A reader of the state dir (`coop list`, `coop status` of a dormant objective) polling
    while journals are made never meets one without its tables (CI once read one mid-creation:
    "no such table: events")."""
    root = state_dir(str(tmp_path))
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(list_journals(root)[1].values())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for n in range(40):
            Journal(journal_path(root, f"whole-{n:08x}"), f"whole-{n:08x}", create={})
    finally:
        done.set()
        watcher.join()
    assert seen == []
    assert len(list_journals(root)[0]) == 40
    assert sorted(p.name for p in (root / "journal").iterdir() if p.name.startswith(".")) == []


def test_of_two_makers_of_one_journal_the_second_fails_and_erases_nothing(tmp_path: Path) -> None:
    path = journal_path(state_dir(str(tmp_path)), OID)
    first = Journal(path, OID, create={})
    first.append(EventKind.STOPPING, {"reason": "kept"})
    with pytest.raises(FileExistsError):
        journal_create(path, OID, {})
    assert [e.data for e in Journal(path, OID, readonly=True).events()] == [{"reason": "kept"}]


def test_another_objectives_journal_is_refused(tmp_path: Path) -> None:
    journaled(tmp_path)
    with pytest.raises(JournalError, match="journal of"):
        Journal(journal_path(tmp_path, OID), "someone-else-12345678")


def test_full_disk_refuses_leases_and_keeps_acknowledged_work(tmp_path: Path) -> None:
    """SQLite's max_page_count gives the same SQLITE_FULL error a full disk does."""
    board = journaled(tmp_path)
    board.add(["a", "b", "c"])
    first = leased(board)
    assert board.complete(first.task.id, first.token, "w", "kept") is Outcome.ACCEPTED
    second = leased(board)
    db = board._journal._db  # type: ignore[union-attr]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(JournalError, match="full"):
        board.complete(second.task.id, second.token, "w", "x" * 20_000)
    assert board.lease("w") is State.RUNNING  # no new work while nothing can be recorded
    assert [r.text for r in board.results()] == ["kept"]
    db.execute("PRAGMA max_page_count = 1073741823")  # space again: the worker's retry lands
    assert board.complete(second.task.id, second.token, "w", "late") is Outcome.ACCEPTED
    assert isinstance(board.lease("w"), Lease)
    rebuilt = journaled(tmp_path)
    assert [r.text for r in rebuilt.results()] == ["kept", "late"]


def test_stop_reason_survives(tmp_path: Path) -> None:
    board = journaled(tmp_path)
    board.stop(Reason.STOPPED, "by test")
    assert journaled(tmp_path).state() == (State.FINISHED, Reason.STOPPED, "by test")


def test_vector_store_reloads_its_file(tmp_path: Path) -> None:
    path = str(tmp_path / "memory.db")
    store = VectorStore(path)
    store.upsert(1, 1, lexical_embedding("soil ph"), "soil", "acidic", "w")
    store.upsert(1, 2, lexical_embedding("soil ph"), "soil", "neutral", "w")
    store.upsert(2, 1, lexical_embedding("watering"), "water", "daily", "w")
    again = VectorStore(path)
    assert again.count() == 2
    assert again.query(lexical_embedding("soil ph"), 1)[0].result == "neutral"
    assert not again.upsert(1, 1, lexical_embedding("soil"), "soil", "zombie", "w")


def test_board_actor_restarts_from_its_journal(ray_cluster: object, tmp_path: Path) -> None:
    oid = f"restart-{uuid.uuid4().hex[:8]}"
    run = RunSettings(llm="offline", lease_ttl=30).validate()
    handle = cluster.named_actor(Board, oid, "board", oid, "o", run, "n", str(tmp_path))
    board = BoardClient.of_actor(oid, handle)
    board.add(["a", "b", "c"])
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    board.complete(lease.task.id, lease.token, "w", "done before the crash")
    held = board.lease("w")
    assert isinstance(held, Lease)
    pid = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(handle, no_restart=False)  # the actor process dies; Ray restarts it
    wait_for(
        lambda: ray.get(handle.__ray_call__.remote(lambda self: os.getpid())) != pid,
        60,
        "the restarted board",
    )
    snap = board.snapshot()
    assert snap.completed == 1
    # the lease held at the crash is still its worker's, under its token, for a fresh grace
    assert [(x.task.id, x.token, x.worker) for x in snap.leased] == [
        (held.task.id, held.token, "w")
    ]
    assert snap.leased[0].ttl > 25
    assert [t.id for t in snap.pending] == [3]
    assert board.results()[0].text == "done before the crash"
    assert board.complete(held.task.id, held.token, "w", "after") is Outcome.ACCEPTED


def completed_in(path: Path) -> dict[int, str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT data FROM events WHERE kind = 'completed' ORDER BY seq")
        done = [json.loads(d) for (d,) in rows]
    ids = [d["id"] for d in done]
    assert len(ids) == len(set(ids)), "a task was completed twice"
    return {d["id"]: d["text"] for d in done}


def test_a_run_survives_a_whole_cluster_restart(tmp_path: Path) -> None:
    """Start a run, stop the whole Ray cluster mid-run, start a new one, resume: the run
    completes with every earlier result intact and none executed again."""
    server = StandIn(latency=0.4)
    server.start()
    objective = unique("Survive a restart")
    oid = objective_id(objective)
    path = journal_path(STATE_DIR, oid)
    first = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        env = coop_env(None, server, RAY_ADDRESS=first.address)
        start = spawn_coop(
            "start", objective, "--workers", "2", env=env, log=tmp_path / "first.log"
        )
        wait_for(lambda: path.exists() and len(completed_in(path)) >= 4, 90, "some results")
    finally:
        # every process of that cluster: board, memory, workers' raylets
        first.shutdown()  # type: ignore[no-untyped-call]
    start.kill()
    start.wait(30)
    before = completed_in(path)
    assert 4 <= len(before) < 13, "the run was not cut off midway"
    calls_before = len(server.calls)
    server.latency = 0.0  # it paced the first part, to cut it off midway; the rest may run fast
    second = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        env = coop_env(None, server, RAY_ADDRESS=second.address)
        listing = run_coop("list", env=env)
        assert oid in listing.stdout and "dormant" in listing.stdout
        resumed = run_coop("start", "--resume", oid, "--workers", "2", env=env, timeout=180)
        assert resumed.returncode == 0, resumed.stderr
        assert "finished (done)" in resumed.stdout
    finally:
        second.shutdown()  # type: ignore[no-untyped-call]
        server.stop()
    after = completed_in(path)
    assert len(after) == 13
    assert {tid: after[tid] for tid in before} == before  # earlier results intact
    again = {c.subject for c in server.calls[calls_before:] if c.kind == "execution"}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        texts = dict(
            db.execute(
                "SELECT json_extract(value, '$[0]'), json_extract(value, "
                "'$[1]') FROM events, json_each(json_extract(data, '$.tasks')) "
                "WHERE kind = 'added'"
            )
        )
    assert not again & {texts[tid] for tid in before}  # none executed again


def test_list_without_a_cluster_shows_the_journals(tmp_path: Path) -> None:
    board = journaled(tmp_path)
    board.stop(Reason.STOPPED)
    env = coop_env(None, COOP_STATE_DIR=str(tmp_path), RAY_TMPDIR=str(tmp_path / "no-ray"))
    proc = run_coop("list", env=env, timeout=60)
    assert proc.returncode == 0 and OID in proc.stdout and "dormant" in proc.stdout
    assert "journals only" in proc.stderr


def test_resume_from_a_corrupt_journal_is_one_line_and_touches_nothing(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    root = state_dir(str(tmp_path))
    path = journal_path(root, "broken-objective-1234abcd")
    path.write_bytes(b"not a database at all" * 10)
    env = coop_env(ray_cluster, COOP_STATE_DIR=str(root))
    proc = run_coop("start", "--resume", "broken-objective-1234abcd", env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a readable coop journal" in lines[0], proc.stderr
    assert path.read_bytes() == b"not a database at all" * 10


def test_unwritable_state_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = coop_env(None, COOP_STATE_DIR=str(tmp_path / "file" / "state"))
    proc = run_coop("start", "Anything", "--llm", "offline", env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "COOP_STATE_DIR" in proc.stderr


def test_results_of_a_dormant_objective_come_from_its_journal(tmp_path: Path) -> None:
    board = journaled(tmp_path)
    board.add(["write it"])
    lease = leased(board)
    board.complete(lease.task.id, lease.token, "w", "the text that was written")
    board.stop(Reason.STOPPED)
    before = journal_path(tmp_path, OID).read_bytes()
    env = coop_env(None, COOP_STATE_DIR=str(tmp_path), RAY_TMPDIR=str(tmp_path / "no-ray"))
    proc = run_coop("results", OID[:12], env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "### 1. write it" in proc.stdout and "the text that was written" in proc.stdout
    assert "**stopped by user**" in proc.stdout
    assert journal_path(tmp_path, OID).read_bytes() == before  # read, never written


def test_the_report_and_tape_are_written_whatever_the_workspace_export_does(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    """A journal from before the board refused a name that is both a file and a folder holds
    `notes` and `notes/x`: the export cannot make both, which is one line; the report and the
    exported tape are written all the same, through `coop start --resume`."""
    root = state_dir(str(tmp_path))
    board = journaled(root, max_tasks=2)
    board.add(["Collect the notes"])
    old = Journal(journal_path(root, OID), OID)
    for path in ("notes", "notes/x"):
        old.append(
            EventKind.WROTE,
            {"path": path, "content": path, "key": path, "task": 1, "worker": "w"},
        )
    old.close()
    env = coop_env(ray_cluster, COOP_STATE_DIR=str(root))
    proc = run_coop("start", "--resume", OID, "--workers", "1", env=env, timeout=180)
    assert proc.returncode == Reason.MAX_TASKS.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr and f"reports/{OID}.md" in proc.stdout
    said = [line for line in proc.stderr.splitlines() if "not exported" in line]
    assert len(said) == 1 and "1 of 2 workspace file(s) not exported" in said[0], proc.stderr
    assert "'notes/x' (cannot write" in said[0]
    reports = root / "reports"
    assert "- `notes/x` (7 bytes)" in (reports / f"{OID}.md").read_text()
    tape = [json.loads(line) for line in (reports / f"{OID}.events.jsonl").read_text().splitlines()]
    assert [e["path"] for e in tape if e["event"] == "wrote"] == ["notes", "notes/x"]
    assert "answer" in [e["event"] for e in tape]  # the whole tape, to the run's answer
    assert (reports / f"{OID}.workspace" / "notes").read_text() == "notes"
