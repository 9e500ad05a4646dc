"""Bad input on the command line: one line on stderr, a non-zero exit, never a traceback —
and hostile but valid objectives simply work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray.cluster_utils import Cluster

from coop import cluster, registry
from coop.config import RunSettings
from coop.journal import journal_path
from coop.memory.cluster import memory_path
from coop.testing.standin import Faults, MakeStandIn
from coop.text import objective_id
from coop.types import Reason
from tests.support.procs import (
    STATE_DIR,
    assert_one_line_error,
    closed_port,
    coop_env,
    run_coop,
    run_coops,
    unique,
)

MAX_TASKS_EXIT = Reason.MAX_TASKS.exit_code


@pytest.mark.parametrize(
    "args, needle",
    [
        (["start", ""], "empty"),
        (["start", "   \n\t "], "empty"),
        (["start", "x" * 10_000], "limit is 4000"),
        (["start", "ok", "--llm", "offline", "--workers", "-1"], "--workers"),
        (["start", "ok", "--llm", "offline", "--max-tasks", "abc"], "--max-tasks"),
        (["start", "ok", "--llm", "offline", "--max-tasks", "0"], "--max-tasks"),
        (["start", "ok", "--llm", "offline", "--concurrency", "1.5"], "--concurrency"),
        (["start", "ok", "--llm", "offline", "--lease-ttl", "-3"], "--lease-ttl"),
        (["start", "ok", "--llm", "offline", "--planner-ttl", "0.5"], "--planner-ttl"),
        (["start", "ok", "--llm", "gpt"], "--llm"),
        (["join", "x", "--concurrency", "-2"], "--concurrency"),
        (["start", "ok"], "OPENAI_API_KEY"),
        (["start", "ok", "--llm", "offline", "--address", "127.0.0.1:1"], "127.0.0.1:1"),
        (["list", "--address", "not-an-address"], "bad Ray address"),
        (["nonsense-command"], "No such command"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(run_coop(*args, env=coop_env(None), timeout=60), needle)


def test_env_vars_are_validated_like_flags() -> None:
    proc = run_coop("start", "ok", "--llm", "offline", env=coop_env(None, COOP_WORKERS="many"))
    assert_one_line_error(proc, "--workers")


def test_unknown_objective_lists_the_known_ones(ray_cluster: Cluster) -> None:
    env = coop_env(ray_cluster)
    known = unique("Known objective")
    assert (
        run_coop("start", known, "--llm", "offline", "--max-tasks", "1", env=env).returncode
        == MAX_TASKS_EXIT
    )
    commands = (["join"], ["status"], ["stop"], ["start", "--resume"])
    for proc in run_coops(*[[*c, "no-such-objective"] for c in commands], env=env, timeout=60):
        assert_one_line_error(proc, "no objective 'no-such-objective'", objective_id(known))


def test_second_start_of_a_live_objective_is_refused(ray_cluster: Cluster) -> None:
    env = coop_env(ray_cluster)
    objective = unique("Only once")
    assert (
        run_coop("start", objective, "--llm", "offline", "--max-tasks", "1", env=env).returncode
        == MAX_TASKS_EXIT
    )
    assert_one_line_error(
        run_coop("start", objective, "--llm", "offline", env=env), "already exists", "--resume"
    )


@pytest.mark.parametrize(
    "objective",
    [
        "Write \"quoted\" and 'single' text",
        "Compare a/b and c\\d paths ../..",
        "Plan a 🍅 festival 🎉",
        "Ünïcödé — and $(rm -rf /) `backticks` {braces} %s",
    ],
)
def test_hostile_objectives_run_and_resolve_by_text(ray_cluster: Cluster, objective: str) -> None:
    objective = unique(objective)
    env = coop_env(ray_cluster)
    proc = run_coop("start", objective, "--llm", "offline", "--max-tasks", "2", env=env)
    assert proc.returncode == MAX_TASKS_EXIT, proc.stderr
    status = run_coop("status", objective, env=env)
    assert status.returncode == 0 and objective_id(objective) in status.stdout
    board = registry.find(objective)
    assert board.describe().text == objective


def test_list_and_stop(ray_cluster: Cluster) -> None:
    env = coop_env(ray_cluster)
    objective = unique("Listed objective")
    run_coop("start", objective, "--llm", "offline", "--max-tasks", "1", env=env)
    listing = run_coop("list", env=env)
    assert listing.returncode == 0 and objective_id(objective) in listing.stdout
    assert "finished" in listing.stdout
    stopped = run_coop("stop", objective_id(objective)[:-2], env=env)
    assert stopped.returncode == 0 and "finished" in stopped.stdout


def test_delete_refuses_a_running_objective_and_removes_a_finished_one(
    ray_cluster: Cluster,
) -> None:
    env = coop_env(ray_cluster)
    running = unique("Still running")
    oid = registry.create_board(
        running, RunSettings(llm="offline").validate(), STATE_DIR
    ).objective_id
    assert_one_line_error(run_coop("delete", oid, "--yes", env=env), "is running", "coop stop")
    assert journal_path(STATE_DIR, oid).exists()

    finished = unique("Finished and deleted")
    fid = objective_id(finished)
    run_coop("start", finished, "--llm", "offline", "--max-tasks", "2", env=env)
    assert journal_path(STATE_DIR, fid).exists() and memory_path(STATE_DIR, fid).exists()
    gone = run_coop("delete", fid, "--yes", env=env)
    assert gone.returncode == 0, gone.stderr
    assert not journal_path(STATE_DIR, fid).exists() and not memory_path(STATE_DIR, fid).exists()
    assert f"kept the report {STATE_DIR / 'reports' / fid}.md" in gone.stdout  # the user's
    assert not {cluster.actor_name(fid, r) for r in ("board", "memory")} & set(
        cluster.actor_names()
    )
    assert_one_line_error(run_coop("delete", fid, "--yes", env=env), "no objective")


def test_join_without_a_cluster_explains_how_to_point_it(tmp_path: object) -> None:
    env = coop_env(None, RAY_TMPDIR=str(tmp_path))  # no cluster file here
    assert_one_line_error(
        run_coop("join", "anything", env=env, timeout=60), "--address", "RAY_ADDRESS"
    )


def test_bare_coop_shows_the_commands() -> None:
    proc = run_coop(env=coop_env(None))
    assert proc.returncode == 0 and "Commands:" in proc.stdout and "coop: error" not in proc.stderr


@pytest.mark.parametrize(
    "server, flags, needle",
    [
        ({}, ["--model", ""], "--model is empty"),
        ({"api_key": "the-right-one"}, [], "refused (401"),
        ({"models": ("small-model", "embedder")}, ["--model", "big-model"], "does not know"),
        ({"faults": Faults(broken="html")}, [], "not a model listing"),
        ({"faults": Faults(broken="per-token")}, [], "one vector per token"),
        (None, [], "unreachable"),
    ],
)
def test_a_model_server_that_cannot_serve_stops_start_before_anything_exists(
    make_standin: MakeStandIn,
    ray_cluster: Cluster,
    server: dict[str, Any] | None,
    flags: list[str],
    needle: str,
) -> None:
    """`coop start` asks the model server first: unreachable, refusing the key, not knowing
    the model, not an OpenAI-compatible API at all, or embedding per token (llama.cpp without
    pooling) is one line and no objective."""
    base = make_standin(**server).base_url if server is not None else None
    objective = unique("Ask first")
    env = coop_env(
        ray_cluster,
        OPENAI_API_KEY="sk-wrong-key-123456",
        OPENAI_BASE_URL=base or f"http://127.0.0.1:{closed_port()}/v1",
        COOP_EMBEDDING_MODEL="embedder",
    )
    proc = run_coop("start", objective, "--model", "small-model", *flags, env=env, timeout=90)
    assert_one_line_error(proc, needle)
    assert "sk-wrong" not in proc.stderr
    assert not journal_path(STATE_DIR, objective_id(objective)).exists()


def test_an_unwritable_output_file_is_one_line_and_loses_nothing(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    env = coop_env(ray_cluster)
    objective = unique("Write somewhere")
    code = run_coop("start", objective, "--llm", "offline", "--max-tasks", "2", env=env).returncode
    assert code == MAX_TASKS_EXIT
    before = run_coop("results", objective, "--format", "jsonl", env=env).stdout
    refused = run_coops(
        ["results", objective, "-o", str(tmp_path / "no" / "dir" / "out.md")],
        ["results", objective, "--final", "-o", str(tmp_path)],
        env=env,
    )
    for proc, needle in zip(refused, ("cannot write", "is a directory"), strict=True):
        assert_one_line_error(proc, needle)
    assert run_coop("results", objective, "--format", "jsonl", env=env).stdout == before
    assert len(before.splitlines()) == 2
