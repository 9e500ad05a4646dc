"""The Python API (`coop.run`, `coop.start`, `coop.open`, `Run`): driven in this process, which
is already connected to the test cluster as a user's `ray.init()` script would be, against the
model stand-in over HTTP; and in fresh interpreters where what matters is which cluster (or
none) they find."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import ray
from pydantic import BaseModel
from ray.cluster_utils import Cluster

import coop
from coop import cluster, registry
from coop.answers import AnswerTypeError
from coop.config import RunSettings
from coop.errors import CoopError
from coop.testing.standin import MakeStandIn
from coop.types import EventKind, Reason, State
from coop.worker import WorkerReport
from tests.support.procs import (
    ROOT,
    STATE_DIR,
    coop_env,
    run_coop,
    side_by_side,
    unique,
    wait_for,
)


def python(
    code: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`code` run by a fresh interpreter that imports this tree's coop."""
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_start_follow_wait_answer_in_one_process(
    ray_cluster: Cluster,
    make_standin: MakeStandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`coop.start` returns at once with the board open; the tape followed from this thread
    ends when the objective does; `wait` and `answer` then tell the same end, and no second
    connection to Ray was made. The run's instructions (a file) open every prompt the model
    was sent, the planner's and the workers' alike."""
    server = make_standin(latency=0.05)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "stand-in")
    house = tmp_path / "house.md"
    house.write_text("Write in British English. Cite the parish council's figures.\n")
    gcs = ray.get_runtime_context().gcs_address
    run = coop.start(
        unique("Plan a garden from Python"),
        max_tasks=3,
        workers=1,
        model="m",
        instructions=house,
        max_prompt_tokens=1500,
    )
    try:
        assert run.finished is None and run.status().state is not State.DORMANT
        kinds = [e.kind for e in run.events(follow=True)]
        snap = run.wait(timeout=120)
    finally:  # a planner thread must not outlive its test (and the cluster)
        if run.finished is None:
            run.stop()
            run.wait(120)
    assert {EventKind.ADDED, EventKind.COMPLETED, EventKind.STOPPING} <= set(kinds)
    assert snap.state is State.FINISHED and snap.reason is Reason.MAX_TASKS
    answer = run.answer
    assert answer is not None and answer.text and answer.revision == 1
    assert set(answer.cited) <= {r.task_id for r in run.results()}
    assert run.finished is not None and run.finished.report.exists()
    assert len(run.results()) == 3
    chats = [c for c in server.calls if c.path.endswith("/chat/completions")]
    assert {"creation", "execution", "synthesis"} <= {c.kind for c in chats}
    assert [c.kind for c in chats].count("synthesis") == 1
    assert all("Cite the parish council's figures." in c.system for c in chats)
    assert ray.get_runtime_context().gcs_address == gcs == ray_cluster.address


def test_a_start_whose_objective_another_made_first_leaves_no_worker_behind(
    ray_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A new objective's workers start beside its board, before the board has said whose it
    is. When it is another's (live on the cluster, its journal in another state dir), the
    start is refused in one line and the workers it started end: none outlives the refusal
    in this process, which owns them and lives on."""
    objective = unique("Made elsewhere first")
    theirs = registry.create_board(objective, RunSettings(llm="offline"), STATE_DIR)
    prefix = cluster.actor_name(theirs.objective_id, "worker:")
    monkeypatch.setenv("COOP_STATE_DIR", str(tmp_path))  # no journal here: only the board says
    with pytest.raises(CoopError, match="already exists"):
        coop.run(objective, llm="offline", workers=2)
    wait_for(
        lambda: not [n for n in cluster.actor_names() if n.startswith(prefix)],
        30,
        "the refused start's workers to end",
        lambda: str(cluster.actor_names()),
    )
    snap = theirs.snapshot()  # the other's board: nothing seeded, nobody leased
    assert snap.state is State.RUNNING and not snap.pending and not snap.workers


def test_bad_settings_raise_the_line_the_cli_prints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A wrong name, a wrong value and a wrong `COOP_*` value, an unreadable instructions
    file, an answer schema that is not JSON or not a JSON Schema: a SettingError (a CoopError)
    whose text is the CLI's one line for the same mistake, before anything starts."""
    env = coop_env(None)
    (tmp_path / "bad.json").write_text('{"type": 12}')
    (tmp_path / "prose.json").write_text("an answer with a title")
    bad, prose = str(tmp_path / "bad.json"), str(tmp_path / "prose.json")
    cases: list[tuple[dict[str, Any], list[str], dict[str, str]]] = [
        ({"answer_schema": bad}, ["--answer-schema", bad], {}),
        ({"answer_schema": prose}, ["--answer-schema", prose], {}),
        ({"max_task": 3}, ["--max-task", "3"], {}),
        ({"workers": -1}, ["--workers", "-1"], {}),
        ({"llm": "gpt"}, ["--llm", "gpt"], {}),
        ({"tools": ["workspace", "shell"]}, ["--tools", "workspace,shell"], {}),
        ({}, [], {"COOP_MAX_TASKS": "lots"}),
        ({"instructions": "/no/such/house.md"}, ["--instructions", "/no/such/house.md"], {}),
    ]

    lines = side_by_side(  # the CLI's lines
        *(
            functools.partial(run_coop, "start", "ok", "--llm", "offline", *f, env={**env, **e})
            for _, f, e in cases
        )
    )
    for (kwargs, _, extra), cli in zip(cases, lines, strict=True):
        line = cli.stderr.strip().removeprefix("coop: error: ")
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(coop.SettingError) as raised:
            coop.start("ok", **{"llm": "offline", **kwargs})
        for name in extra:
            monkeypatch.delenv(name)
        assert isinstance(raised.value, coop.CoopError)
        assert str(raised.value) == line, (kwargs, cli.stderr)
        assert len(cli.stderr.strip().splitlines()) == 1 and cli.returncode == 2, cli.stderr


def test_run_in_a_script_that_called_ray_init_uses_its_cluster(ray_cluster: Cluster) -> None:
    """A user's script connects with a bare `ray.init(address=...)` (Ray's anonymous
    namespace) and then runs an objective: coop keeps that one connection, starts no cluster
    of its own (no GCS or raylet appears under the script) and finds its board again. An
    objective it then only starts is planned to its end before the script exits."""
    script = """
        import psutil, ray
        ray.init(address="{address}")
        import coop
        run = coop.run("{objective}", llm="offline", max_tasks=2, workers=1)
        mine = [p.name() for p in psutil.Process().children(recursive=True)]
        print("GCS", ray.get_runtime_context().gcs_address)
        print("OWN", [n for n in mine if "gcs_server" in n or "raylet" in n])
        print("REASON", run.status().reason.value, bool(run.answer.text))
        print("OPENED", coop.open(run.id).id == run.id)
        started = coop.start("{objective} again", llm="offline", max_tasks=2, workers=1)
        print("STARTED", started.id)  # and the script ends: its exit waits for the objective
    """
    objective = unique("From a driver")
    env = coop_env(None)
    done = python(script.format(address=ray_cluster.address, objective=objective), env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"GCS {ray_cluster.address}" in out and "OWN []" in out, out
    assert "REASON max-tasks True" in out and "OPENED True" in out, out
    started = coop.open(out.split("STARTED ")[1].split()[0]).status()
    assert started.state is State.FINISHED and started.reason is Reason.MAX_TASKS, out
    assert started.answer is not None and started.answer.text and started.completed == 2


def test_open_a_finished_objective_with_no_cluster(ray_cluster: Cluster, tmp_path: Path) -> None:
    """The objective's cluster is out of reach: `coop.open` reads its journal, in a process
    that never connects to Ray; stopping it is refused in one line."""
    objective = unique("Read from the journal")
    run = coop.run(objective, llm="offline", max_tasks=2, workers=1)
    assert run.answer is not None and run.answer.text
    script = f"""
        import coop, ray
        run = coop.open({run.id[:-2]!r})
        snap = run.status()
        print("STATE", snap.state.value, snap.reason.value, len(run.results()))
        print("ANSWER", run.answer.revision, run.answer.text == {run.answer.text!r})
        print("TAPE", sum(1 for _ in run.events()) > 0)
        print("RAY", ray.is_initialized())
        try:
            run.stop()
        except coop.CoopError as exc:
            print("STOP", exc)
    """
    env = coop_env(None, RAY_TMPDIR=str(tmp_path))  # no cluster to be found here
    done = python(script, env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "STATE dormant max-tasks 2" in out or "STATE finished max-tasks 2" in out, out
    assert "ANSWER 1 True" in out and "TAPE True" in out and "RAY False" in out, out
    assert "STOP" in out and "journal" in out.split("STOP", 1)[1], out


def test_setting_env_vars_reach_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """`COOP_*` variables are read for the keyword arguments not given, as for flags."""
    from coop.config import RunSettings, StartSettings
    from coop.declare import resolve

    monkeypatch.setenv("COOP_MAX_TASKS", "7")
    monkeypatch.setenv("COOP_TOOLS", "python workspace")
    values = resolve({"workers": 0}, RunSettings, StartSettings)
    assert values["max_tasks"] == 7 and values["tools"] == ("python", "workspace")
    assert values["workers"] == 0 and values["address"] == os.environ.get("RAY_ADDRESS")
    assert resolve({"max_tasks": 3}, RunSettings)["max_tasks"] == 3


class Step(BaseModel):
    what: str
    weeks: int


class GardenPlan(BaseModel):
    """The typed answer the tests ask for: nested, so its schema has `$defs`."""

    title: str
    steps: list[Step]


def test_a_typed_answer_is_json_of_the_model(
    ray_cluster: Cluster, make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`answer_type=` a pydantic model: the synthesis asks with structured outputs, the answer
    is JSON of the model, `answer_as` returns it typed, and `coop results --final --format
    json` prints the same JSON."""
    server = make_standin()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "stand-in")
    run = coop.run(
        unique("A typed plan"), answer_type=GardenPlan, max_tasks=2, workers=1, model="m"
    )
    plan = run.answer_as(GardenPlan)
    assert isinstance(plan, GardenPlan) and plan.steps and plan.title
    answer = run.answer
    assert answer is not None and not answer.invalid
    assert GardenPlan.model_validate_json(answer.data) == plan
    synthesis = [c for c in server.calls if c.kind == "synthesis"]
    assert len(synthesis) == 1 and synthesis[0].structured
    printed = run_coop("results", run.id, "--final", "--format", "json", env=coop_env(ray_cluster))
    assert printed.returncode == 0, printed.stderr
    assert GardenPlan.model_validate_json(printed.stdout) == plan


def test_an_answer_that_never_matches_is_reported_and_kept(
    ray_cluster: Cluster, make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without structured outputs refuses them: the answer is asked in words,
    misses the schema, is asked once more (shown its error), misses again: kept as written,
    marked so in the status, the report and `answer_as`."""
    wrong = '{"title": "Garden", "steps": [{"what": "dig"}]}'
    server = make_standin(structured=False, scripted={"synthesis": ["Here is the plan!", wrong]})
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "stand-in")
    run = coop.run(
        unique("An untyped plan"), answer_type=GardenPlan, max_tasks=2, workers=1, model="m"
    )
    answer = run.answer
    assert answer is not None and answer.text == wrong and not answer.data
    assert "steps[0]" in answer.invalid and "weeks" in answer.invalid
    synthesis = [c for c in server.calls if c.kind == "synthesis"]
    assert [c.status for c in synthesis] == [400, 200, 200]
    with pytest.raises(AnswerTypeError, match="never matched its schema"):
        run.answer_as(GardenPlan)
    env = coop_env(ray_cluster)
    status = run_coop("status", run.id, env=env)
    assert "does not match its schema" in status.stdout, status.stdout
    assert (
        run.finished is not None and "does not match its schema" in run.finished.report.read_text()
    )
    printed = run_coop("results", run.id, "--final", "--format", "json", env=env)
    assert printed.returncode == 1 and "no JSON answer" in printed.stderr


def test_join_from_python_works_an_objective_planned_elsewhere(ray_cluster: Cluster) -> None:
    """`coop.start(..., workers=0)` only plans; `coop.join` (here from another thread, as a
    second script would) is the worker that completes its tasks. A wrong join setting is the
    CLI's line."""
    with pytest.raises(coop.SettingError, match="Invalid value for '--concurrency'"):
        coop.join("anything", concurrency=0)
    run = coop.start(unique("Planned here, worked there"), llm="offline", max_tasks=2, workers=0)
    reports: list[object] = []
    worker = threading.Thread(target=lambda: reports.append(coop.join(run.id, concurrency=2)))
    worker.start()
    try:
        snap = run.wait(timeout=120)
    finally:
        worker.join(120)
    assert snap.reason is Reason.MAX_TASKS and len(reports) == 1
    report = reports[0]
    assert isinstance(report, WorkerReport) and report.completed == 2 and not report.fatal
    assert {r.worker for r in run.results()} == {report.worker}
