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

import click
from dotenv import find_dotenv, load_dotenv

from coop import constants as C
from coop.declare import FileText, ToolNames, setting
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


class SchemaFile(click.ParamType):  # type: ignore[type-arg]
    """A JSON Schema file (or, in Python, the schema itself) as its compact JSON text, checked
    to be a JSON Schema."""

    name = "schema"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from coop.answers import schema_problem

        if not value:
            return ""
        if isinstance(value, dict):
            schema: object = value
        else:
            text = FileText().convert(value, param, ctx)
            try:
                schema = json.loads(text)
            except ValueError as exc:
                self.fail(f"{os.fspath(value)!r} is not JSON: {exc}", param, ctx)
        problem = schema_problem(schema)
        if problem:
            self.fail(problem, param, ctx)
        return json.dumps(schema, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class RunSettings:
    """The settings one objective runs with; no secrets here, it is stored in the board.

    A field made with `setting(...)` is also a flag of `coop start`, a keyword of
    `coop.run`/`coop.start` and a `COOP_*` variable (see declare.py); the others are decided
    by coop itself."""

    llm: str = setting(
        "openai",
        click.Choice(LLM_CHOICES),
        "openai: any OpenAI-compatible server; offline: the simulated model.",
    )
    model: str = setting(C.DEFAULT_MODEL, help="The model of every role not given its own.")
    planner_model: str = setting(
        "",
        help="The planner's model: task creation, prioritization, the completion check. "
        "Default: --model.",
    )
    worker_model: str = setting(
        "", help="The workers' model: the steps of each task. Default: --model."
    )
    answer_model: str = setting(
        "", help="The model that writes the answer from the results. Default: --model."
    )
    embedding_model: str = setting(C.DEFAULT_EMBEDDING_MODEL)
    base_url: str | None = None
    initial_task: str = setting(C.DEFAULT_INITIAL_TASK)
    max_tasks: int = setting(
        C.DEFAULT_MAX_TASKS, click.IntRange(min=1), "Stop after this many completed tasks."
    )
    lease_ttl: float = setting(
        C.DEFAULT_LEASE_TTL,
        click.FloatRange(min=1.0),
        "Seconds a silent worker keeps a task before it is requeued.",
    )
    planner_ttl: float = setting(
        C.DEFAULT_PLANNER_TTL,
        click.FloatRange(min=1.0),
        "Seconds a silent planner keeps its claim before a standby (--standby) takes over.",
    )
    max_attempts: int = setting(
        C.DEFAULT_MAX_ATTEMPTS, click.IntRange(min=1), "Attempts before a task is dead-lettered."
    )
    retry_delay: float = setting(
        C.DEFAULT_RETRY_DELAY,
        click.FloatRange(min=0.0),
        "Seconds before a failed task's second attempt; each attempt after waits twice as long.",
    )
    context_k: int = setting(
        C.DEFAULT_CONTEXT_K, click.IntRange(min=0), "Results from memory given to each execution."
    )
    max_prompt_tokens: int = setting(
        C.DEFAULT_MAX_PROMPT_TOKENS, click.IntRange(min=1), "Token budget of one prompt."
    )
    max_completion_tokens: int = C.DEFAULT_MAX_COMPLETION_TOKENS
    model_timeout: float = setting(
        C.DEFAULT_MODEL_TIMEOUT,
        click.FloatRange(min=1.0),
        "Seconds to wait for one answer from the model server before retrying.",
    )
    planner_calls: int = setting(
        C.DEFAULT_PLANNER_CALLS,
        click.IntRange(min=1),
        "Most task-creation calls in flight at once; demand decides how many are made.",
    )
    exact_tokens: bool = True  # False: the planner had no tokenizer; all estimate
    tokenizer: str = setting(
        "",
        metavar="FILE|NAME",
        help="An open model's tokenizer.json (or Hugging Face name in the local cache) for "
        "exact prompt fitting; needs coop[tokenizers]. Default: tiktoken's, else an estimate.",
    )
    tools: tuple[str, ...] = setting(
        (),
        ToolNames(TOOL_CHOICES),
        f"Built-in tools every worker offers the model: {', '.join(TOOL_CHOICES)}.",
        metavar="A,B",
    )
    max_steps: int = setting(
        C.DEFAULT_MAX_STEPS, click.IntRange(min=1), "Model and tool calls one task may take."
    )
    sandbox: str = setting(
        "auto",
        click.Choice(SANDBOX_CHOICES),
        "Isolation for the python tool: the strongest the node has, or exactly the one named.",
    )
    scratch_mb: int = setting(
        C.DEFAULT_SCRATCH_MB,
        click.IntRange(min=1),
        "MiB a python call may write: its /tmp and its /dev/shm, each (RAM, gone with the call).",
    )
    fetch_allow: tuple[str, ...] = setting(
        (),
        multiple=True,
        metavar="CIDR",
        help="A network the fetch tool may reach though not public (repeatable).",
    )
    rpm: int = setting(
        0, click.IntRange(min=0), "Model requests per minute across the cluster (0: no limit)."
    )
    tpm: int = setting(
        0, click.IntRange(min=0), "Model tokens per minute across the cluster (0: no limit)."
    )
    max_tokens: int = setting(
        0,
        click.IntRange(min=0),
        "Stop when the objective has used this many tokens (0: no cap).",
    )
    max_cost: float = setting(
        0.0,
        click.FloatRange(min=0.0),
        "Stop when the objective has cost this many USD (0: no cap); prices from "
        "the built-in table or COOP_PRICES.",
        show_default=False,
    )
    max_minutes: float = setting(
        0.0,
        click.FloatRange(min=0.0),
        "Stop after this many minutes of planning.",
        show_default=False,
    )
    synthesis_reserve: float = setting(
        C.DEFAULT_SYNTHESIS_RESERVE,
        click.FloatRange(min=0.0, max=1.0, max_open=True),
        "Share of --max-tokens and --max-cost no task may use: kept for writing the answer.",
    )
    approve: bool = setting(
        False,
        flag=True,
        help="New tasks wait for a person: `coop approve`, or a prompt in this terminal.",
    )
    prices: tuple[float, float, float] = (0.0, 0.0, 0.0)  # USD per 1M: in, out, embedding
    role_prices: tuple[tuple[str, float, float], ...] = ()  # (role, in, out): its own model's
    memory: str = setting(
        "cluster",
        click.Choice(C.MEMORY_CHOICES),
        "Where results are shared: coop's in-cluster store, a Weaviate server "
        "(WEAVIATE_URL, WEAVIATE_API_KEY) or embedded Weaviate.",
    )
    weaviate_url: str | None = None  # WEAVIATE_URL when the objective was created, redacted
    instructions: str = setting(
        "",
        FileText(),
        "A file of instructions every agent follows (house style, language, constraints, "
        "sources): put in every planner and worker prompt.",
        metavar="FILE",
    )
    answer_schema: str = setting(
        "",
        SchemaFile(),
        "A JSON Schema the answer must match: written as JSON (structured outputs where the "
        "server has them), checked, asked again once if it does not match.",
        metavar="FILE.json",
    )
    weaviate_collection: str = setting(
        C.DEFAULT_COLLECTION,
        help="Weaviate collection holding every objective's results, one tenant each.",
    )

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
        """What no one flag's type can check: names, networks, and settings together (the
        types of declare.py checked each value as it was given)."""
        if not _COLLECTION.fullmatch(self.weaviate_collection):
            raise CoopError(
                f"bad Weaviate collection name {self.weaviate_collection!r}: a capital letter "
                "first, then letters, digits or _ (e.g. CoopResult)"
            )
        for flag, name in (("--model", self.model), ("--embedding-model", self.embedding_model)):
            if not name.strip():
                raise CoopError(f"{flag} is empty: name the model the server should use")
        for net in self.fetch_allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise CoopError(f"--fetch-allow {net!r} is not a network like 10.0.0.0/8") from None
        if self.instructions:
            self._fit_instructions()
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

    def _fit_instructions(self) -> None:
        """Instructions go in every prompt: they may take half of what context has of it."""
        from coop import tokens  # tiktoken, only when there are instructions to count

        room = (self.max_prompt_tokens - self.max_completion_tokens) // 2
        size = tokens.estimating(self.model).count(self.instructions)
        if size > room:
            raise CoopError(
                f"--instructions is about {size} tokens; at most {room} fit in a prompt with "
                f"--max-prompt-tokens {self.max_prompt_tokens}: shorten the file"
            )


class Resources(click.ParamType):  # type: ignore[type-arg]
    """`'{"GPU": 1}'` (or a dict) as Ray resources: a JSON object of positive numbers."""

    name = "resources"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            raw = json.loads(value) if isinstance(value, str) else value
            amounts = {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        except (ValueError, TypeError):
            amounts = {}
        if not amounts or min(amounts.values()) <= 0:
            self.fail("""a JSON object of positive numbers, like '{"GPU": 1}'""", param, ctx)
        return amounts


@dataclass(frozen=True)
class NodeSettings:
    """What a `coop` process brings to the cluster besides the run's settings: its MCP
    servers, its Python tools, its named capabilities, and where the cluster is. Not stored
    in the board."""

    mcp: str | None = setting(
        None,
        click.Path(dir_okay=False),
        "MCP servers for this node's workers: an mcpServers JSON file (stdio or url).",
        metavar="FILE",
        envvar=None,
    )
    tool: tuple[str, ...] = setting(
        (),
        multiple=True,
        metavar="MODULE:FUNCTION",
        help="A Python function this node's workers offer as a tool, imported by its path, "
        "e.g. mypkg.tools:search (repeatable; a @coop.tool keeps its name and placement). "
        "From Python, give the functions themselves in tools=.",
    )
    cap: tuple[str, ...] = setting(
        (),
        multiple=True,
        metavar="NAME",
        help="A capability this node's workers have, e.g. gpu or browser (repeatable).",
        envvar=None,
    )
    address: str | None = setting(
        None,
        metavar="HOST:PORT",
        help="Ray cluster to use [env RAY_ADDRESS].",
        envvar="RAY_ADDRESS",
    )


@dataclass(frozen=True)
class StartSettings(NodeSettings):
    """`coop start`'s own settings (`coop.run`, `coop.start`): this process's part."""

    resume: bool = setting(
        False,
        flag=True,
        help="Continue an objective (id, prefix or text), live or from its journal.",
        envvar=None,
    )
    standby: bool = setting(
        False,
        flag=True,
        help="If another planner runs this objective, wait and take over when it stops.",
        envvar=None,
    )
    workers: int = setting(
        C.DEFAULT_WORKERS, click.IntRange(min=0), "Worker loops in this process; 0 plans only."
    )
    concurrency: int = setting(
        C.DEFAULT_LOCAL_CONCURRENCY, click.IntRange(min=1), "Tasks in flight per local worker."
    )
    otlp_endpoint: str | None = setting(
        None,
        metavar="URL",
        help="OTLP/HTTP collector for the objective's trace, e.g. http://localhost:6006 "
        "[env OTEL_EXPORTER_OTLP_ENDPOINT; headers from OTEL_EXPORTER_OTLP_HEADERS].",
        envvar=None,
    )
    otlp_content: bool = setting(
        False,
        flag=True,
        help="Put the model's replies, tool outputs and the answer on the spans (the journal "
        "holds no prompts); scrubbed of secrets. Default: counts, names and times only.",
        envvar=None,
    )


@dataclass(frozen=True)
class JoinSettings(NodeSettings):
    """`coop join`'s settings (`coop.join`): one worker of this process on an objective."""

    concurrency: int = setting(
        C.DEFAULT_CONCURRENCY, click.IntRange(min=1), "Tasks in flight in this worker."
    )
    node: str | None = setting(
        None,
        metavar="NODE_ID",
        help="Run the worker on this Ray node (id or unique prefix, see `ray list nodes`); "
        "default: the node this command runs on.",
        envvar=None,
    )
    tools: tuple[str, ...] = setting(
        (),
        ToolNames(TOOL_CHOICES),
        "Built-in tools this worker offers besides the run's.",
        metavar="A,B",
    )
    resources: dict[str, float] | None = setting(
        None,
        Resources(),
        "Ray resources the worker needs, e.g. '{\"GPU\": 1}': it runs where they are.",
        metavar="JSON",
        envvar=None,
    )
    sandbox: str | None = setting(
        None,
        click.Choice(SANDBOX_CHOICES),
        "Isolation for this worker's python tool (default: the run's).",
        envvar=None,
    )


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

    def priced(model: str) -> tuple[float, float] | None:
        """Its price; under a cost cap, one it lacks is refused (its calls would cost 0)."""
        price = _price(table, model)
        if settings.max_cost and price is None:
            raise CoopError(
                f"--max-cost needs a price for {model}: set COOP_PRICES="
                f"'{{\"{model}\": [usd_per_1M_input, usd_per_1M_output]}}'"
            )
        return price

    chat, embed = _price(table, settings.model), priced(settings.embedding_model)
    roles: list[tuple[str, float, float]] = []
    for role, model in settings.models().items():
        price = priced(model)
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
