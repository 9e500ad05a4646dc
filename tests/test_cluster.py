"""Connecting to Ray: loopback detection, fast failures, and the cluster-launcher config."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from coop import cluster
from coop.testing.standin import StandIn
from coop.text import objective_id
from coop.types import Reason
from tests.support.procs import (
    assert_one_line_error,
    coop_env,
    run_coop,
    spawn_coop,
    unique,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1:6379", True),
        ("localhost:6379", True),
        ("ray://127.0.0.2:10001", True),
        ("10.0.0.5:6379", False),
        ("no-such-host.invalid:6379", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert cluster._is_loopback(address) is loopback


def test_unreachable_address_fails_in_seconds() -> None:
    began = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"cannot reach Ray at 127\.0\.0\.1:1"):
        cluster._check_reachable("127.0.0.1:1")
    assert time.monotonic() - began < cluster.CONNECT_TIMEOUT + 1


def test_cluster_yaml_passes_rays_validator() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # token to nodes
    assert ". ./.env" in head and ". ./.env" in workers  # keys from the operator's .env
    settings = "\n".join(
        line.split("#", 1)[0] for line in (ROOT / "cluster.yaml").read_text().splitlines()
    )
    for secret in ("OPENAI_API_KEY", "WEAVIATE_API_KEY", "sk-"):
        assert secret not in settings


def _descendants(root: int) -> set[int]:
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            own, rest = stat.read_text().split(" (", 1)
            ppid = int(rest.rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, set()).add(int(own))
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, set()) - found
    return found


def _listening(pids: set[int]) -> dict[str, int]:
    """Addresses the given processes listen on (TCP), from `ss`: address -> pid."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {
        line.split()[3]: pid for line in out.splitlines() for pid in pids if f"pid={pid}," in line
    }


LISTENERS = (
    "/gcs/gcs_server",
    "/raylet/raylet",
    "dashboard/dashboard.py",
    "ray::DashboardAgent",
    "ray::RuntimeEnvAgent",
    "ray::Board",
    "ray::VectorStore",
    "ray::WorkerActor",
)
"""The processes of a local cluster running an objective, by their command lines (a Ray
worker's is its title): each of them listens."""


def _kinds(listening: dict[str, int]) -> set[str]:
    """Which of LISTENERS the listening processes are."""
    lines = set()
    for pid in set(listening.values()):
        with suppress(OSError):
            lines.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return {kind for kind in LISTENERS if any(kind in line for line in lines)}


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` to list listening sockets")
def test_local_mode_listens_on_loopback_only(standin: StandIn, tmp_path: Path) -> None:
    """`coop start` with no cluster starts its own: GCS, raylet, dashboard, agents and workers
    must all listen on 127.0.0.1, never on 0.0.0.0 or the machine's own address."""
    standin.latency = 0.5
    ray_tmp = tempfile.mkdtemp(prefix="coop-")  # short: Ray's socket paths must fit 107 bytes
    env = coop_env(None, standin, RAY_TMPDIR=ray_tmp)  # no cluster to find here
    proc = spawn_coop("start", unique("Listen locally"), env=env, log=tmp_path / "start.log")
    try:
        every = set(LISTENERS)
        wait_for(lambda: _kinds(_listening(_descendants(proc.pid))) == every, 90, "every process")
        addresses = list(_listening(_descendants(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    hosts = {a.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:") for a in addresses}
    assert hosts == {"127.0.0.1"}, addresses


def test_a_ray_temp_dir_too_long_for_sockets_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    proc = run_coop("start", "ok", "--llm", "offline", env=coop_env(None, RAY_TMPDIR=str(deep)))
    assert_one_line_error(proc, "cannot connect to Ray", "107 bytes")


def test_commands_in_another_terminal_find_the_cluster_coop_start_made(tmp_path: Path) -> None:
    """The README's first demo starts a private cluster that ends with the run: `coop status`,
    `approve` and `stop` in another terminal find it by themselves, with no --address."""
    ray_tmp = tempfile.mkdtemp(prefix="coop-")  # short: Ray's socket paths must fit 107 bytes
    state = tmp_path / "state"
    env = coop_env(None, RAY_TMPDIR=ray_tmp, COOP_STATE_DIR=str(state))  # no cluster to find
    objective = unique("Wait for a person")
    oid = objective_id(objective)
    start = spawn_coop(
        "start", objective, "--llm", "offline", "--approve", env=env, log=tmp_path / "start.log"
    )
    try:
        wait_for(lambda: "add workers with" in (tmp_path / "start.log").read_text(), 90, "start")
        wait_for(lambda: (state / cluster.ANNOUNCED).exists(), 30, "the announcement")
        shown = run_coop("status", oid, env=env)
        assert shown.returncode == 0 and "reading its journal" not in shown.stderr
        assert f"planner: {socket.gethostname()}-{start.pid}" in shown.stdout  # live, not a replay
        approved = run_coop("approve", oid, "--all", env=env)
        assert approved.returncode == 0 and f"{oid}: " in approved.stdout
        assert run_coop("stop", oid, env=env).returncode == 0
        assert start.wait(120) == Reason.STOPPED.exit_code
        assert not (state / cluster.ANNOUNCED).exists()  # withdrawn with its cluster
        after = run_coop("status", oid, env=env)  # the cluster is gone: the journal, said so
        assert after.returncode == 0 and "reading its journal" in after.stderr
        assert "stopping" not in after.stdout and "finished (stopped by user)" in after.stdout
    finally:
        if start.poll() is None:
            start.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
