"""Model providers behind one Protocol: any OpenAI-compatible server, or the offline simulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import openai

from coop import constants as C
from coop import tokens
from coop.config import RunSettings, local_endpoint, scrub
from coop.simulate import Simulator, lexical_embedding
from coop.types import CoopError

CLIENT_MAX_RETRIES = 3
"""The openai client's own retries: exponential backoff that honours Retry-After."""
CLIENT_TIMEOUT = 120.0
EMBED_BATCH = 256
"""Texts per embeddings request (OpenAI accepts up to 2,048)."""


class LLMFatalError(CoopError):
    """A model error no retry can fix (bad key, no permission, unknown model, bad request):
    the objective stops at once instead of burning attempts on every task."""


class LLMContextError(Exception):
    """The prompt was longer than the model's context: retry once with less context."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: int


class LLM(Protocol):
    label: str
    tokenizer: tokens.Tokenizer

    def complete(self, prompt: str, max_tokens: int) -> Completion: ...

    def embed(self, texts: list[str]) -> Embeddings: ...


class OfflineLLM:
    """The deterministic simulator, in-process: no network, no key, no cost."""

    def __init__(self, simulator: Simulator | None = None) -> None:
        self.simulator = simulator or Simulator()
        self.tokenizer = tokens.estimating(C.OFFLINE_MODEL)
        self.label = C.SIMULATED_LABEL

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        text = self.tokenizer.trim(self.simulator.reply(prompt), max_tokens)
        return Completion(text, self.tokenizer.count(prompt), self.tokenizer.count(text))

    def embed(self, texts: list[str]) -> Embeddings:
        return Embeddings(
            [lexical_embedding(t) for t in texts], sum(self.tokenizer.count(t) for t in texts)
        )


_FATAL = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
    openai.BadRequestError,
)


class OpenAILLM:
    """The official openai client, against api.openai.com or any compatible server."""

    def __init__(self, settings: RunSettings, instance: str) -> None:
        endpoint = local_endpoint(settings)
        self.where = endpoint.base_url or "api.openai.com"
        self.model = settings.model
        self.embedding_model = settings.embedding_model
        self.tokenizer = tokens.for_model(settings.model)
        self.label = settings.label
        self.client = openai.OpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=CLIENT_MAX_RETRIES,
            timeout=CLIENT_TIMEOUT,
            default_headers={C.INSTANCE_HEADER: instance},
        )

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0.2,
            )
        except openai.BadRequestError as exc:
            if _is_context_error(exc):
                raise LLMContextError(str(exc.message)) from None
            raise self._fatal(exc) from None
        except _FATAL as exc:
            raise self._fatal(exc) from None
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = resp.usage
        if usage is None:  # some compatible servers omit it: count ourselves
            return Completion(text, self.tokenizer.count(prompt), self.tokenizer.count(text))
        return Completion(text, usage.prompt_tokens, usage.completion_tokens)

    def embed(self, texts: list[str]) -> Embeddings:
        vectors: list[list[float]] = []
        used = 0
        for start in range(0, len(texts), EMBED_BATCH):  # APIs cap the inputs per request
            chunk = texts[start : start + EMBED_BATCH]
            try:
                resp = self.client.embeddings.create(
                    model=self.embedding_model, input=chunk, encoding_format="float"
                )
            except _FATAL as exc:
                raise self._fatal(exc) from None
            used += (
                resp.usage.prompt_tokens if resp.usage else sum(map(self.tokenizer.count, chunk))
            )
            vectors += [list(d.embedding) for d in sorted(resp.data, key=lambda d: d.index)]
        return Embeddings(vectors, used)

    def _fatal(self, exc: openai.APIStatusError) -> LLMFatalError:
        detail = " ".join(scrub(str(exc.message)).split())[:200]
        return LLMFatalError(
            f"model server {self.where} refused ({exc.status_code} {type(exc).__name__}): {detail}"
        )


def _is_context_error(exc: openai.BadRequestError) -> bool:
    text = str(exc.message).lower()
    return (
        exc.code == "context_length_exceeded"
        or "context length" in text
        or "maximum context" in text
    )


def make_llm(settings: RunSettings, instance: str) -> LLM:
    if settings.simulated:
        return OfflineLLM()
    return OpenAILLM(settings, instance)
