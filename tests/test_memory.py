"""The built-in memory: upsert by task id, fencing by lease token, top-k, isolation."""

from __future__ import annotations

import uuid

import ray

from coop.llm import OfflineLLM
from coop.memory.cluster import ClusterMemory, VectorStore
from coop.simulate import lexical_embedding


def test_upsert_overwrites_and_fences_older_tokens() -> None:
    store = VectorStore()
    v = lexical_embedding("soil")
    assert store.upsert(1, 5, v, "t", "first", "a")
    assert store.upsert(1, 7, v, "t", "retry", "b")
    assert not store.upsert(1, 6, v, "t", "zombie", "c")
    assert store.count() == 1
    assert store.query(v, 3)[0].result == "retry"


def test_query_ranks_by_similarity_and_handles_small_k() -> None:
    store = VectorStore()
    texts = ["tomato soil ph", "tomato watering", "tax law", "soil ph testing kits"]
    for i, t in enumerate(texts):
        store.upsert(i, 1, lexical_embedding(t), t, t, "w")
    hits = store.query(lexical_embedding("soil ph"), 2)
    assert {h.task for h in hits} == {"tomato soil ph", "soil ph testing kits"}
    assert hits[0].score >= hits[1].score
    assert len(store.query(lexical_embedding("x"), 10)) == 4
    assert store.query(lexical_embedding("x"), 0) == []
    assert VectorStore().query(lexical_embedding("x"), 3) == []


def test_growth_keeps_earlier_rows() -> None:
    store = VectorStore()
    for i in range(300):
        store.upsert(i, 1, lexical_embedding(f"word{i}"), f"t{i}", f"r{i}", "w")
    assert store.query(lexical_embedding("word7"), 1)[0].task_id == 7
    assert store.count() == 300


def test_dimension_change_is_a_clear_error() -> None:
    store = VectorStore()
    store.upsert(1, 1, [1.0, 0.0], "t", "r", "w")
    try:
        store.upsert(2, 1, [1.0, 0.0, 0.0], "t", "r", "w")
    except ValueError as exc:
        assert "embedding model" in str(exc)
    else:
        raise AssertionError("a 3-d vector was accepted into a 2-d memory")


def test_cluster_memory_is_shared_and_isolated_per_objective(ray_cluster: object) -> None:
    llm = OfflineLLM()
    a_id, b_id = (f"mem-{uuid.uuid4().hex[:8]}" for _ in range(2))
    writer, reader = ClusterMemory(a_id, llm), ClusterMemory(a_id, llm)
    other = ClusterMemory(b_id, llm)
    assert writer.add(1, "plant seeds", "seeds planted in rows", token=1, worker="w1")
    assert writer.add(1, "plant seeds", "seeds planted again", token=2, worker="w2")
    assert reader.count() == 1
    assert reader.query("planting seeds", 5)[0].result == "seeds planted again"
    assert other.query("planting seeds", 5) == [] and other.count() == 0


def test_cluster_memory_reaches_the_actor_from_another_process(ray_cluster: object) -> None:
    oid = f"mem-{uuid.uuid4().hex[:8]}"
    ClusterMemory(oid, OfflineLLM()).add(3, "water", "watered", token=1, worker="w")

    @ray.remote(num_cpus=0)
    def look(objective: str) -> list[int]:
        return [h.task_id for h in ClusterMemory(objective, OfflineLLM()).query("water", 3)]

    assert ray.get(look.remote(oid)) == [3]
