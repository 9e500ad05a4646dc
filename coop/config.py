"""Run settings: what every instance of an objective shares, and where secrets come from.

Settings travel through the board, so `coop join` on another node needs only the objective's
name. Secrets never do: the API key is read from the local environment (or `.env`) of each
process, at the moment its model client is built, and is never stored or printed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import find_dotenv, load_dotenv

from coop import constants as C
from coop.errors import CoopError
from coop.secrets import scrub

LLM_CHOICES = ("openai", "offline")
TOOL_CHOICES = ("workspace", "python", "fetch")
"""The built-in tools (`--tools`): each off unless enabled."""
SANDBOX_CHOICES = ("auto", "bubblewrap", "namespaces", "process")
ROLES = ("planner", "worker", "answer")
"""Who calls the model, each with a model of its own (`--planner-model`…; `--model` for all):
the planner (task creation, prioritization, the completion check), the workers (execution
steps) and the synthesis of the answer."""
ROLE_OF_KIND = {
    "creation": "planner",
    "prioritization": "planner",
    "completion-check": "planner",
    "execution": "worker",
    "synthesis": "answer",
}
"""Which role makes each kind of model call (coop.types.Kind's values)."""


def load_env() -> None:
    """Load `.env` from the working directory upwards; the real environment wins."""
    load_dotenv(find_dotenv(usecwd=True), override=False)


def redact_url(url: str) -> str:
    """Drop credentials and query from a URL before it is shown or stored."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class RunSettings:
    """The settings one objective runs with; no secrets here, it is stored in the board."""

    llm: str = "openai"
    model: str = C.DEFAULT_MODEL
    planner_model: str = ""  # each role's model; "" for `model`
    worker_model: str = ""
    answer_model: str = ""
    embedding_model: str = C.DEFAULT_EMBEDDING_MODEL
    base_url: str | None = None
    initial_task: str = C.DEFAULT_INITIAL_TASK
    max_tasks: int = C.DEFAULT_MAX_TASKS
    lease_ttl: float = C.DEFAULT_LEASE_TTL
    max_attempts: int = C.DEFAULT_MAX_ATTEMPTS
    context_k: int = C.DEFAULT_CONTEXT_K
    max_prompt_tokens: int = C.DEFAULT_MAX_PROMPT_TOKENS
    max_completion_tokens: int = C.DEFAULT_MAX_COMPLETION_TOKENS
    model_timeout: float = C.DEFAULT_MODEL_TIMEOUT  # seconds the client waits for one answer
    planner_calls: int = C.DEFAULT_PLANNER_CALLS  # most creation calls in flight at once
    exact_tokens: bool = True  # False: the planner had no tokenizer; all estimate
    tokenizer: str = ""  # an open model's tokenizer.json (or Hugging Face name); "": tiktoken
    tools: tuple[str, ...] = ()  # built-in tools every worker offers (TOOL_CHOICES)
    max_steps: int = C.DEFAULT_MAX_STEPS  # model and tool calls one task may take
    sandbox: str = "auto"  # the isolation the `python` tool asks for
    scratch_mb: int = C.DEFAULT_SCRATCH_MB  # what a `python` call may write, per tmpfs
    fetch_allow: tuple[str, ...] = ()  # networks `fetch` may reach though not public
    rpm: int = 0  # cluster-wide model requests per minute, 0 for no limit
    tpm: int = 0  # cluster-wide model tokens per minute, 0 for no limit
    max_tokens: int = 0  # budgets for the whole objective; 0 for none
    max_cost: float = 0.0
    max_minutes: float = 0.0
    synthesis_reserve: float = C.DEFAULT_SYNTHESIS_RESERVE  # share of a cap kept for the answer
    approve: bool = False  # new tasks wait for a person's approval before anyone leases them
    prices: tuple[float, float, float] = (0.0, 0.0, 0.0)  # USD per 1M: in, out, embedding
    role_prices: tuple[tuple[str, float, float], ...] = ()  # (role, in, out): its own model's
    memory: str = "cluster"  # one of C.MEMORY_CHOICES
    weaviate_url: str | None = None  # WEAVIATE_URL when the objective was created, redacted
    weaviate_collection: str = C.DEFAULT_COLLECTION

    REOPENABLE = ("max_tasks", "max_tokens", "max_cost", "max_minutes")
    """Settings `coop start --resume` may change: the caps, to continue a finished objective."""

    def cost(self, kind: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call of `kind`, at the prices of the model its role uses."""
        p_in, p_out, p_embed = self.prices
        if kind == "embedding":
            return prompt_tokens * p_embed / 1e6
        role = ROLE_OF_KIND.get(kind, "worker")
        p_in, p_out = next(((i, o) for r, i, o in self.role_prices if r == role), (p_in, p_out))
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6

    def model_of(self, role: str) -> str:
        """The model `role` (one of ROLES) calls."""
        named: str = getattr(self, f"{role}_model")
        return named or self.model

    def model_for(self, kind: str) -> str:
        """The model a call of `kind` (coop.types.Kind's values) goes to."""
        if kind == "embedding":
            return self.embedding_model
        return self.model_of(ROLE_OF_KIND.get(kind, "worker"))

    def models(self) -> dict[str, str]:
        """Each role's model, in ROLES order."""
        return {role: self.model_of(role) for role in ROLES}

    @property
    def simulated(self) -> bool:
        return self.llm == "offline"

    @property
    def label(self) -> str:
        if self.simulated:
            return C.SIMULATED_LABEL
        where = f" at {self.base_url}" if self.base_url else ""
        models = self.models()
        if len(set(models.values())) == 1:
            return f"openai-compatible {self.model}{where}"
        said = ", ".join(f"{role} {model}" for role, model in models.items())
        return f"openai-compatible ({said}){where}"

    def validate(self) -> RunSettings:
        if self.llm not in LLM_CHOICES:
            raise CoopError(f"unknown --llm {self.llm!r}: choose one of {', '.join(LLM_CHOICES)}")
        if self.memory not in C.MEMORY_CHOICES:
            raise CoopError(
                f"unknown --memory {self.memory!r}: choose one of {', '.join(C.MEMORY_CHOICES)}"
            )
        if not _COLLECTION.fullmatch(self.weaviate_collection):
            raise CoopError(
                f"bad Weaviate collection name {self.weaviate_collection!r}: a capital letter "
                "first, then letters, digits or _ (e.g. CoopResult)"
            )
        for flag, name in (("--model", self.model), ("--embedding-model", self.embedding_model)):
            if not name.strip():
                raise CoopError(f"{flag} is empty: name the model the server should use")
        unknown = [t for t in self.tools if t not in TOOL_CHOICES]
        if unknown:
            raise CoopError(
                f"unknown tool {unknown[0]!r} in --tools: choose from {', '.join(TOOL_CHOICES)}"
            )
        if self.sandbox not in SANDBOX_CHOICES:
            raise CoopError(f"unknown --sandbox {self.sandbox!r}: {', '.join(SANDBOX_CHOICES)}")
        if self.scratch_mb < 1:
            raise CoopError(f"--scratch-mb {self.scratch_mb}: a python call needs at least 1 MiB")
        for net in self.fetch_allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise CoopError(f"--fetch-allow {net!r} is not a network like 10.0.0.0/8") from None
        if not 0.0 <= self.synthesis_reserve < 1.0:
            raise CoopError("--synthesis-reserve is a share of the caps: from 0 to below 1")
        if self.simulated:
            return replace(
                self,
                model=C.OFFLINE_MODEL,
                embedding_model=C.OFFLINE_MODEL,
                base_url=None,
                planner_model="",
                worker_model="",
                answer_model="",
            )
        if self.max_prompt_tokens <= self.max_completion_tokens:
            raise CoopError(
                "--max-prompt-tokens must exceed the completion budget "
                f"({self.max_completion_tokens})"
            )
        return self


_COLLECTION = re.compile(r"[A-Z][A-Za-z0-9_]{0,254}")


def weaviate_url(settings: RunSettings) -> str | None:
    """This node's WEAVIATE_URL wins over the one the objective was created with."""
    return os.environ.get("WEAVIATE_URL") or settings.weaviate_url


def forwarded_env() -> dict[str, str]:
    """The part of this process's environment a worker actor it starts must see."""
    return {k: os.environ[k] for k in C.FORWARDED_ENV if os.environ.get(k)}


def new_settings(**options: Any) -> RunSettings:
    """Settings for a new objective: flags (already merged with `COOP_*` env) over defaults."""
    base, store = os.environ.get("OPENAI_BASE_URL"), os.environ.get("WEAVIATE_URL")
    settings = RunSettings(
        base_url=redact_url(base) if base else None,
        weaviate_url=redact_url(store) if store and options.get("memory") == "weaviate" else None,
        **options,
    ).validate()
    table = price_table()
    chat, embed = _price(table, settings.model), _price(table, settings.embedding_model)
    roles: list[tuple[str, float, float]] = []
    for role, model in settings.models().items():
        price = _price(table, model)
        if settings.max_cost and price is None:
            raise CoopError(
                f"--max-cost needs a price for {model}: set COOP_PRICES="
                f"'{{\"{model}\": [usd_per_1M_input, usd_per_1M_output]}}'"
            )
        if model != settings.model:
            roles.append((role, *(price or (0.0, 0.0))))
    chat, embed = chat or (0.0, 0.0), embed or (0.0, 0.0)
    return replace(settings, prices=(chat[0], chat[1], embed[0]), role_prices=tuple(roles))


def price_table() -> dict[str, tuple[float, float]]:
    """The built-in prices, overridden and extended by COOP_PRICES (JSON)."""
    table = dict(C.PRICES)
    raw = os.environ.get("COOP_PRICES")
    if raw:
        try:
            extra = {str(k): (float(v[0]), float(v[1])) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            raise CoopError(
                'COOP_PRICES must be JSON like {"model": [usd_per_1M_input, usd_per_1M_output]}'
            ) from None
        table.update(extra)
    return table


def _price(table: dict[str, tuple[float, float]], model: str) -> tuple[float, float] | None:
    """Exact match, else the longest known prefix (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`)."""
    if model in table:
        return table[model]
    prefixes = [m for m in table if model.startswith(m)]
    return table[max(prefixes, key=len)] if prefixes else None


@dataclass(frozen=True)
class Endpoint:
    """Where this process sends model requests, with the key read from its own environment."""

    base_url: str | None
    api_key: str

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"Endpoint(base_url={self.base_url!r}, api_key=<hidden>)"


def local_endpoint(settings: RunSettings) -> Endpoint:
    """This node's endpoint: its own OPENAI_BASE_URL wins over the one the planner used."""
    base = os.environ.get("OPENAI_BASE_URL") or settings.base_url
    key = os.environ.get("OPENAI_API_KEY", "")
    if not key and not base:
        raise CoopError(
            "no model configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
            "OpenAI-compatible server), or pass --llm offline for the simulated model"
        )
    # Local servers (Ollama, vLLM, llama.cpp) accept any key; the client insists on one.
    return Endpoint(base_url=base, api_key=key or "no-key")


def check_objective(text: str) -> str:
    objective = text.strip()
    if not objective:
        raise CoopError("the objective is empty: say what the agents should achieve")
    if len(objective) > C.MAX_OBJECTIVE_CHARS:
        raise CoopError(
            f"the objective is {len(objective)} characters; the limit is "
            f"{C.MAX_OBJECTIVE_CHARS} because it is sent with every prompt — put "
            "the detail in --initial-task instead"
        )
    return objective


class _Scrubbed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time, so that a live display which redirects
    it keeps log lines scrolling above itself."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(quiet: bool) -> None:
    """Plain lines on stderr, with secrets scrubbed from every record whoever logs it."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_Scrubbed())
    root = logging.getLogger("coop")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
