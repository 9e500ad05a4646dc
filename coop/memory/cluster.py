"""The built-in memory: a detached Ray actor per objective holding vectors in numpy.

Any worker on any node reaches it by name, unlike BabyAGI's per-directory Chroma store.
Exact cosine search over a contiguous matrix is simple and fast enough for the result counts
one objective produces (see scripts/bench.py); Weaviate takes over past that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from coop import cluster
from coop.llm import LLM
from coop.memory import Hit

EMBED_INPUT_TOKENS = 6000
"""Embedding models take about 8k tokens; keep well inside."""


@dataclass
class _Record:
    task_id: int
    task: str
    result: str
    worker: str
    token: int


class VectorStore:
    """Actor state. Rows are written in place on upsert, so ids never duplicate."""

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}  # task id -> row
        self._records: list[_Record] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def upsert(self, task_id: int, token: int, vector: list[float], task: str, result: str,
               worker: str) -> bool:
        vec = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(vec))
        if norm:
            vec = vec / norm
        if self._records and vec.shape[0] != self._matrix.shape[1]:
            raise ValueError(f"memory holds {self._matrix.shape[1]}-dimensional vectors, got "
                             f"{vec.shape[0]}: was the embedding model changed mid-run?")
        record = _Record(task_id, task, result, worker, token)
        row = self._rows.get(task_id)
        if row is not None:
            if token < self._records[row].token:
                return False
            self._records[row] = record
        else:
            row = len(self._records)
            self._rows[task_id] = row
            self._records.append(record)
            self._grow(row + 1, vec.shape[0])
        self._matrix[row] = vec
        return True

    def _grow(self, rows: int, dim: int) -> None:
        if self._matrix.shape[0] >= rows:
            return
        bigger = np.zeros((max(rows, 2 * self._matrix.shape[0], 64), dim), dtype=np.float32)
        if self._matrix.size:
            bigger[: self._matrix.shape[0]] = self._matrix
        self._matrix = bigger

    def query(self, vector: list[float], k: int) -> list[Hit]:
        n = len(self._records)
        if not n or k <= 0:
            return []
        scores = self._matrix[:n] @ np.asarray(vector, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(self._records[i].task_id, self._records[i].task, self._records[i].result,
                    float(scores[i])) for i in top]

    def count(self) -> int:
        return len(self._records)

    def task_ids(self) -> list[int]:
        return [r.task_id for r in self._records]


class ClusterMemory:
    """Client side of the built-in memory: embeds locally, stores and searches in the actor."""

    def __init__(self, objective_id: str, llm: LLM) -> None:
        self._store: Any = cluster.named_actor(VectorStore, objective_id, "memory")
        self._llm = llm

    def _embed(self, text: str) -> list[float]:
        return self._llm.embed([self._llm.tokenizer.trim(text, EMBED_INPUT_TOKENS)])[0]

    def add(self, task_id: int, task: str, result: str, *, token: int, worker: str) -> bool:
        vector = self._embed(f"{task}\n{result}")
        return bool(ray.get(self._store.upsert.remote(task_id, token, vector, task, result,
                                                      worker)))

    def query(self, text: str, k: int) -> list[Hit]:
        if k <= 0:
            return []
        hits: list[Hit] = ray.get(self._store.query.remote(self._embed(text), k))
        return hits

    def count(self) -> int:
        return int(ray.get(self._store.count.remote()))
