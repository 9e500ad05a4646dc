"""Ray Jobs: `coop start` as the entrypoint of a job on a multi-node cluster of real raylets
(scripts/local_cluster.py: a head and worker nodes on 127.0.0.1, token authentication on)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from coop.testing import raylets as local_cluster
from coop.testing.cluster import COOP
from coop.testing.raylets import LocalCluster
from coop.text import objective_id
from tests.support.procs import ROOT, side_by_side, wait_for

RAY = Path(sys.executable).with_name("ray")


SCRIPT = [sys.executable, "-m", "scripts.local_cluster"]
SHARED = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
"""The machine-wide file `ray start` writes; the local cluster must never touch it."""


@dataclass(frozen=True)
class Up:
    """A cluster brought up by the command line as documented, and what `up` printed."""

    cluster: LocalCluster
    printed: str


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    """`python -m scripts.local_cluster up --workers 2`: a head and two worker nodes (a start
    costs several seconds), shared by the module's tests; brought down after them by
    `python -m scripts.local_cluster down`, which must leave none of its processes (checked
    here, for whichever of the tests ran). Its dir is short: Ray's socket paths under it must
    fit in 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="coop-lc-"))
    try:
        started = subprocess.run(
            [*SCRIPT, "up", "--workers", "2", "--dir", str(root)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        cluster = LocalCluster.load(root)
        yield Up(cluster, started.stdout)

        down = subprocess.run(
            [*SCRIPT, "down", "--dir", str(root)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert local_cluster.processes(root) == [], "down left processes of the cluster"
        assert not any(pid_alive(pid) for pid in cluster.pids)
        assert not (root / "cluster.json").exists() and not cluster.token_path.exists()
        assert not SHARED.exists() or SHARED.read_text().strip() != cluster.address
    finally:
        local_cluster.down(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(up: Up) -> LocalCluster:
    return up.cluster


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="coop-job-state-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray(
    cluster: LocalCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The real `ray` command, as a user with the cluster's `env` exported would run it."""
    return subprocess.run(
        [str(RAY), *args],
        env=cluster.client_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(
    cluster: LocalCluster, state: Path, objective: str, *flags: str, wait: bool = True
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`ray job submit ... -- coop start <objective> --llm offline <flags>`; the state dir
    reaches the entrypoint through the job's runtime env, with a stop wait as the README
    advises (Ray's default, 3 s after the SIGTERM, is less than a loaded machine may take)."""
    env_vars = {"COOP_STATE_DIR": str(state), "COLUMNS": "200", "RAY_JOB_STOP_WAIT_TIME_S": "60"}
    runtime_env = {"env_vars": env_vars}
    # the coop beside this interpreter: no activated virtualenv needed
    entrypoint = [str(COOP), "start", objective, "--llm", "offline", *flags]
    return submit_job(cluster, runtime_env, entrypoint, wait=wait)


def submit_job(
    cluster: LocalCluster, runtime_env: Mapping[str, object], entrypoint: list[str], wait: bool
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`ray job submit --runtime-env-json ... -- <entrypoint>`, under a fresh submission id."""
    job_id = f"coop-{uuid.uuid4().hex[:8]}"
    proc = ray(
        cluster,
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--submission-id",
        job_id,
        "--runtime-env-json",
        json.dumps(runtime_env),
        *([] if wait else ["--no-wait"]),
        "--",
        *entrypoint,
    )
    return job_id, proc


def jobs_api(cluster: LocalCluster) -> JobSubmissionClient:
    """The Jobs API, with the cluster's token sent explicitly (Ray keeps its auth settings per
    process, and this process may be a driver of the suite's other cluster)."""
    return JobSubmissionClient(
        cluster.dashboard, headers={"Authorization": f"Bearer {cluster.token()}"}
    )


def test_up_starts_real_raylets_on_loopback_and_down_stops_them(up: Up) -> None:
    """The command line as documented: N+1 live nodes, each its own raylet on 127.0.0.1 with
    its own port, nothing listening beyond loopback, `env` for a shell; `down` (run by the
    `up` fixture after the module's tests, and checked there) leaves none of its processes
    and never touches the machine-wide /tmp/ray/ray_current_cluster."""
    cluster, root = up.cluster, up.cluster.root
    assert f"address:   {cluster.address}" in up.printed
    assert f"dashboard: {cluster.dashboard}" in up.printed
    for node in cluster.nodes:
        assert f"{node.node_id}  {node.name}" in up.printed

    nodes = json.loads(ray(cluster, "list", "nodes", "--format", "json").stdout)
    assert sorted(n["node_id"] for n in nodes) == sorted(n.node_id for n in cluster.nodes)
    assert all(n["state"] == "ALIVE" and n["node_ip"] == "127.0.0.1" for n in nodes)
    by_id = {n["node_id"]: n for n in nodes}
    assert by_id[cluster.head.node_id]["is_head_node"]
    for index, worker in enumerate(cluster.workers, start=1):
        assert worker.name == worker.resource == f"coop-node-{index}"
        assert by_id[worker.node_id]["resources_total"][worker.resource] == 1
    raylet_ports = [n.raylet_port for n in cluster.nodes]
    assert len(set(raylet_ports)) == 3, raylet_ports
    raylets = [p for p in local_cluster.processes(root) if local_cluster._is_raylet(p)]
    assert len(raylets) == 3, "one raylet process per node"
    sockets = local_cluster.listening(root)
    assert {port for _, _, port in sockets} >= set(raylet_ports)
    assert {host for _, host, _ in sockets} == {"127.0.0.1"}, sockets

    env = subprocess.run(
        [*SCRIPT, "env", "--dir", str(root)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert f"export RAY_ADDRESS={cluster.address}\n" in env
    assert f"export RAY_AUTH_TOKEN_PATH={cluster.token_path}\n" in env
    assert cluster.token_path.stat().st_mode & 0o777 == 0o600
    assert (root / "ray" / "n0" / "ray_current_cluster").read_text() == cluster.address
    assert not SHARED.exists() or SHARED.read_text().strip() != cluster.address


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_token_auth_is_on(cluster: LocalCluster) -> None:
    """Without the cluster's token the Jobs API and the GCS refuse; with it they answer. The
    token is the cluster's own, not ~/.ray/auth_token."""
    base = cluster.client_env()
    no_token = {k: v for k, v in base.items() if not k.startswith("RAY_AUTH_")}
    jobs = ("job", "list", "--address", cluster.dashboard)
    refused, wrong, gcs, right = side_by_side(
        functools.partial(ray, cluster, *jobs, env=no_token),
        functools.partial(ray, cluster, *jobs, env={**base, "RAY_AUTH_TOKEN": "x"}),
        functools.partial(ray, cluster, "status", "--address", cluster.address, env=no_token),
        functools.partial(ray, cluster, *jobs),
    )
    assert refused.returncode != 0 and "Missing authentication token" in refused.stderr
    assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stderr
    assert gcs.returncode != 0 and "uthenticat" in gcs.stdout + gcs.stderr
    assert right.returncode == 0
    home_token = Path.home() / ".ray" / "auth_token"
    assert not home_token.exists() or home_token.read_text().strip() != cluster.token()


def test_coop_start_runs_as_a_ray_job(cluster: LocalCluster, state_dir: Path) -> None:
    """`ray job submit -- coop start ...` succeeds: the entrypoint attaches to this cluster
    (the address the job supervisor gives it, with the token the cluster's processes have),
    runs the objective to its end and its output is in the job's logs."""
    objective = f"Write a short guide to growing tomatoes [{uuid.uuid4().hex[:6]}]"
    oid = objective_id(objective)
    job_id, proc = submit(cluster, state_dir, objective, "--workers", "2", "--max-tasks", "25")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Job '{job_id}' succeeded" in proc.stdout + proc.stderr

    jobs, logs, actors, every = side_by_side(  # the run is over: what Ray shows of it
        functools.partial(ray, cluster, "job", "list", "--address", cluster.dashboard),
        functools.partial(ray, cluster, "job", "logs", "--address", cluster.dashboard, job_id),
        functools.partial(
            ray, cluster, "list", "actors", "--format", "json", "--filter", f"name=coop:{oid}:board"
        ),
        functools.partial(
            ray, cluster, "list", "actors", "--format", "json", "--detail", "--limit", "1000"
        ),
    )
    assert jobs.returncode == 0, jobs.stderr
    assert f"submission_id='{job_id}'" in jobs.stdout
    assert "status=<JobStatus.SUCCEEDED: 'SUCCEEDED'>" in jobs.stdout

    assert logs.returncode == 0, logs.stderr
    report = state_dir / "reports" / f"{oid}.md"
    assert f"Ray cluster {cluster.address};" in logs.stdout  # attached, not a new cluster
    assert "finished (done)" in logs.stdout
    assert f"report: {report}" in logs.stdout
    assert report.is_file() and (state_dir / "journal" / f"{oid}.db").is_file()

    api = jobs_api(cluster)
    assert api.get_job_status(job_id) == JobStatus.SUCCEEDED
    info = next(job for job in api.list_jobs() if job.submission_id == job_id)
    assert info.entrypoint.startswith(f"{COOP} start ") and "--llm offline" in info.entrypoint
    assert info.driver_node_id == cluster.head.node_id  # the supervisor runs on the head
    assert info.driver_exit_code == 0
    assert "finished (done)" in api.get_job_logs(job_id)

    boards = json.loads(actors.stdout)
    assert [b["node_id"] for b in boards] == [cluster.head.node_id], actors.stderr

    # the dashboard's Actors view: every coop actor of the run by its readable name and repr,
    # the two workers included (dead now: they ended with the run)
    mine = {a["name"]: a for a in json.loads(every.stdout) if a["name"].startswith(f"coop:{oid}:")}
    workers = sorted(n for n in mine if n.startswith(f"coop:{oid}:worker:"))
    assert {f"coop:{oid}:board", f"coop:{oid}:memory"} <= set(mine) and len(workers) == 2
    assert all(mine[n]["repr_name"] == n.split(":worker:")[-1] for n in workers)
    assert mine[f"coop:{oid}:board"]["repr_name"] == f"coop:{oid}:board"


def test_a_run_ended_by_a_cap_is_a_failed_job(cluster: LocalCluster, state_dir: Path) -> None:
    """coop exits non-zero when a budget ends the run (`max-tasks` is 3), and Ray reports
    the job FAILED with that exit code: a failed run cannot pass for a successful job."""
    objective = f"Write a short guide to growing tomatoes [{uuid.uuid4().hex[:6]}]"
    job_id, proc = submit(cluster, state_dir, objective, "--workers", "1", "--max-tasks", "1")
    assert proc.returncode != 0
    info = jobs_api(cluster).get_job_info(job_id)
    assert info.status == JobStatus.FAILED
    assert info.driver_exit_code == 3 and "exit code 3" in (info.message or "")
    assert "finished (max-tasks)" in jobs_api(cluster).get_job_logs(job_id)


def test_ray_job_stop_stops_the_run_cleanly(cluster: LocalCluster, state_dir: Path) -> None:
    """`ray job stop` sends SIGTERM to the entrypoint: coop ends the run as stopped by the
    user, writes its report, and the job is STOPPED."""
    objective = f"Plan a community garden [{uuid.uuid4().hex[:6]}]"
    oid = objective_id(objective)
    # --approve without a terminal: the run waits for `coop approve` after its first plan
    job_id, proc = submit(cluster, state_dir, objective, "--workers", "1", "--approve", wait=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = jobs_api(cluster)
    wait_for(lambda: "planned 1 result(s)" in api.get_job_logs(job_id), 90, "the first plan")
    stop = ray(cluster, "job", "stop", "--address", cluster.dashboard, job_id)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert api.get_job_status(job_id) == JobStatus.STOPPED
    logs = api.get_job_logs(job_id)
    assert "finished (stopped by user)" in logs
    assert f"report: {state_dir / 'reports' / f'{oid}.md'}" in logs


def test_a_python_script_using_the_api_runs_as_a_ray_job(
    cluster: LocalCluster, state_dir: Path
) -> None:
    """`ray job submit -- python script.py`, the script a user's driver: `coop.run` attaches to
    the job's cluster (the address and token the supervisor gives it, no cluster of its own),
    runs the objective to its end, and the script reads the answer and its typed status."""
    objective = f"Draft a seed swap flyer [{uuid.uuid4().hex[:6]}]"
    script = state_dir / "driver.py"
    script.write_text(
        "import coop, ray\n"
        f"run = coop.run({objective!r}, llm='offline', max_tasks=2, workers=1)\n"
        "print('GCS', ray.get_runtime_context().gcs_address)\n"
        "print('ENDED', run.status().reason.value, run.answer.revision, bool(run.answer.text))\n"
    )
    runtime_env = {"env_vars": {"COOP_STATE_DIR": str(state_dir), "PYTHONPATH": str(ROOT)}}
    job_id, proc = submit_job(cluster, runtime_env, [sys.executable, str(script)], wait=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and f"Job '{job_id}' succeeded" in out, out[-3000:]
    logs = jobs_api(cluster).get_job_logs(job_id)
    assert f"GCS {cluster.address}" in logs and "ENDED max-tasks 1 True" in logs, logs[-3000:]
    assert (state_dir / "reports" / f"{objective_id(objective)}.md").is_file()
