"""Token counting for prompt budgets, exact with tiktoken and a conservative estimate without.

tiktoken downloads its encodings on first use (into TIKTOKEN_CACHE_DIR, else a temp dir) and
reads them from there afterwards; offline, or for a model it does not know (Ollama, vLLM…),
that fails. coop then estimates from UTF-8 length, errs on the side of more tokens, and warns
instead of crashing. Where DNS does not answer (an air-gapped node) a download would stall
for many seconds, so a load is given LOAD_TIMEOUT. The planner decides once for the objective
(`RunSettings.exact_tokens`): when it had no encoding, workers estimate at once, silently.
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
LOAD_TIMEOUT = 5.0
"""Seconds to wait for tiktoken to load an encoding: at once from its cache; a download that
has not finished by then (a stalled DNS lookup) is left to finish in the background, unused."""

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
def for_model(model: str, exact: bool = True) -> Tokenizer:
    """The model's tokenizer; `exact=False` (the objective has no encoding) estimates at once."""
    if not exact:
        return Tokenizer(model, None)
    loaded: list[tiktoken.Encoding] = []
    failed: list[str] = []

    def load() -> None:
        try:
            loaded.append(tiktoken.encoding_for_model(model))
        except Exception as exc:  # KeyError for unknown models, network errors offline
            failed.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    thread = threading.Thread(target=load, name="tiktoken-load", daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT)
    if loaded:
        return Tokenizer(model, loaded[0])
    with _warn_lock:
        if model not in _warned:
            _warned.add(model)
            why = failed[0] if failed else f"not loaded within {LOAD_TIMEOUT:g}s"
            log.warning(
                "no tiktoken encoding for %s (%s); estimating tokens conservatively "
                "(see TIKTOKEN_CACHE_DIR in the README to give it one offline)",
                model,
                why,
            )
    return Tokenizer(model, None)
