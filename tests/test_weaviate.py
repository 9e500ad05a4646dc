"""The Weaviate backend with the real weaviate-client, against the loopback stand-in (no
Weaviate server can run here): ids, batching, every failure mode, and `coop start --memory
weaviate` / `coop delete` end to end. The shared contract is in test_memory.py."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from coop import registry
from coop.config import RunSettings
from coop.journal import journal_path, state_dir
from coop.llm import Embeddings, OfflineLLM
from coop.memory import weaviate as weaviate_memory
from coop.memory.weaviate import WeaviateError, WeaviateMemory, close_all, result_uuid
from coop.testing.weaviate import WeaviateStandIn, weaviate_env
from coop.text import objective_id
from tests.support.procs import SECRET, STATE_DIR, assert_one_line_error, coop_env, run_coop, unique

WEAVIATE_KEY = "wv-key-DO-NOT-LEAK-91c3e7"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean Weaviate environment for one test, and no client left open after it."""
    for name in ("WEAVIATE_URL", "WEAVIATE_API_KEY", "WEAVIATE_GRPC_HOST", "WEAVIATE_GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    close_all()


def point_at(env: pytest.MonkeyPatch, server: WeaviateStandIn) -> None:
    for name, value in weaviate_env(server).items():
        env.setenv(name, value)


def memory(oid: str, collection: str = "CoopResult", mode: str = "weaviate") -> WeaviateMemory:
    settings = RunSettings(memory=mode, weaviate_collection=collection)
    return WeaviateMemory(oid, OfflineLLM(), settings, state_dir())


class TwoDimensions(OfflineLLM):
    """An embedding model other than the one the objective's results were stored with."""

    def embed(self, texts: list[str]) -> Embeddings:
        return Embeddings([[1.0, 0.0] for _ in texts], len(texts))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_results_live_in_the_objectives_tenant_under_uuid5_ids(
    env: pytest.MonkeyPatch, weaviate_standin: WeaviateStandIn
) -> None:
    point_at(env, weaviate_standin)
    oid = f"w-{uuid.uuid4().hex[:8]}"
    mem = memory(oid, "CoopIds")
    assert mem.add(3, "dig", "dug a bed", token=1, worker="host:0")
    assert mem.add(3, "dig", "dug it deeper", token=2, worker="host:1")
    stored = weaviate_standin.objects("CoopIds", oid)
    assert list(stored) == [str(result_uuid(oid, 3))]
    props = stored[str(result_uuid(oid, 3))]["properties"]
    assert props["task_id"] == 3 and props["result"] == "dug it deeper"
    assert props["worker"] == "host:1" and props["lease_token"] == 2 and props["tokens"] > 0
    assert "created" in props and len(stored[str(result_uuid(oid, 3))]["vector"]) > 0
    assert result_uuid(oid, 3) == result_uuid(oid, 3) != result_uuid(oid, 4)


def test_results_arriving_together_go_in_one_batch(env: pytest.MonkeyPatch) -> None:
    # the first writer waits for the others longer than coop's 20 ms: eight threads released
    # together may be scheduled further apart than that on a loaded machine
    env.setattr(weaviate_memory, "BATCH_LINGER", 0.5)
    server = WeaviateStandIn()
    server.start()
    try:
        point_at(env, server)
        mem = memory("batch-1")
        mem.add(0, "warm up", "connected", token=1, worker="w")  # connect, create, tenant
        before = server.calls.count("gRPC BatchObjects")
        start = threading.Barrier(8)

        def write(i: int) -> None:
            start.wait()
            assert mem.add(i + 1, f"task {i}", f"result {i}", token=1, worker="w")

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batches = server.calls.count("gRPC BatchObjects") - before
        assert mem.count() == 9 and 1 <= batches <= 2, batches
    finally:
        server.stop()


def test_a_vector_of_another_size_is_refused_with_weaviates_reason(
    env: pytest.MonkeyPatch, weaviate_standin: WeaviateStandIn
) -> None:
    point_at(env, weaviate_standin)
    oid = f"w-{uuid.uuid4().hex[:8]}"
    memory(oid, "CoopDims").add(1, "a", "b", token=1, worker="w")
    settings = RunSettings(memory="weaviate", weaviate_collection="CoopDims")
    other = WeaviateMemory(oid, TwoDimensions(), settings, state_dir())
    with pytest.raises(WeaviateError, match="vector with length 2"):
        other.add(2, "c", "d", token=1, worker="w")


@pytest.mark.parametrize(
    "server, key, needles",
    [
        ("down", "", ["cannot reach Weaviate", "http://127.0.0.1:{http}", "gRPC 127.0.0.1:{grpc}"]),
        ("no-grpc", "", ["not over gRPC", "127.0.0.1:{grpc}", "http://127.0.0.1:{http}"]),
        ("keyed", "wrong-key", ["refused coop (401)", "check WEAVIATE_API_KEY"]),
        ("keyed", "", ["refused coop (401)", "set WEAVIATE_API_KEY"]),
        ("old", "", ["1.20.0 is not supported", "http://127.0.0.1:{http}"]),
    ],
)
def test_connection_failures_are_one_clear_line(
    env: pytest.MonkeyPatch, server: str, key: str, needles: list[str]
) -> None:
    stand_in = WeaviateStandIn(
        api_key="right-key" if server == "keyed" else None,
        grpc=server != "no-grpc",
        version="1.20.0" if server == "old" else WeaviateStandIn.version,
    )
    stand_in.start()
    if server == "down":
        stand_in.stop()
    try:
        point_at(env, stand_in)
        if key:
            env.setenv("WEAVIATE_API_KEY", key)
        with pytest.raises(WeaviateError) as caught:
            memory("fails-1").count()
    finally:
        stand_in.stop()
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle.format(http=stand_in.http_port, grpc=stand_in.grpc_port) in message, message
    assert "right-key" not in message and "wrong-key" not in message


@pytest.mark.parametrize(
    "url, grpc_port, needle",
    [
        (None, None, "needs WEAVIATE_URL"),
        ("http://127.0.0.1:80x", None, "bad WEAVIATE_URL"),
        ("http://127.0.0.1:8080", "fifty", "WEAVIATE_GRPC_PORT must be a port number"),
    ],
)
def test_missing_or_bad_address(
    env: pytest.MonkeyPatch, url: str | None, grpc_port: str | None, needle: str
) -> None:
    if url:
        env.setenv("WEAVIATE_URL", url)
    if grpc_port:
        env.setenv("WEAVIATE_GRPC_PORT", grpc_port)
    with pytest.raises(WeaviateError, match=needle):
        memory("fails-2").count()


def test_embedded_weaviate_without_network_says_so(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("XDG_CACHE_HOME", str(tmp_path))  # no binary cached: it must be downloaded
    mem = WeaviateMemory(
        "emb-1", OfflineLLM(), RunSettings(memory="weaviate-embedded"), state_dir(str(tmp_path))
    )
    with pytest.raises(WeaviateError, match="could not download its server binary") as caught:
        mem.count()
    assert "WEAVIATE_URL" in str(caught.value)


def test_start_with_weaviate_memory_end_to_end_then_delete(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    server = WeaviateStandIn(api_key=WEAVIATE_KEY)
    server.start()
    try:
        objective = unique("Map the allotment's shade")
        oid = objective_id(objective)
        env = coop_env(ray_cluster, **weaviate_env(server), WEAVIATE_API_KEY=WEAVIATE_KEY)
        flags = ("--llm", "offline", "--memory", "weaviate", "--workers", "2")
        done = run_coop("start", objective, *flags, "--max-tasks", "8", env=env, timeout=300)
        assert done.returncode == 3, done.stderr  # stopped by --max-tasks
        stored = server.objects("CoopResult", oid)
        assert len(stored) == 8  # one object per completed task, none duplicated
        workers = {o["properties"]["worker"] for o in stored.values()}
        assert workers <= {f"{socket.gethostname()}:{i}" for i in range(4)} and workers
        every = (
            done.stdout
            + done.stderr
            + journal_path(state_dir(), oid).read_bytes().decode(errors="replace")
        )
        assert WEAVIATE_KEY not in every and SECRET not in every

        kept = run_coop("delete", oid, env=env, input_text="n\n")
        assert kept.returncode == 1 and "nothing deleted" in kept.stdout
        assert len(server.objects("CoopResult", oid)) == 8
        gone = run_coop("delete", oid, "--yes", env=env)
        assert gone.returncode == 0, gone.stderr
        assert f"Weaviate tenant {oid}" in gone.stdout and "journal" in gone.stdout
        assert server.objects("CoopResult", oid) == {}
        assert not journal_path(state_dir(), oid).exists()
        assert oid not in run_coop("list", env=env).stdout
    finally:
        server.stop()


def test_start_refuses_to_begin_when_weaviate_is_unreachable(ray_cluster: Cluster) -> None:
    objective = unique("Count the worms")
    port = free_port()
    env = coop_env(ray_cluster, WEAVIATE_URL=f"http://127.0.0.1:{port}")
    proc = run_coop("start", objective, "--llm", "offline", "--memory", "weaviate", env=env)
    assert_one_line_error(proc, "cannot reach Weaviate", f"127.0.0.1:{port}")
    assert not journal_path(state_dir(), objective_id(objective)).exists()


def test_join_checks_the_objectives_weaviate_before_starting_a_worker(
    ray_cluster: Cluster,
) -> None:
    """A worker node finds Weaviate through the objective's settings (its own WEAVIATE_URL
    would win); when that does not answer, `coop join` says so in one line."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings = RunSettings(llm="offline", memory="weaviate", weaviate_url=dead).validate()
    oid = registry.create_board(unique("Sift the compost"), settings, STATE_DIR).objective_id
    proc = run_coop("join", oid, env=coop_env(ray_cluster))
    assert_one_line_error(proc, "cannot reach Weaviate", dead)
