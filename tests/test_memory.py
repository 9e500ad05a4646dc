"""The memory contract, run over every backend: upsert by task id, fencing by lease token,
top-k, isolation between objectives, delete. Then what is particular to the built-in store."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray

from coop.config import RunSettings
from coop.journal import state_dir
from coop.llm import OfflineLLM
from coop.memory import Memory, open_memory
from coop.memory.cluster import ClusterMemory, VectorStore
from coop.memory.weaviate import close_all
from coop.simulate import lexical_embedding
from coop.testing.weaviate import WeaviateStandIn, weaviate_env

MakeMemory = Callable[[str], Memory]
LIVE_URL = os.environ.get("WEAVIATE_URL")


@pytest.fixture(params=["cluster", "weaviate-standin", "weaviate-live"])
def make_memory(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeMemory]:
    """Memories of fresh objectives on one backend."""
    backend = request.param
    if backend == "cluster":
        request.getfixturevalue("ray_cluster")
        settings = RunSettings()
    elif backend == "weaviate-standin":
        server: WeaviateStandIn = request.getfixturevalue("weaviate_standin")
        for name, value in weaviate_env(server).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("WEAVIATE_API_KEY", raising=False)
        settings = RunSettings(memory="weaviate", weaviate_collection="CoopContract")
    else:
        if not LIVE_URL:
            pytest.skip("WEAVIATE_URL is not set: no live Weaviate server to test against")
        settings = RunSettings(memory="weaviate", weaviate_collection="CoopContractLive")
    made: list[Memory] = []

    def make(oid: str) -> Memory:
        memory = open_memory(settings, oid, OfflineLLM(), state_dir())
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.drop()
    close_all()


def fresh() -> str:
    return f"mem-{uuid.uuid4().hex[:8]}"


def test_upsert_by_task_id_overwrites(make_memory: MakeMemory) -> None:
    memory = make_memory(fresh())
    assert memory.add(1, "plant seeds", "seeds planted in rows", token=1, worker="w1")
    assert memory.add(1, "plant seeds", "seeds planted again", token=2, worker="w2")
    assert memory.count() == 1
    assert memory.query("planting seeds", 5)[0].result == "seeds planted again"


def test_a_write_under_an_older_lease_token_is_refused(make_memory: MakeMemory) -> None:
    memory = make_memory(fresh())
    assert memory.add(4, "water", "watered at dawn", token=7, worker="new")
    assert not memory.add(4, "water", "zombie write", token=6, worker="zombie")
    assert [h.result for h in memory.query("water", 3)] == ["watered at dawn"]


def test_query_returns_the_k_nearest_best_first(make_memory: MakeMemory) -> None:
    memory = make_memory(fresh())
    texts = ["tomato soil ph", "tomato watering", "tax law", "soil ph testing kits"]
    for i, text in enumerate(texts):
        assert memory.add(i, text, text, token=1, worker="w")
    hits = memory.query("soil ph", 2)
    assert {h.task for h in hits} == {"tomato soil ph", "soil ph testing kits"}
    assert hits[0].score >= hits[1].score
    assert len(memory.query("x", 10)) == 4
    assert memory.query("x", 0) == []


def test_objectives_do_not_see_each_other(make_memory: MakeMemory) -> None:
    a, b = fresh(), fresh()
    writer, reader, other = make_memory(a), make_memory(a), make_memory(b)
    assert writer.add(1, "plant seeds", "seeds planted", token=1, worker="w")
    assert reader.count() == 1 and reader.query("seeds", 3)[0].task_id == 1
    assert other.count() == 0 and other.query("seeds", 3) == []


def test_drop_removes_one_objective_only(make_memory: MakeMemory) -> None:
    a, b = fresh(), fresh()
    gone, kept = make_memory(a), make_memory(b)
    gone.add(1, "dig", "dug", token=1, worker="w")
    kept.add(1, "dig", "dug too", token=1, worker="w")
    gone.drop()
    assert make_memory(a).count() == 0
    assert kept.count() == 1


def test_concurrent_writers_lose_nothing(make_memory: MakeMemory) -> None:
    memory = make_memory(fresh())
    stored: list[bool] = []

    def write(i: int) -> None:
        stored.append(memory.add(i, f"task {i}", f"result {i}", token=1, worker="w"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stored == [True] * 12 and memory.count() == 12


# -- the built-in store ---------------------------------------------------------------------


def test_store_growth_keeps_earlier_rows() -> None:
    store = VectorStore()
    for i in range(300):
        store.upsert(i, 1, lexical_embedding(f"word{i}"), f"t{i}", f"r{i}", "w")
    assert store.query(lexical_embedding("word7"), 1)[0].task_id == 7
    assert store.count() == 300


def test_store_dimension_change_is_a_clear_error() -> None:
    store = VectorStore()
    store.upsert(1, 1, [1.0, 0.0], "t", "r", "w")
    with pytest.raises(ValueError, match="embedding model"):
        store.upsert(2, 1, [1.0, 0.0, 0.0], "t", "r", "w")


def test_store_persists_and_drop_removes_its_file(ray_cluster: object, tmp_path: Path) -> None:
    oid = fresh()
    memory = ClusterMemory(oid, OfflineLLM(), str(state_dir(str(tmp_path))))
    memory.add(2, "mulch", "mulched", token=1, worker="w")
    path = tmp_path / "memory" / f"{oid}.db"
    assert path.exists() and VectorStore(str(path)).count() == 1
    memory.drop()
    assert not path.exists()


def test_cluster_memory_reaches_the_actor_from_another_process(ray_cluster: object) -> None:
    oid = fresh()
    ClusterMemory(oid, OfflineLLM()).add(3, "water", "watered", token=1, worker="w")

    @ray.remote(num_cpus=0)
    def look(objective: str) -> list[int]:
        return [h.task_id for h in ClusterMemory(objective, OfflineLLM()).query("water", 3)]

    assert ray.get(look.remote(oid)) == [3]
