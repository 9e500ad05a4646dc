"""The `LLM` of any OpenAI-compatible server, through the official openai client.

Apart from the Protocol and the simulator (coop/llm.py) because the openai package costs most
of a second to import: an offline run, the board and coop's read-only commands never load it.
Every fault of the client ends here as one of coop.llm's three errors."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import threading
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import openai
import pydantic
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from coop import constants as C
from coop import tokens
from coop.config import RunSettings, local_endpoint
from coop.llm import (
    Completion,
    Embeddings,
    LLMContextError,
    LLMError,
    LLMFatalError,
    Message,
    NoStructuredOutputs,
    ToolCall,
    said,
)
from coop.secrets import scrub

CLIENT_MAX_RETRIES = 3
"""The openai client's own retries: exponential backoff that honours Retry-After."""
CHECK_TIMEOUT = 15.0
"""Seconds the check before a run gives the model server to list its models."""
CHECK_INPUTS = ["coop checks the embedding model", "with two inputs of different lengths, one"]
"""What the check before a run embeds: two inputs whose token counts differ, so that vectors
per token, or a dimension that follows the input, show."""
POOLING_HINT = (
    "make the server pool them (llama-server --pooling mean; llama-cpp-python's server "
    "--kv_overrides llama.pooling_type=int:1)"
)
EMBED_BATCH = 256
"""Texts per embeddings request (OpenAI accepts up to 2,048)."""


T = TypeVar("T")
REPLIES = (ChatCompletion, CreateEmbeddingResponse)
"""The replies coop reads. The openai client builds their pydantic schemas at first use
(`DEFER_PYDANTIC_BUILD`), and pydantic's build is not thread-safe: a worker's slots making
their first calls at once had one fail with "BaseModel cannot be instantiated directly" (a
paid call lost, its task redone). Each client builds them on the thread that makes it."""
_building = threading.Lock()


def _build_replies() -> None:
    """Build every model `REPLIES` hold, here and now (a no-op once built)."""
    with _building:
        todo: list[Any] = list(REPLIES)
        seen: set[type[pydantic.BaseModel]] = set()
        while todo:
            kind = todo.pop()
            if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
                if kind not in seen:
                    seen.add(kind)
                    kind.model_rebuild()
                    todo += [field.annotation for field in kind.model_fields.values()]
            else:  # Optional[...], list[...], a union of models, Annotated[...]
                todo += typing.get_args(kind)


_FATAL = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
    openai.BadRequestError,
)


class OpenAILLM:
    """The official openai client, against api.openai.com or any compatible server."""

    def __init__(self, settings: RunSettings, instance: str, role: str = "worker") -> None:
        """`role`: whose calls this client makes (config.ROLES): it asks for that role's
        model; its check asks the server for every model the run names."""
        _build_replies()
        endpoint = local_endpoint(settings)
        self.where = endpoint.base_url or "api.openai.com"
        self.model = settings.model_of(role)
        self._named = {settings.model: "--model"}  # each model the run names, and its flag
        for r, model in settings.models().items():
            if model != settings.model:
                self._named[model] = f"--{r}-model"
        self.embedding_model = settings.embedding_model
        self.timeout = settings.model_timeout
        self._exact_tokens = settings.exact_tokens
        self._tokenizer_name = settings.tokenizer
        self._dim = 0  # the embeddings' dimension, from the first reply: it may not change
        self._lock = threading.Lock()
        self.label = settings.label
        self.client = openai.OpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=CLIENT_MAX_RETRIES,
            timeout=settings.model_timeout,
            default_headers={C.INSTANCE_HEADER: instance},
        )

    @functools.cached_property
    def tokenizer(self) -> tokens.Tokenizer:
        """Loaded on first use: a check that fails first says so without a tokenizer warning."""
        return tokens.for_model(self.model, self._exact_tokens, self._tokenizer_name)

    def check(self) -> int:
        try:
            client = self.client.with_options(max_retries=1, timeout=CHECK_TIMEOUT)
            listed = [m.id for m in client.models.list().data]
        except (openai.NotFoundError, openai.UnprocessableEntityError):
            listed = []  # no model listing on this server: the embeddings call will tell
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._fatal(exc) from None
        except openai.APIError as exc:
            raise LLMFatalError(str(self._fault(exc, "a model listing"))) from None
        except (AttributeError, TypeError):  # an error page, not an OpenAI-compatible server
            raise LLMFatalError(
                f"model server {self.where} answered with something that is not a model "
                "listing: is OPENAI_BASE_URL an OpenAI-compatible API (ending in /v1)?"
            ) from None
        named = {**self._named, self.embedding_model: "--embedding-model"}
        for model, flag in named.items():
            if listed and not any(m == model or m.startswith(f"{model}:") for m in listed):
                shown = ", ".join(sorted(listed)[:8]) + (" …" if len(listed) > 8 else "")
                raise LLMFatalError(
                    f"model server {self.where} does not know the model {model!r} "
                    f"(it serves: {shown}); pass another {flag}"
                )
        return self._check_embeddings()

    def _check_embeddings(self) -> int:
        """One embeddings call of two inputs: a server that answers with vectors per token,
        ragged or non-number vectors, or a dimension that changes fails here, in one line.

        Retried as every embeddings call of the run is: the listing has just answered, so a
        429 or a 500 here is a server that works, only busy (a standby or a resume started
        while the swarm is rate-limited), not a setting to fix."""
        try:
            return self.embed(list(CHECK_INPUTS)).tokens
        except LLMError as exc:
            if not exc.malformed:
                raise LLMFatalError(str(exc)) from None
            raise LLMFatalError(f"{exc.fault} (--embedding-model {self.embedding_model})") from None

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        return self.chat([{"role": "user", "content": prompt}], max_tokens, [])

    def chat(
        self,
        messages: list[Message],
        max_tokens: int,
        tools: list[dict[str, Any]],
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        if schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            }

        def send() -> Any:
            try:
                return self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=0.2,
                    **extra,
                )
            except openai.BadRequestError as exc:
                if schema is not None and _refuses_format(exc):
                    raise NoStructuredOutputs(_line(str(exc.message))) from None
                raise

        resp = self._request("a chat completion", send)
        try:
            _need(isinstance(resp, ChatCompletion), f"a {type(resp).__name__}")
            _need(bool(resp.choices), "no choices")
            message = resp.choices[0].message
            calls = tuple(
                ToolCall(c.id or f"call-{i}", c.function.name, c.function.arguments or "{}")
                for i, c in enumerate(message.tool_calls or ())
                if c.type == "function"
            )
            text = message.content
            if text is None and not calls:
                raise _Malformed("a message with no content")
            text = text or ""
            usage = resp.usage
            if usage is None:  # some compatible servers omit it: count ourselves
                sent = self.tokenizer.count(json.dumps(messages))
                return Completion(text, sent, self.tokenizer.count(text), calls)
            prompt, completion = int(usage.prompt_tokens), int(usage.completion_tokens)
            self.tokenizer.calibrate(_sent_bytes(messages), prompt)
            return Completion(text, prompt, completion, calls)
        except (_Malformed, AttributeError, TypeError, ValueError, IndexError) as exc:
            raise self._malformed("a chat completion", exc, resp) from None

    def embed(self, texts: list[str]) -> Embeddings:
        vectors: list[list[float]] = []
        used = 0
        for start in range(0, len(texts), EMBED_BATCH):  # APIs cap the inputs per request
            chunk = texts[start : start + EMBED_BATCH]
            resp = self._request(
                "embeddings",
                lambda chunk=chunk: self.client.embeddings.create(  # type: ignore[misc]
                    model=self.embedding_model, input=chunk, encoding_format="base64"
                ),
            )
            try:
                _need(isinstance(resp, CreateEmbeddingResponse), f"a {type(resp).__name__}")
                data = sorted(resp.data, key=lambda d: d.index)
                _need(len(data) == len(chunk), f"{len(data)} embeddings for {len(chunk)} inputs")
                vectors += self._vectors([d.embedding for d in data])
                used += (
                    int(resp.usage.prompt_tokens)
                    if resp.usage
                    else sum(map(self.tokenizer.count, chunk))
                )
            except (_Malformed, AttributeError, TypeError, ValueError) as exc:
                raise self._malformed("embeddings", exc, resp) from None
        return Embeddings(vectors, used)

    def _vectors(self, sent: list[object]) -> list[list[float]]:
        """One flat vector of numbers per input, all of the run's one dimension; else what
        the server sent instead, in words."""
        vectors = [_decoded(v) if isinstance(v, str) else _listed(v) for v in sent]
        dims = sorted({len(v) for v in vectors})
        _need(len(dims) == 1, f"vectors of different lengths ({', '.join(map(str, dims))})")
        with self._lock:
            self._dim = self._dim or dims[0]
            _need(
                dims[0] == self._dim,
                f"vectors of {dims[0]} dimensions where earlier ones had {self._dim}",
            )
        return vectors

    def _request(self, what: str, send: Callable[[], T]) -> T:
        """`send()`, with every client error turned into one of this module's."""
        try:
            return send()
        except openai.BadRequestError as exc:
            if _is_context_error(exc):
                raise LLMContextError(str(exc.message)) from None
            raise self._fatal(exc) from None
        except _FATAL as exc:
            raise self._fatal(exc) from None
        except openai.APIError as exc:
            raise self._fault(exc, what) from None

    def _fault(self, exc: openai.APIError, what: str) -> LLMError:
        kind = type(exc).__name__
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(
                f"{kind}: model server {self.where} did not answer {what} within "
                f"{self.timeout:g}s ({CLIENT_MAX_RETRIES} retries)"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = _root_cause(exc)
            return LLMError(f"{kind}: model server {self.where} unreachable ({cause})")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(
                f"{kind}: model server {self.where} answered {exc.status_code} to {what}: "
                f"{_line(str(exc.message))}"
            )
        return LLMError(f"{kind}: model server {self.where}: {_line(str(exc))}")

    def _malformed(self, what: str, exc: Exception, resp: object) -> LLMError:
        fault = f"model server {self.where} answered {what} with "
        fault += _line(str(exc)) or type(exc).__name__
        return LLMError(f"MalformedReply: {fault}: {_line(repr(resp), 120)}", fault)

    def _fatal(self, exc: openai.APIStatusError) -> LLMFatalError:
        return LLMFatalError(
            f"model server {self.where} refused ({exc.status_code} {type(exc).__name__}): "
            f"{_line(str(exc.message))}"
        )


def _refuses_format(exc: openai.BadRequestError) -> bool:
    """Whether a 400 is the server refusing `response_format` (vLLM, llama.cpp and OpenAI
    name the parameter, or json_schema, in their refusal)."""
    said = str(exc.message).lower()
    return "response_format" in said or "json_schema" in said


class _Malformed(Exception):
    """A reply that is not what the API promises (caught here, raised as LLMError)."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Malformed(what)


def _decoded(text: str) -> list[float]:
    """A vector as coop asks for it, and OpenAI sends it: base64 of little-endian 32-bit
    floats. A quarter of the bytes of the numbers written out, and decoded in one C call:
    parsed as JSON, each number of each vector was a Python object the client built and
    checked, half of a worker's own CPU."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise _Malformed("a string that is not a base64 vector") from None
    _need(len(raw) > 0 and len(raw) % 4 == 0, f"a base64 vector of {len(raw)} bytes")
    vector = np.frombuffer(raw, dtype="<f4")
    _need(bool(np.isfinite(vector).all()), "a vector holding a number that is not finite")
    decoded: list[float] = vector.tolist()
    return decoded


def _listed(sent: object) -> list[float]:
    """A vector sent as a list of numbers, by a server that does not know base64."""
    _need(isinstance(sent, list) and len(sent) > 0, f"a {_kind(sent)} for a vector")
    assert isinstance(sent, list)
    if all(isinstance(x, list) for x in sent):
        raise _Malformed(
            f"one vector per token ({len(sent)} vectors for one input) instead of one "
            f"per input: {POOLING_HINT}"
        )
    odd = [x for x in sent if isinstance(x, bool) or not isinstance(x, (int, float))]
    _need(not odd, f"a vector holding a {_kind(odd[0])} among its numbers" if odd else "")
    vector = [float(x) for x in sent]
    _need(all(map(math.isfinite, vector)), "a vector holding a number that is not finite")
    return vector


def _kind(value: object) -> str:
    """A value's kind in words, for what a server sent in place of a number or a vector."""
    names = {list: "list", str: "string", type(None): "null", dict: "object", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


def _line(text: str, limit: int = 200) -> str:
    """One line of a server's words, with anything key-shaped taken out."""
    return " ".join(scrub(text).split())[:limit]


def _sent_bytes(messages: list[Message]) -> int:
    """The UTF-8 bytes of what the messages say: what the server's count of prompt tokens is
    set against to calibrate an estimate."""
    return sum(len(said(m).encode()) for m in messages)


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a connection error (`[Errno 111] Connection refused`)."""
    seen: Any = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
    return _line(str(seen) or type(seen).__name__, 120)


def _is_context_error(exc: openai.BadRequestError) -> bool:
    text = str(exc.message).lower()
    return (
        exc.code == "context_length_exceeded"
        or "context length" in text
        or "maximum context" in text
    )
