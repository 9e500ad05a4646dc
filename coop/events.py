"""The journal's events, one frozen dataclass per kind: what the board writes and what it
replays are the same types, so mypy checks both sides.

An event's fields are the keys of its line on the tape (`coop events --json`); a field listed
in `OMITTED` is left off the line while it holds its default (as coop always wrote it). The
journal stores `encode(event)` and hands back `decode(kind, data)`. Journals of format 1 hold
lines older coops wrote with fewer keys: `upgrade_v1` fills them in, once, when such a journal
is opened for writing (and as it is read, for a reader that may not write it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from coop.types import EventKind

Row = tuple[int, str, int | None, list[str]]
"""A task as added: id, text, parent, what it needs."""


@dataclass(frozen=True)
class Event:
    """The base of every kind below: `KIND` names its line on the tape and its handler."""

    KIND: ClassVar[EventKind]


@dataclass(frozen=True)
class Added(Event):
    KIND = EventKind.ADDED
    tasks: list[Row]
    planned: list[int] | None  # the completions (sequence numbers) this batch planned from
    exact: int  # proposals refused as exact duplicates
    near: int  # ... and as near-duplicates, by the planner itself
    hold: bool  # the tasks wait for a person's approval
    refused: list[tuple[str, str]] = field(default_factory=list)  # (line, why) not tasks
    planned_upto: int | None = None  # format 1, before concurrent planning: all below it


@dataclass(frozen=True)
class Leased(Event):
    KIND = EventKind.LEASED
    id: int
    token: int
    worker: str
    expires: float
    tokens: int  # what the lease reserves of the budget
    cost: float


@dataclass(frozen=True)
class Expired(Event):
    KIND = EventKind.EXPIRED
    ids: list[int]


@dataclass(frozen=True)
class Completed(Event):
    KIND = EventKind.COMPLETED
    id: int
    token: int
    worker: str
    text: str
    at: float
    flaw: str = ""  # what makes the result degenerate, when it was kept all the same


@dataclass(frozen=True)
class Failed(Event):
    KIND = EventKind.FAILED
    id: int
    worker: str
    error: str
    dead: bool
    retry_at: float


@dataclass(frozen=True)
class Released(Event):
    KIND = EventKind.RELEASED
    id: int


@dataclass(frozen=True)
class Reordered(Event):
    KIND = EventKind.REORDERED
    first: list[int]


@dataclass(frozen=True)
class Planned(Event):
    """Format 1 only (before concurrent planning): completions below `upto` were planned."""

    KIND = EventKind.PLANNED
    upto: int


@dataclass(frozen=True)
class Stopping(Event):
    KIND = EventKind.STOPPING
    reason: str
    detail: str


@dataclass(frozen=True)
class Usage(Event):
    KIND = EventKind.USAGE
    worker: str
    kind: str
    prompt: int
    completion: int
    latency: float
    task: int | None
    step: int | None = None
    estimated: bool = False  # charged by its reservation: its worker vanished mid-call


@dataclass(frozen=True)
class Approved(Event):
    KIND = EventKind.APPROVED
    ids: list[int]


@dataclass(frozen=True)
class Dropped(Event):
    KIND = EventKind.DROPPED
    ids: list[int]


@dataclass(frozen=True)
class Progress(Event):
    KIND = EventKind.PROGRESS
    stalls: int
    replans: int
    repeating: int
    checks: int


@dataclass(frozen=True)
class Planner(Event):
    KIND = EventKind.PLANNER
    instance: str
    action: str  # "claimed" or "released"


@dataclass(frozen=True)
class Answer(Event):
    KIND = EventKind.ANSWER
    revision: int
    text: str
    cited: list[int]
    met: bool | None
    missing: str
    at: float
    flaw: str
    data: str  # with an answer schema: the answer as JSON that matches it
    invalid: str  # with an answer schema: why the answer never matched it


@dataclass(frozen=True)
class Reopened(Event):
    KIND = EventKind.REOPENED
    settings: dict[str, Any]  # the caps changed (`RunSettings.REOPENABLE`)
    reopen: bool


@dataclass(frozen=True)
class Tool(Event):
    KIND = EventKind.TOOL
    worker: str
    task: int
    step: int
    tool: str
    ok: bool
    latency: float
    bytes: int


@dataclass(frozen=True)
class Wrote(Event):
    KIND = EventKind.WROTE
    path: str
    content: str
    key: str
    task: int
    worker: str


@dataclass(frozen=True)
class Step(Event):
    """A finished step (the fields of `coop.types.Step`) under the lease it was made in."""

    KIND = EventKind.STEP
    task: int
    token: int
    worker: str
    step: int
    kind: str
    text: str
    calls: list[tuple[str, str, str]]
    call: str
    tool: str
    ok: bool
    prompt: int
    completion: int
    latency: float
    bytes: int


@dataclass(frozen=True)
class Started(Event):
    KIND = EventKind.STARTED
    task: int
    step: int
    tool: str
    worker: str


@dataclass(frozen=True)
class Replayed(Event):
    """What a worker resuming a task did not redo (the fields of `coop.types.Replays`)."""

    KIND = EventKind.REPLAYED
    worker: str
    task: int
    tasks: int
    steps: int
    calls: int
    tokens: int
    cost: float
    unknown: int


@dataclass(frozen=True)
class Unreadable(Event):
    KIND = EventKind.UNREADABLE
    instance: str
    kind: str
    text: str


TYPES: dict[EventKind, type[Event]] = {
    cls.KIND: cls
    for cls in (
        Added,
        Leased,
        Expired,
        Completed,
        Failed,
        Released,
        Reordered,
        Planned,
        Stopping,
        Usage,
        Approved,
        Dropped,
        Progress,
        Planner,
        Answer,
        Reopened,
        Tool,
        Wrote,
        Step,
        Started,
        Replayed,
        Unreadable,
    )
}

OMITTED: dict[type[Event], frozenset[str]] = {
    Added: frozenset({"refused", "planned_upto"}),
    Completed: frozenset({"flaw"}),
    Usage: frozenset({"step", "estimated"}),
}
"""Fields left off the tape while they hold their default."""


_SCALARS = (str, int, float, bool, type(None))


def encode(event: Event) -> dict[str, Any]:
    """An event's line on the tape (without its place and time). Most events (a usage, a
    lease, a completion: several per task) hold scalars only, which need no deep copy: the
    board journals every event, and `asdict`'s copy was a fifth of its time per task."""
    values = vars(event)
    flat = all(isinstance(v, _SCALARS) for v in values.values())
    data = dict(values) if flat else asdict(event)
    for name in OMITTED.get(type(event), ()):
        if not data[name]:
            del data[name]
    return data


def decode(kind: EventKind, data: dict[str, Any]) -> Event:
    """The event a line of the tape (format 2) records."""
    return TYPES[kind](**data)


def upgrade_v1(kind: EventKind, data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 line with the keys its coop may not have written: the defaults it replayed
    them with, stated once, here."""
    missing = {k: v for k, v in _V1_ADDED.get(kind, {}).items() if k not in data}
    data = {**data, **missing}  # after the keys it has: its line on the tape keeps its order
    if kind is EventKind.ADDED and isinstance(data["planned"], int):  # before concurrency
        data["planned_upto"], data["planned"] = data["planned"], None
    if kind is EventKind.USAGE and data["latency"] is None:
        data["latency"] = 0.0
    return data


_V1_ADDED: dict[EventKind, dict[str, Any]] = {
    EventKind.ADDED: {"planned": None, "exact": 0, "near": 0, "hold": False},  # early coops
    EventKind.LEASED: {"tokens": 0, "cost": 0.0},  # before leases reserved budget
    EventKind.USAGE: {"latency": 0.0, "task": None},  # before latency and tasks were kept
    EventKind.TOOL: {"bytes": 0},  # before tool output was measured
    EventKind.ANSWER: {"flaw": "", "data": "", "invalid": ""},  # before marks and schemas
    EventKind.WROTE: {"worker": ""},  # before writes said whose they were
}
