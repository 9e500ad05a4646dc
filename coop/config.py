"""Run settings: what every instance of an objective shares, and where secrets come from.

Settings travel through the board, so `coop join` on another node needs only the objective's
name. Secrets never do: the API key is read from the local environment (or `.env`) of each
process, at the moment its model client is built, and is never stored or printed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import find_dotenv, load_dotenv

from coop import constants as C
from coop.types import CoopError

LLM_CHOICES = ("openai", "offline")


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
    embedding_model: str = C.DEFAULT_EMBEDDING_MODEL
    base_url: str | None = None
    initial_task: str = C.DEFAULT_INITIAL_TASK
    max_tasks: int = C.DEFAULT_MAX_TASKS
    lease_ttl: float = C.DEFAULT_LEASE_TTL
    max_attempts: int = C.DEFAULT_MAX_ATTEMPTS
    context_k: int = C.DEFAULT_CONTEXT_K
    max_prompt_tokens: int = C.DEFAULT_MAX_PROMPT_TOKENS
    max_completion_tokens: int = C.DEFAULT_MAX_COMPLETION_TOKENS
    rpm: int = 0  # cluster-wide model requests per minute, 0 for no limit
    tpm: int = 0  # cluster-wide model tokens per minute, 0 for no limit

    @property
    def simulated(self) -> bool:
        return self.llm == "offline"

    @property
    def label(self) -> str:
        if self.simulated:
            return C.SIMULATED_LABEL
        where = f" at {self.base_url}" if self.base_url else ""
        return f"openai-compatible {self.model}{where}"

    def validate(self) -> RunSettings:
        if self.llm not in LLM_CHOICES:
            raise CoopError(f"unknown --llm {self.llm!r}: choose one of {', '.join(LLM_CHOICES)}")
        if self.simulated:
            return replace(self, model=C.OFFLINE_MODEL, embedding_model=C.OFFLINE_MODEL,
                           base_url=None)
        if self.max_prompt_tokens <= self.max_completion_tokens:
            raise CoopError("--max-prompt-tokens must exceed the completion budget "
                            f"({self.max_completion_tokens})")
        return self


def new_settings(**options: Any) -> RunSettings:
    """Settings for a new objective: flags (already merged with `COOP_*` env) over defaults."""
    base = os.environ.get("OPENAI_BASE_URL")
    return RunSettings(base_url=redact_url(base) if base else None, **options).validate()


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
        raise CoopError("no model configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for an "
                        "OpenAI-compatible server), or pass --llm offline for the simulated model")
    # Local servers (Ollama, vLLM, llama.cpp) accept any key; the client insists on one.
    return Endpoint(base_url=base, api_key=key or "no-key")


_KEY_PATTERN = re.compile(r"\b(sk|key|token)-[A-Za-z0-9_*\-]{6,}", re.IGNORECASE)


def scrub(text: str) -> str:
    """Remove this process's API key, and anything shaped like one, from text bound for output."""
    key = os.environ.get("OPENAI_API_KEY")
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return _KEY_PATTERN.sub("***", text)


def check_objective(text: str) -> str:
    objective = text.strip()
    if not objective:
        raise CoopError("the objective is empty: say what the agents should achieve")
    if len(objective) > C.MAX_OBJECTIVE_CHARS:
        raise CoopError(f"the objective is {len(objective)} characters; the limit is "
                        f"{C.MAX_OBJECTIVE_CHARS} because it is sent with every prompt — put "
                        "the detail in --initial-task instead")
    return objective


class _Scrubbed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


def configure_logging(quiet: bool) -> None:
    """Plain lines on stderr, with secrets scrubbed from every record whoever logs it."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_Scrubbed())
    root = logging.getLogger("coop")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False
