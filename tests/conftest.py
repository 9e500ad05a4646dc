"""Shared fixtures: one real Ray cluster for the whole run, the HTTP stand-in model server,
the Weaviate stand-in (both from `coop.testing`). Helpers that run the real `coop` command
live in `tests.support`."""

from __future__ import annotations

import logging
import os

# Before anything imports ray: keep every Ray process of the tests on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from coop import constants as C
from coop.sandbox import Isolation, Sandbox
from coop.simulate import Simulator
from coop.testing.cluster import local_cluster
from coop.testing.standin import MakeStandIn, StandIn
from coop.testing.weaviate import WeaviateStandIn
from tests.support import phoenix as phx
from tests.support.procs import STATE_DIR
from tests.support.sandboxes import STRONG, sandbox_of

os.environ["COOP_STATE_DIR"] = str(STATE_DIR)  # never the user's ~/.coop

METRICS = {"metrics_report_interval_ms": 2000}
"""The shared cluster exports metrics every 2 s, not Ray's 10: the metrics test waits for one
export of a finished run's."""


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    """A real two-process Ray cluster on loopback, shared by every test (a start costs ~4 s)."""
    with local_cluster(logging_level=logging.INFO, system_config=METRICS) as cluster:
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}, "not on loopback"
        yield cluster


def _coop_actors() -> set[str]:
    """coop's named actors alive on the connected cluster (none if it is not connected)."""
    if not ray.is_initialized():
        return set()
    named = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in named if a["namespace"] == C.NAMESPACE}


@pytest.fixture(autouse=True)
def _objectives_end_with_their_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Boards and memories are detached actors: on the shared cluster they would outlive their
    test and pile up (a process of ~100 MB each: over 4 GB a third of the way through the
    suite). Those a test made are killed after it; their files stay."""
    if "ray_cluster" not in request.fixturenames:
        yield
        return
    before = _coop_actors()
    yield
    for name in _coop_actors() - before:
        with suppress(ValueError):  # gone meanwhile
            ray.kill(ray.get_actor(name, namespace=C.NAMESPACE), no_restart=True)


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


@pytest.fixture(params=STRONG, ids=lambda level: level.value)
def strong(request: pytest.FixtureRequest) -> Sandbox:
    """Each sandbox level that must contain the code, that this node can run."""
    return sandbox_of(request.param)


@pytest.fixture(params=list(Isolation), ids=lambda level: level.value)
def any_level(request: pytest.FixtureRequest) -> Sandbox:
    """Each sandbox level this node can run."""
    return sandbox_of(request.param)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A dir of the host's open to all, outside /tmp (every sandbox has its own): only the
    sandbox can keep the code out of it."""
    path = Path(tempfile.mkdtemp(prefix="coop-sandbox-test-", dir="/var/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


_BOOTING: list[phx.Boot] = []
"""The Phoenix the trace tests' receiver will be, booting from the session's start on."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Phoenix takes some 15 s to start: when a test that needs it is selected, it starts now
    (at the lowest priority), and is up long before that test runs."""
    path = phx.command()
    if path is not None and any(item.get_closest_marker("receiver") for item in session.items):
        _BOOTING.append(phx.Boot(path, Path(tempfile.mkdtemp(prefix="coop-phoenix-"))))


def pytest_sessionfinish() -> None:
    for boot in _BOOTING:
        boot.stop()
        shutil.rmtree(boot.server.log.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def receiver() -> phx.Phoenix:
    """A real Arize Phoenix on loopback, serving (the one booting since the session began)."""
    (boot,) = _BOOTING
    return boot.ready()
