"""Shared fixtures: one real Ray cluster for the whole run, the HTTP stand-in model server,
and helpers that run the real `coop` console script as subprocesses."""

from __future__ import annotations

import os

# Before anything imports ray: keep every Ray process of the tests on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from standin import StandIn  # noqa: E402
from weaviate_standin import WeaviateStandIn  # noqa: E402

from coop import constants as C  # noqa: E402
from coop.simulate import Simulator  # noqa: E402

COOP = Path(sys.executable).with_name("coop")
SECRET = "sk-test-DO-NOT-LEAK-4f9a2c71e0"
STATE_DIR = Path(tempfile.mkdtemp(prefix="coop-test-state-"))
os.environ["COOP_STATE_DIR"] = str(STATE_DIR)  # never the user's ~/.coop


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    """A real two-process Ray cluster on loopback, shared by every test (a start costs ~4 s)."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    ray.init(address=cluster.address, namespace=C.NAMESPACE)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}, "not on loopback"
    yield cluster
    ray.shutdown()
    cluster.shutdown()


MakeStandIn = Callable[..., StandIn]


@pytest.fixture
def make_standin() -> Iterator[MakeStandIn]:
    """Stand-in model servers made to measure for a test, all stopped after it."""
    servers: list[StandIn] = []

    def make(**options: Any) -> StandIn:
        server = StandIn(**options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def standin(make_standin: MakeStandIn) -> StandIn:
    return make_standin(simulator=Simulator(fanout=3, limit=12))


@pytest.fixture(scope="module")
def weaviate_standin() -> Iterator[WeaviateStandIn]:
    """A Weaviate stand-in (REST + gRPC on loopback) for the module's tests."""
    server = WeaviateStandIn()
    server.start()
    yield server
    server.stop()


def weaviate_env(server: WeaviateStandIn) -> dict[str, str]:
    """How a coop process finds the stand-in: as it would find a self-hosted Weaviate."""
    return {"WEAVIATE_URL": server.url, "WEAVIATE_GRPC_PORT": str(server.grpc_port)}


def unique(text: str) -> str:
    """An objective no other test uses: boards are detached and outlive a test."""
    return f"{text} [{uuid.uuid4().hex[:6]}]"


def coop_env(
    cluster: Cluster | None, standin: StandIn | None = None, **extra: str
) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COOP_", "RAY_ADDRESS"))
    }
    env.update(C.LOOPBACK_ENV, PYTHONUNBUFFERED="1", COLUMNS="200", COOP_STATE_DIR=str(STATE_DIR))
    if cluster is not None:
        env["RAY_ADDRESS"] = cluster.address
    if standin is not None:
        env.update(OPENAI_BASE_URL=standin.base_url, OPENAI_API_KEY=SECRET)
    env.update(extra)
    return env


def run_coop(
    *args: str,
    env: dict[str, str],
    timeout: float = 120,
    cwd: Path | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COOP), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def spawn_coop(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(
        [str(COOP), *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True
    )


def spawn_start(
    objective: str, *flags: str, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[str], str]:
    """`coop start` in the background, returned once its board exists (or it has exited)."""
    from coop import registry
    from coop.text import objective_id

    proc = spawn_coop("start", objective, *flags, env=env, log=log)
    oid = objective_id(objective)
    wait_for(lambda: oid in registry.board_ids() or proc.poll() is not None, 60, "the board")
    return proc, oid


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


JOINED = re.compile(r"joined \S+ as (\S+)")


def worker_name(log: Path, timeout: float = 60) -> str:
    """The name of the worker a `coop join` process started (it says so in its log)."""

    def named() -> str | None:
        found = JOINED.search(log.read_text()) if log.exists() else None
        return found.group(1) if found else None

    name: str = wait_for(named, timeout, f"the worker of {log.name}")
    return name
