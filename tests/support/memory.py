"""The built-in memory's vector store and embedder in this process, with no actor: what the
planner's and the worker's unit tests give the roles as their `Memory`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from coop.llm import LLM
from coop.memory import Embedder, Hit
from coop.memory.cluster import VectorStore


class InProcessMemory:
    """`coop.memory.Memory` over a plain VectorStore, one call at a time as its actor would."""

    def __init__(self, llm: LLM, on_usage: Callable[[int], None] | None = None) -> None:
        self.store = VectorStore()
        self._embed = Embedder(llm, on_usage)
        self._lock = threading.Lock()

    def add(self, task_id: int, task: str, result: str, *, token: int, worker: str) -> bool:
        (vector,) = self._embed.vectors([f"{task}\n{result}"])
        with self._lock:
            return self.store.upsert(task_id, token, vector, task, result, worker)

    def query(self, text: str, k: int) -> list[Hit]:
        if k <= 0:
            return []
        (vector,) = self._embed.vectors([text])
        with self._lock:
            return self.store.query(vector, k)

    def count(self) -> int:
        return self.store.count()

    def drop(self) -> None:
        self.store = VectorStore()
