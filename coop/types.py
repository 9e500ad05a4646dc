"""The records that cross process boundaries: plain dataclasses, cheap to pickle through Ray."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CoopError(Exception):
    """A failure the user can act on: the CLI prints it as one line, with no traceback."""


class State(str, enum.Enum):
    """Lifecycle of an objective. STOPPING grants no new leases but accepts in-flight results."""

    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    DORMANT = "dormant"  # journaled, but no board is alive: `coop start --resume` revives it


class Reason(str, enum.Enum):
    """Why an objective stopped."""

    DONE = "done"
    MAX_TASKS = "max-tasks"
    STOPPED = "stopped by user"
    FAILED = "failed"


class Outcome(str, enum.Enum):
    """What the board did with a completion or a failure report."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # already completed under this token: an idempotent retry
    STALE = "stale"  # the lease was lost and the task belongs to someone else now
    REQUEUED = "requeued"
    DEAD = "dead-lettered"


class Kind(str, enum.Enum):
    """The three agents of BabyAGI's contract; usage is accounted per kind."""

    EXECUTION = "execution"
    CREATION = "creation"
    PRIORITIZATION = "prioritization"


@dataclass
class Task:
    id: int
    text: str
    parent: int | None = None
    attempts: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class Lease:
    """A time-limited right to work on a task; `token` fences out holders of older leases."""

    task: Task
    token: int
    worker: str
    ttl: float


@dataclass(frozen=True)
class Result:
    task_id: int
    task: str
    text: str
    worker: str
    seq: int  # order of completion, the planner's cursor
    finished_at: float


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens


@dataclass
class WorkerStats:
    worker: str
    completed: int = 0
    failed: int = 0
    last_seen: float = 0.0
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class AddReport:
    added: list[Task]
    duplicates: list[str]


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
