"""The built-in memory: a detached Ray actor per objective holding vectors in numpy.

Any worker on any node reaches it by name, unlike BabyAGI's per-directory Chroma store.
Exact cosine search over a contiguous matrix is simple and fast enough for the result counts
one objective produces (see scripts/bench.py); Weaviate takes over past that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from coop import cluster
from coop.journal import JournalError, remove_db
from coop.llm import LLM
from coop.memory import Embedder, Hit


@dataclass
class _Record:
    task_id: int
    task: str
    result: str
    worker: str
    token: int


class VectorStore:
    """Actor state. Rows are written in place on upsert, so ids never duplicate.

    With a `path`, every upsert is also written to a SQLite file (WAL) and the store reloads
    it on start: vectors cost money to make, so a cluster restart must not lose them.
    """

    def __init__(self, path: str | None = None, objective_id: str = "") -> None:
        self._name = cluster.actor_name(objective_id, "memory")
        self._rows: dict[int, int] = {}  # task id -> row
        self._records: list[_Record] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._open(Path(path))

    def _open(self, path: Path) -> None:
        fresh = not path.exists()
        if fresh:
            path.touch(mode=0o600)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results (task_id INTEGER PRIMARY KEY, "
                "token INTEGER, vector BLOB, task TEXT, result TEXT, worker TEXT)"
            )
            rows = self._db.execute(
                "SELECT task_id, token, vector, task, result, worker FROM results ORDER BY rowid"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path} is not a readable coop memory file ({exc})") from None
        for tid, token, blob, task, result, worker in rows:
            self._put(
                _Record(tid, task, result, worker, token), np.frombuffer(blob, dtype=np.float32)
            )

    def __repr__(self) -> str:  # the dashboard's and the log prefix's name for this actor
        return self._name

    def upsert(
        self, task_id: int, token: int, vector: list[float], task: str, result: str, worker: str
    ) -> bool:
        vec = np.asarray(vector, dtype=np.float32)
        norm = float(np.linalg.norm(vec))
        if norm:
            vec = vec / norm
        if self._records and vec.shape[0] != self._matrix.shape[1]:
            raise ValueError(
                f"memory holds {self._matrix.shape[1]}-dimensional vectors, got "
                f"{vec.shape[0]}: was the embedding model changed mid-run?"
            )
        row = self._rows.get(task_id)
        if row is not None and token < self._records[row].token:
            return False
        record = _Record(task_id, task, result, worker, token)
        if self._db is not None:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                    (task_id, token, vec.tobytes(), task, result, worker),
                )
            except sqlite3.Error as exc:
                raise JournalError(f"cannot write the memory file: {exc}") from None
        self._put(record, vec)
        return True

    def _put(self, record: _Record, vec: np.ndarray) -> None:
        row = self._rows.get(record.task_id)
        if row is None:
            row = len(self._records)
            self._rows[record.task_id] = row
            self._records.append(record)
            self._grow(row + 1, vec.shape[0])
        else:
            self._records[row] = record
        self._matrix[row] = vec

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
        return [
            Hit(
                self._records[i].task_id,
                self._records[i].task,
                self._records[i].result,
                float(scores[i]),
            )
            for i in top
        ]

    def count(self) -> int:
        return len(self._records)

    def task_ids(self) -> list[int]:
        return [r.task_id for r in self._records]


def memory_path(root: Path, objective_id: str) -> Path:
    return root / "memory" / f"{objective_id}.db"


class ClusterMemory:
    """Client side of the built-in memory: embeds locally, stores and searches in the actor."""

    def __init__(
        self,
        objective_id: str,
        llm: LLM,
        state_dir: str | None = None,
        on_usage: Callable[[int], None] | None = None,
    ) -> None:
        path = str(memory_path(Path(state_dir), objective_id)) if state_dir else None
        self._path = path
        self._store: Any = cluster.named_actor(
            VectorStore, objective_id, "memory", path, objective_id
        )
        self._embed = Embedder(llm, on_usage)

    def add(self, task_id: int, task: str, result: str, *, token: int, worker: str) -> bool:
        (vector,) = self._embed.vectors([f"{task}\n{result}"])
        return bool(
            cluster.get(self._store.upsert.remote(task_id, token, vector, task, result, worker))
        )

    def query(self, text: str, k: int) -> list[Hit]:
        if k <= 0:
            return []
        (vector,) = self._embed.vectors([text])
        hits: list[Hit] = cluster.get(self._store.query.remote(vector, k))
        return hits

    def count(self) -> int:
        return int(cluster.get(self._store.count.remote()))

    def drop(self) -> None:
        ray.kill(self._store, no_restart=True)
        if self._path is not None:
            remove_db(Path(self._path))
