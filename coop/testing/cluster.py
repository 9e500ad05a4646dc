"""A private Ray cluster on loopback (one per test session, or per script run), and `coop`
processes pointed at it, a stand-in model and a state dir."""

from __future__ import annotations

import logging
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from coop import constants as C
from coop.testing.standin import StandIn

COOP = Path(sys.executable).with_name("coop")
"""The `coop` beside the running interpreter: no activated virtualenv needed."""


@contextmanager
def local_cluster(
    cpus: int = 2, logging_level: int = logging.ERROR, system_config: dict[str, Any] | None = None
) -> Iterator[Cluster]:
    """A Ray cluster of our own on 127.0.0.1, this process connected to it; `system_config`:
    Ray's internal settings for it (`_system_config`)."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus,
            "include_dashboard": False,
            # a port of its own for its dashboard agent, not Ray's fixed default (52365): any
            # other Ray started on this machine meanwhile (a script's, `coop start`'s own, a
            # test's) would wait ~3 s for it, its agent retrying the bind before it registers
            "dashboard_agent_listen_port": 0,
            "_system_config": system_config or {},
        },
    )
    ray.init(address=cluster.address, namespace=C.NAMESPACE, logging_level=logging_level)
    addresses = {node["NodeManagerAddress"] for node in ray.nodes()}  # type: ignore[no-untyped-call]
    if addresses != {"127.0.0.1"}:  # ray was imported before the loopback setting took hold
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
        raise SystemExit(f"refusing to run: the Ray cluster is not on loopback ({addresses})")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


class Coop:
    """Runs `coop` commands against one cluster, one stand-in and one state dir."""

    def __init__(self, address: str, server: StandIn, state: Path, logs: Path) -> None:
        self.env = {
            **os.environ,
            **C.LOOPBACK_ENV,
            "RAY_ADDRESS": address,
            "COOP_STATE_DIR": str(state),
            "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "stand-in",
            "PYTHONUNBUFFERED": "1",
        }
        self.logs = logs
        self.spawned = 0
        self.command = [str(COOP)]  # another version of coop, for a before/after benchmark
        self.cwd: Path | None = None  # where its processes start

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self.spawned += 1
        with (self.logs / f"{self.spawned:03d}-{args[0]}.log").open("wb") as log:
            return subprocess.Popen(  # the child keeps its own copy of the file
                [*self.command, *args],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop_all(self, procs: list[subprocess.Popen[bytes]], grace: float = 60) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
