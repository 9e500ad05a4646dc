"""Shared result memory: one Protocol, so backends (in-cluster, Weaviate) are interchangeable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Hit:
    task_id: int
    task: str
    result: str
    score: float


class Memory(Protocol):
    """Results of one objective, visible to every instance in the cluster."""

    def add(self, task_id: int, task: str, result: str, *, token: int, worker: str) -> bool:
        """Upsert keyed by task id; a write under an older lease token than the stored one is
        refused (False), so a zombie worker cannot overwrite a retried result."""
        ...

    def query(self, text: str, k: int) -> list[Hit]:
        """The k results nearest to `text`, best first."""
        ...

    def count(self) -> int: ...
