"""Token counting for prompt budgets: exact with the model's own tokenizer, else an estimate
that the model server's own counts calibrate as the run goes.

The tokenizer is tiktoken's for OpenAI's models, or — for an open model tiktoken does not
know (Llama, Qwen, SmolLM… behind llama.cpp, Ollama, vLLM) — the model's own `tokenizer.json`,
read by Hugging Face's `tokenizers` library when the user names it (`--tokenizer`: a file,
or a name in the local Hugging Face cache) and the library is installed (`coop[tokenizers]`).

tiktoken downloads its encodings on first use (into TIKTOKEN_CACHE_DIR, else a temp dir) and
reads them from there afterwards; offline, or for a model it does not know, that fails. Where
DNS does not answer (an air-gapped node) a download would stall for many seconds, so a load
is given LOAD_TIMEOUT. Without a tokenizer coop estimates from UTF-8 length, erring on the
side of more tokens, and warns instead of crashing; each reply's `usage` (the server's exact
count of the prompt it was sent) then tunes the estimate's bytes per token (`calibrate`). The
planner decides once for the objective (`RunSettings.exact_tokens`): when it had no
tokenizer, workers estimate at once, silently.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import tiktoken

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 3.0
"""Real tokenizers average about 4 bytes per token on English; 3 over-counts, which is safe."""
LOAD_TIMEOUT = 5.0
"""Seconds to wait for a tokenizer to load: at once from its cache; a download that has not
finished by then (a stalled DNS lookup) is left to finish in the background, unused."""
CALIBRATE_AFTER = 500
"""Prompt tokens the server must have counted before its counts replace the first guess."""
MARGIN = 1.15
"""How much more the calibrated estimate counts than the server did: a prompt of new words
may take more tokens a byte than those seen so far."""
BYTES_PER_TOKEN_RANGE = (1.0, 6.0)
"""Bytes per token the calibrated estimate stays within, whatever the counts say."""

_warned: set[str] = set()
_warn_lock = threading.Lock()


class Codec(Protocol):
    """A tokenizer's two operations coop needs, whichever library provides them."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class _Tiktoken:
    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)


class _HuggingFace:
    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))  # type: ignore[attr-defined]


class Tokenizer:
    """Counts and trims text for one model: exactly with its codec, else by estimate."""

    def __init__(self, model: str, codec: Codec | tiktoken.Encoding | None) -> None:
        self.model = model
        self.codec = _Tiktoken(codec) if isinstance(codec, tiktoken.Encoding) else codec
        self.bytes_per_token = BYTES_PER_TOKEN
        self._seen = [0, 0]  # bytes sent, prompt tokens the server counted for them
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        return self.codec is not None

    def count(self, text: str) -> int:
        if self.codec is not None:
            return len(self.codec.encode(text))
        return math.ceil(len(text.encode("utf-8")) / self.bytes_per_token)

    def trim(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` within `max_tokens`."""
        if max_tokens <= 0:
            return ""
        if self.codec is not None:
            ids = self.codec.encode(text)
            if len(ids) <= max_tokens:
                return text
            return self.codec.decode(ids[:max_tokens])
        raw = text.encode("utf-8")
        limit = int(max_tokens * self.bytes_per_token)
        return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")

    def calibrate(self, sent_bytes: int, prompt_tokens: int) -> None:
        """The server counted `prompt_tokens` for a prompt of `sent_bytes`: once it has
        counted CALIBRATE_AFTER tokens, the estimate takes its bytes per token from the
        counts so far, less a margin. A codec's count is exact and stays as it is."""
        if self.codec is not None or sent_bytes <= 0 or prompt_tokens <= 0:
            return
        with self._lock:
            self._seen[0] += sent_bytes
            self._seen[1] += prompt_tokens
            sent, counted = self._seen
            if counted < CALIBRATE_AFTER:
                return
            low, high = BYTES_PER_TOKEN_RANGE
            self.bytes_per_token = min(high, max(low, sent / counted / MARGIN))


def estimating(model: str) -> Tokenizer:
    """A tokenizer that only estimates: for the simulated model, which has no vocabulary."""
    return Tokenizer(model, None)


def for_model(model: str, exact: bool = True, tokenizer: str = "") -> Tokenizer:
    """The model's tokenizer: `tokenizer` (a tokenizer.json file or a Hugging Face name)
    when given, else tiktoken's; `exact=False` (the objective has none) estimates at once.

    A new one each call, for one model client: an estimate's calibration is by the counts of
    that client's server, and two runs in one process (the Python API) must not calibrate
    each other's. The codec it counts with is loaded once per process (`codec`)."""
    return Tokenizer(model, codec(model, exact, tokenizer))


@lru_cache(maxsize=32)
def codec(model: str, exact: bool = True, tokenizer: str = "") -> Codec | tiktoken.Encoding | None:
    """`for_model`'s codec, loaded once per process; None (with one warning per model): the
    count is an estimate."""
    if not exact:
        return None
    if tokenizer:
        loaded, why = _load(lambda: _hugging_face(tokenizer))
        hint = "check --tokenizer"
    else:
        loaded, why = _load(lambda: tiktoken.encoding_for_model(model))
        hint = (
            "give an open model's tokenizer.json with --tokenizer, or see TIKTOKEN_CACHE_DIR "
            "in the README to give tiktoken its encoding offline"
        )
    if loaded is not None:
        return loaded
    with _warn_lock:
        if model not in _warned:
            _warned.add(model)
            log.warning(
                "no tokenizer for %s (%s); estimating tokens conservatively, calibrated by "
                "the server's counts as the run goes (%s)",
                model,
                why,
                hint,
            )
    return None


def _load(
    make: Callable[[], Codec | tiktoken.Encoding],
) -> tuple[Codec | tiktoken.Encoding | None, str]:
    """A codec made within LOAD_TIMEOUT, or None and why not."""
    loaded: list[Codec | tiktoken.Encoding] = []
    failed: list[str] = []

    def load() -> None:
        try:
            loaded.append(make())
        except Exception as exc:  # KeyError for unknown models, network errors offline
            failed.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    thread = threading.Thread(target=load, name="tokenizer-load", daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT)
    if loaded:
        return loaded[0], ""
    return None, failed[0] if failed else f"not loaded within {LOAD_TIMEOUT:g}s"


def _hugging_face(name: str) -> Codec:
    """A Hugging Face tokenizer from a tokenizer.json file, or by name from the local
    cache (coop never needs to download one: a name not cached fails here)."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise RuntimeError(
            "the tokenizers library is not installed: pip install 'coop[tokenizers]'"
        ) from None
    if Path(name).expanduser().is_file():
        return _HuggingFace(HFTokenizer.from_file(str(Path(name).expanduser())))
    return _HuggingFace(HFTokenizer.from_pretrained(name))
