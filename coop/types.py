"""The records that cross process boundaries: plain dataclasses and enums, cheap to pickle
through Ray."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from coop.config import RunSettings


class State(str, enum.Enum):
    """Lifecycle of an objective. STOPPING grants no new leases but accepts in-flight results."""

    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    DORMANT = "dormant"  # journaled, but no board is alive: `coop start --resume` revives it


class Reason(str, enum.Enum):
    """Why an objective stopped: a closed set, each with its own exit code."""

    DONE = "done"
    MAX_TASKS = "max-tasks"
    MAX_TOKENS = "max-tokens"
    MAX_COST = "max-cost"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    LOOP = "loop"
    STOPPED = "stopped by user"
    FAILED = "failed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]


EXIT_CODES = {
    Reason.DONE: 0,
    Reason.FAILED: 1,
    Reason.MAX_TASKS: 3,
    Reason.MAX_TOKENS: 4,
    Reason.MAX_COST: 5,
    Reason.TIMEOUT: 6,
    Reason.STALLED: 7,
    Reason.LOOP: 8,
    Reason.STOPPED: 9,
}
"""2 is click's for bad usage; 130 is an interrupt."""


class Outcome(str, enum.Enum):
    """What the board did with a completion or a failure report."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # already completed under this token: an idempotent retry
    STALE = "stale"  # the lease was lost and the task belongs to someone else now
    REQUEUED = "requeued"
    DEAD = "dead-lettered"


class EventKind(str, enum.Enum):
    """Every kind of change a board journals: one `_on_<value>` handler each in the actor,
    one line each on the tape. The values are what the journal stores."""

    ADDED = "added"
    LEASED = "leased"
    EXPIRED = "expired"
    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    REORDERED = "reordered"
    PLANNED = "planned"
    STOPPING = "stopping"
    USAGE = "usage"
    APPROVED = "approved"
    DROPPED = "dropped"
    PROGRESS = "progress"
    PLANNER = "planner"
    ANSWER = "answer"
    REOPENED = "reopened"
    TOOL = "tool"
    WROTE = "wrote"
    STEP = "step"
    STARTED = "started"
    REPLAYED = "replayed"
    UNREADABLE = "unreadable"  # a planner's model reply no parser could read

    @property
    def durable(self) -> bool:
        """Events acknowledging paid work or a person's decision: committed with a full sync
        before anyone is told."""
        return self in _DURABLE


_DURABLE = frozenset(
    {
        EventKind.ADDED,
        EventKind.COMPLETED,
        EventKind.FAILED,
        EventKind.STOPPING,
        EventKind.PLANNED,
        EventKind.APPROVED,
        EventKind.DROPPED,
        EventKind.ANSWER,
        EventKind.REOPENED,
        EventKind.WROTE,
        EventKind.STEP,
        EventKind.STARTED,
    }
)


class Refusal(str, enum.Enum):
    """Why the planner refused a proposed line as a task (journaled with the line): what a
    weak model proposes that is not work."""

    PROMPT = "restates the prompt"  # the prompt's own instructions or headings
    PLACEHOLDER = "a placeholder"  # (nothing), None, N/A, [task], ...
    LONG = "too long for a task"  # a paragraph, not one line of work
    OBJECTIVE = "restates the objective"


class Kind(str, enum.Enum):
    """What a model call was for; usage is accounted per kind. The first three are BabyAGI's
    agents; the completion check and the synthesis of the answer are coop's; embeddings are
    memory's."""

    EXECUTION = "execution"
    CREATION = "creation"
    PRIORITIZATION = "prioritization"
    COMPLETION_CHECK = "completion-check"
    SYNTHESIS = "synthesis"
    EMBEDDING = "embedding"


@dataclass
class Task:
    id: int
    text: str
    parent: int | None = None
    attempts: int = 0
    last_error: str = ""
    needs: list[str] = field(default_factory=list)  # capabilities a worker must have to lease it


@dataclass(frozen=True)
class Lease:
    """A time-limited right to work on a task; `token` fences out holders of older leases."""

    task: Task
    token: int
    worker: str
    ttl: float
    attempt: int = 1  # the how-manieth lease of this task
    # a task leased before comes with its step ledger, so resuming costs no call of its own:
    steps: tuple[Step, ...] = ()  # its finished steps, to replay instead of redo
    started: dict[int, str] = field(default_factory=dict)  # unsafe tools begun, never done


@dataclass(frozen=True)
class Result:
    task_id: int
    task: str
    text: str
    worker: str
    seq: int  # order of completion, the planner's cursor
    finished_at: float
    flaw: str = ""  # kept though degenerate after one more try: "repeats itself"…


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # USD, from the run's price table
    estimated: int = 0  # calls charged by estimate: in flight when their worker vanished

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost += cost

    @classmethod
    def total(cls, parts: Iterable[Usage]) -> Usage:
        out = cls()
        for u in parts:
            out.calls += u.calls
            out.prompt_tokens += u.prompt_tokens
            out.completion_tokens += u.completion_tokens
            out.cost += u.cost
            out.estimated += u.estimated
        return out


@dataclass
class WorkerStats:
    worker: str
    completed: int = 0
    failed: int = 0
    first_seen: float = 0.0  # this board's first sight of it (a rebuilt board starts again)
    last_seen: float = 0.0
    usage: Usage = field(default_factory=Usage)
    slots: int = 0  # tasks it may hold at once, as its heartbeat says (0: the planner)
    caps: list[str] = field(default_factory=list)  # what it can do: its tools' and named ones
    sandbox: str = ""  # the isolation its `python` tool runs code in, if it has one
    tool_calls: int = 0

    @property
    def per_minute(self) -> float:
        """Completions per minute while it has been seen working."""
        return self.completed * 60 / max(self.last_seen - self.first_seen, 1.0)


@dataclass
class ToolStats:
    """One tool's calls across the objective."""

    calls: int = 0
    failed: int = 0
    seconds: float = 0.0
    bytes: int = 0  # what the tool answered (UTF-8), before any cut


class StepKind(str, enum.Enum):
    """What a step of a task was: a model call or a tool call. Sent from a worker to the board
    with each step; the journal stores the value."""

    MODEL = "model"
    TOOL = "tool"


@dataclass(frozen=True)
class Step:
    """One finished step of a task, as the step ledger keeps it and a worker replays it: a
    model call (its reply and the tool calls it asked for, and what it cost) or a tool call
    (its output, answering the model's call `call`)."""

    step: int  # numbered from 1 within the task, across its attempts
    kind: StepKind
    text: str = ""
    calls: tuple[tuple[str, str, str], ...] = ()  # model: (id, name, arguments) of each call
    call: str = ""  # tool: the id of the model's call it answers
    tool: str = ""
    ok: bool = True
    prompt: int = 0  # model: tokens the server reported
    completion: int = 0
    latency: float = 0.0
    bytes: int = 0  # tool: what it answered (UTF-8), before any cut


@dataclass
class Replays:
    """Steps a task leased again did not redo: what the step ledger saved."""

    tasks: int = 0
    steps: int = 0
    calls: int = 0  # model calls among them
    tokens: int = 0
    cost: float = 0.0
    unknown: int = 0  # unsafe tool calls whose outcome a dead worker took with it


@dataclass(frozen=True)
class Seat:
    """What a worker tells the board with each heartbeat: the tasks it may hold at once, the
    capabilities it has, and its sandbox."""

    slots: int = 0
    caps: tuple[str, ...] = ()
    sandbox: str = ""


@dataclass(frozen=True)
class AddReport:
    added: list[Task]
    duplicates: list[str]
    repeats: int = 0  # duplicates of work already completed or dead-lettered


@dataclass
class Progress:
    """The planner's ledger, kept on the board so status shows it and a successor inherits it."""

    stalls: int = 0  # batches in a row that brought nothing new (less those that did)
    replans: int = 0
    repeating: int = 0  # batches in a row that only re-proposed completed work
    exact_duplicates: int = 0
    near_duplicates: int = 0
    checks: int = 0  # completion checks asked
    refused: dict[str, int] = field(default_factory=dict)  # proposals refused, by Refusal value
    unreadable: dict[str, int] = field(default_factory=dict)  # replies not understood, by Kind
    flawed: dict[str, int] = field(default_factory=dict)  # results kept though degenerate


@dataclass(frozen=True)
class Answer:
    """The objective's answer, written from the results when a run ends: one revision per run
    (a finished objective continued with a larger cap gets a new one; the old ones are kept)."""

    revision: int = 0  # numbered by the board as it records them: 1, 2…
    text: str = ""  # Markdown; empty when missing
    cited: list[int] = field(default_factory=list)  # task ids it cites that exist
    met: bool | None = None  # the model's judgement of the objective; None when it did not say
    missing: str = ""  # why there is no answer
    at: float = 0.0
    flaw: str = ""  # kept though the model's output is degenerate: "repeats itself"…
    data: str = ""  # with an answer schema: the answer as JSON that matches it
    invalid: str = ""  # with an answer schema: why the answer never matched it (text kept)


@dataclass(frozen=True)
class PlanView:
    """What the planner needs each turn, read in one call so the numbers agree: the state,
    completions nobody has planned from yet, and the demand for new tasks."""

    state: State
    results: list[Result]  # unacknowledged completions from the asked-for one on, in order
    completed: int
    unplanned: int  # completions not yet acknowledged, those above included
    pending: int
    ready: int  # pending tasks a worker may take now (approved, past any retry delay)
    leased: int
    slots: int  # tasks the live workers may hold at once
    room: int  # tasks that may still be added: under the task cap, and the budget (see Budget)
    head: list[int]  # the first pending ids: what workers take next, and prioritization sees
    dry: bool  # nothing pending, leased or unplanned: time to ask whether the objective is met
    capabilities: list[str] = field(default_factory=list)  # what the live workers can do
    stuck: int = 0  # pending tasks no live worker has the capabilities for
    calls: int | None = None  # planner calls the budget still allows (None: no cap; see Budget)


@dataclass(frozen=True)
class ReorderReport:
    moved: int
    unknown: int  # items the model invented: ignored
    stale: bool  # the list changed during the call; the order was merged, not replaced


@dataclass(frozen=True)
class Objective:
    id: str
    text: str
    created: float
    state: State
    reason: Reason | None
    nonce: str  # set by whoever created the board: tells the creator apart from reopeners


@dataclass(frozen=True)
class Pulse:
    """The few numbers of a progress line or a completion check: cheap enough to ask every
    second."""

    state: State
    completed: int
    pending: int
    leased: int
    dead: int
    max_tasks: int
    tokens: int
    cost: float
    unplanned: int  # completions the planner has not yet planned from (not acknowledged)


@dataclass(frozen=True)
class Snapshot:
    """Everything `coop status` shows, read in one actor call so the numbers agree."""

    objective_id: str
    objective: str
    created: float
    state: State
    reason: Reason | None
    detail: str
    llm_label: str
    pending: list[Task]
    leased: list[Lease]
    completed: int
    dead: list[Task]
    unplanned: int
    workers: list[WorkerStats]
    usage: dict[str, Usage]
    planner: str | None
    progress: Progress
    settings: RunSettings
    awaiting: int  # pending tasks waiting for a person's approval
    answer: Answer | None = None  # the newest revision of the answer, once a run has ended
    tools: dict[str, ToolStats] = field(default_factory=dict)
    files: list[tuple[str, int]] = field(default_factory=list)  # the workspace: path, bytes
    lacking: dict[int, list[str]] = field(default_factory=dict)  # task -> what no worker has
    replays: Replays = field(default_factory=Replays)

    @property
    def total(self) -> Usage:
        return Usage.total(self.usage.values())
