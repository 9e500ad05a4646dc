"""Shared result memory: one Protocol, so backends (in-cluster, Weaviate) are interchangeable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from coop.config import RunSettings
    from coop.llm import LLM

EMBED_INPUT_TOKENS = 6000
"""Embedding models take about 8k tokens; keep well inside."""


@dataclass(frozen=True)
class Hit:
    task_id: int
    task: str
    result: str
    score: float  # cosine similarity to the query


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

    def drop(self) -> None:
        """Remove every result of the objective (`coop delete`)."""
        ...


class Embedder:
    """Embeddings with the objective's model, inputs trimmed to what embedding models take,
    every call's tokens reported for the board's accounting."""

    def __init__(self, llm: LLM, on_usage: Callable[[int], None] | None = None) -> None:
        self._llm = llm
        self._on_usage = on_usage

    def vectors(self, texts: list[str]) -> list[list[float]]:
        out = self._llm.embed([self._llm.tokenizer.trim(t, EMBED_INPUT_TOKENS) for t in texts])
        if self._on_usage is not None:
            self._on_usage(out.tokens)
        return out.vectors

    def count(self, text: str) -> int:
        return self._llm.tokenizer.count(text)


def open_memory(
    settings: RunSettings,
    objective_id: str,
    llm: LLM,
    state_dir: Path,
    on_usage: Callable[[int], None] | None = None,
) -> Memory:
    """The objective's memory backend. Imported here, not at the top: the Weaviate client is
    loaded only by runs that use it."""
    if settings.memory == "cluster":
        from coop.memory.cluster import ClusterMemory

        return ClusterMemory(objective_id, llm, str(state_dir), on_usage)
    from coop.memory.weaviate import WeaviateMemory

    return WeaviateMemory(objective_id, llm, settings, state_dir, on_usage)


def check(settings: RunSettings, state_dir: Path) -> None:
    """Connect now, so that an unreachable memory stops an objective before it starts."""
    if settings.memory != "cluster":
        from coop.memory.weaviate import client, where

        client(where(settings, state_dir))


def delete(settings: RunSettings, objective_id: str, state_dir: Path) -> str:
    """Remove an objective's results wherever its memory keeps them; says what was removed."""
    if settings.memory == "cluster":
        from coop.journal import remove_db
        from coop.memory.cluster import memory_path

        path = memory_path(state_dir, objective_id)
        remove_db(path)
        return f"results store {path}"
    from coop.memory.weaviate import client, drop_tenant, where

    spot = where(settings, state_dir)
    dropped = drop_tenant(client(spot), settings.weaviate_collection, objective_id)
    what = f"Weaviate tenant {objective_id} of {settings.weaviate_collection} at {spot.url}"
    return what if dropped else f"{what} (had none)"
