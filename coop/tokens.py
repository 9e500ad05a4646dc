"""Token counting for prompt budgets, exact with tiktoken and a conservative estimate without.

tiktoken downloads its encodings on first use; offline, or for a model it does not know
(Ollama, vLLM…), that fails. coop then estimates from UTF-8 length, errs on the side of
more tokens, and warns once per model instead of crashing.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import lru_cache

import tiktoken

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 3
"""Real tokenizers average about 4 bytes per token on English; 3 over-counts, which is safe."""

_warned: set[str] = set()
_warn_lock = threading.Lock()


class Tokenizer:
    """Counts and trims text for one model."""

    def __init__(self, model: str, encoding: tiktoken.Encoding | None) -> None:
        self.model = model
        self.encoding = encoding

    @property
    def exact(self) -> bool:
        return self.encoding is not None

    def count(self, text: str) -> int:
        if self.encoding is not None:
            return len(self.encoding.encode(text, disallowed_special=()))
        return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)

    def trim(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` within `max_tokens`."""
        if max_tokens <= 0:
            return ""
        if self.encoding is not None:
            ids = self.encoding.encode(text, disallowed_special=())
            if len(ids) <= max_tokens:
                return text
            return self.encoding.decode(ids[:max_tokens])
        raw = text.encode("utf-8")
        limit = max_tokens * BYTES_PER_TOKEN
        return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def estimating(model: str) -> Tokenizer:
    """A tokenizer that only estimates: for the simulated model, which has no vocabulary."""
    return Tokenizer(model, None)


@lru_cache(maxsize=32)
def for_model(model: str) -> Tokenizer:
    try:
        return Tokenizer(model, tiktoken.encoding_for_model(model))
    except Exception as exc:  # KeyError for unknown models, network errors offline
        with _warn_lock:
            if model not in _warned:
                _warned.add(model)
                log.warning(
                    "no tiktoken encoding for %s (%s: %s); estimating tokens conservatively",
                    model,
                    type(exc).__name__,
                    str(exc)[:120],
                )
        return Tokenizer(model, None)
