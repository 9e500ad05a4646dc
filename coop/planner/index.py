"""The planner's near-duplicate index: embeddings of every task on the board, to turn away
proposals that only reword one. Exact repeats are left to the board, which counts them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from coop import constants as C
from coop.llm import LLM
from coop.text import normalize


class TaskIndex:
    """Unit vectors of known tasks, in one matrix. Safe across threads: its own lock guards the
    matrix and the known texts (the model is called outside it), so an `add` is never lost to
    another; a caller that must split and add as one step holds a lock of its own around both
    (the planner's commit lock)."""

    def __init__(self, llm: LLM, on_usage: Callable[[int], None]) -> None:
        self.llm = llm
        self.on_usage = on_usage
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.known: set[str] = set()
        self._let_through: dict[str, np.ndarray] = {}  # the last split's fresh proposals
        self._lock = threading.Lock()

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = self.llm.embed(list(texts))
        self.on_usage(out.tokens)
        m = np.asarray(out.vectors, dtype=np.float32)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.where(norms == 0, 1, norms)

    def add(self, texts: Sequence[str]) -> None:
        """Known from now on. A text the last `split` let through keeps the vector it was
        compared by: embedded again, each task the planner adds was paid for twice."""
        if not texts:
            return
        with self._lock:
            ready = {t: self._let_through[t] for t in texts if t in self._let_through}
        missing = [t for t in texts if t not in ready]
        if missing:
            ready.update(zip(missing, self._embed(missing), strict=True))
        new = np.stack([ready[t] for t in texts])
        with self._lock:
            self.vectors = new if not self.vectors.size else np.vstack([self.vectors, new])
            self.known.update(normalize(t) for t in texts)

    def split(self, proposals: Sequence[str]) -> tuple[list[str], list[str]]:
        """(to add, near-duplicates): a proposal too close to a known task, or to an earlier
        proposal of the same batch, is a near-duplicate."""
        with self._lock:
            seen = set(self.known)
        exact = [p for p in proposals if normalize(p) in seen]
        others = [p for p in proposals if normalize(p) not in seen]
        if not others:
            return exact, []
        vecs = self._embed(others)
        with self._lock:
            vectors = self.vectors
        known = (vectors @ vecs.T).max(axis=0) if vectors.size else np.zeros(len(vecs))
        fresh: list[str] = exact
        near: list[str] = []
        kept: list[int] = []  # rows of `vecs` accepted so far in this batch
        for i, text in enumerate(others):
            within = float((vecs[kept] @ vecs[i]).max()) if kept else 0.0
            if max(float(known[i]), within) >= C.TASK_SIMILARITY:
                near.append(text)
            else:
                fresh.append(text)
                kept.append(i)
        with self._lock:
            self._let_through = {others[i]: vecs[i] for i in kept}
        return fresh, near
