"""The planner's demand policy, a pure function: from what the board shows and what is in
flight (a `Situation`), which model calls to start now (a `Decision`). The coordinator
(loop.py) gathers the one and carries out the other; keeping the arithmetic here, free of
threads and the board, lets each rule be tested as a row of a table.

* **creation**: at a cap (tasks or budget) no call is made and the claimed completions are
  acknowledged as they are. Otherwise the want is idle worker slots plus about one queued
  task per slot, less the tasks ready and those the creation calls in flight will bring
  (`expected` each); the queued completions are split over as many calls as that want needs,
  up to `planner_calls` in flight, each asking for its share. With the want met, one call
  plans a fuller batch in the background when the queue holds a full batch or nothing is
  leased. After `BARREN` creation calls in a row that brought no task, calls started for the
  want would bring none sooner: creation runs only in the background until one brings tasks;
* **prioritization**: one call at a time, when the head of the list holds at least two tasks
  the last one did not order and more of the tasks it orders than a round of slots takes
  (and at least two) will still wait when its answer lands: the free slots take some at
  once, and while the call runs about `turnover` more are leased in the order they have. An
  order of tasks leased before it lands changes nothing, and one of tasks the next round
  leases all at once changes only which starts a moment sooner: the order decides what runs
  first only for tasks that wait a round or more;
* **the completion check**: every `CHECK_EVERY` completions, but not while nothing is ready
  and either nothing is leased (the calls in flight refill the list, or it runs dry and is
  checked then) or nothing is being planned (the leased tasks' results refill it, or it runs
  dry: a verdict now would save no task, the running ones are paid for); and when the list
  runs dry (at most once per count of completions; still dry after that check, a fresh plan
  instead);
* **waiting**: only tasks no live worker can do are left and nothing is in flight;
* **the budget**: under a cap on tokens or cost, no call starts past what the caps' share for
  tasks allows (`affordable`, less the calls in flight): creation first, then prioritization,
  then the check. With none allowed, claimed completions are acknowledged as at a cap, and
  the board ends a dry run there. The answer's reserve is never a planner call's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from coop import constants as C
from coop.planner.jobs import Job

ASK_MAX = 10
"""Most tasks one creation prompt asks for when the queue is short."""
BARREN = 2
"""Creation calls in a row that brought no task before the want stops starting calls. The
model says the plan is running out (as at the end of every plan): a call started for each
completion as it comes would bring no task sooner, only more calls. The completions are
folded into calls in the background instead (a full batch, or what is queued once nothing
is leased, so no more are coming), and the first that brings a task ends it."""


@dataclass(frozen=True)
class Situation:
    """One turn's inputs: the board's numbers (as `PlanView` says them) and the planner's."""

    room: int  # tasks that may still be added (task cap, budget)
    slots: int  # tasks the live workers may hold at once
    leased: int
    ready: int  # pending tasks a worker may take now
    queued: int = 0  # completions claimed and waiting for a creation call
    creating: int = 0  # creation calls in flight
    busy: frozenset[Job] = frozenset()  # the kinds of job in flight, creation included
    expected: float = 3.0  # tasks a creation call is expected to bring
    calls: int = 4  # most creation calls in flight (`--planner-calls`)
    unordered: int = 0  # pending tasks at the head the last prioritization did not see
    turnover: float = 0.0  # tasks leased while a prioritization call runs (rate × its duration)
    barren: int = 0  # creation calls in a row, the last to return, that brought no task
    completed: int = 0
    dry: bool = False  # nothing pending, leased or unplanned
    stuck: int = 0  # pending tasks no live worker can do
    milestone: int = 0  # completed // CHECK_EVERY at the last periodic check
    checked: int = -1  # completions at the last check of a dry list (-1: none yet)
    affordable: int | None = None  # planner calls the budget allows (None: no cap)


@dataclass(frozen=True)
class Creation:
    """One creation call: the next `size` queued completions, asking for `wanted` tasks
    (None: the prompt names no number, the call is in the background)."""

    size: int
    wanted: int | None


@dataclass(frozen=True)
class Decision:
    acknowledge: bool = False  # every queued completion, without a call: a cap is reached
    creations: tuple[Creation, ...] = field(default_factory=tuple)
    prioritize: bool = False
    check: bool = False
    dry_check: bool = False  # the check is of a dry list (remembered: one per count)
    replan: bool = False  # dry, and already checked at this count
    waiting: bool = False  # only tasks no live worker can do are left


def decide(s: Situation) -> Decision:
    """The calls to start now in situation `s`."""
    broke = s.affordable is not None and s.affordable <= 0
    acknowledge = s.queued > 0 and (s.room <= 0 or broke)
    queued = 0 if acknowledge else s.queued
    in_flight = s.creating + len(s.busy - {Job.CREATE})  # their spend is not yet on the board
    left = math.inf if s.affordable is None else s.affordable - in_flight
    creations = _creations(s, queued, left)
    left -= len(creations)
    queued -= sum(c.size for c in creations)
    creating = s.creating + len(creations)
    busy = s.busy | ({Job.CREATE} if creations else set())
    free = max(0, s.slots - s.leased)
    waiting = min(s.ready, C.PRIORITIZE_WINDOW) - free - s.turnover  # ordered, still there after
    beyond = waiting >= max(2, s.slots + 1)  # more than the next round of slots takes at once
    prioritize = Job.PRIORITIZE not in busy and s.unordered >= 2 and beyond and left >= 1
    left -= prioritize
    stuck = bool(s.stuck) and not (s.ready or s.leased or queued or busy)
    planning = bool(queued or creating or Job.REPLAN in busy)
    between = not s.ready and not (s.leased and planning)  # refilled by what is under way, or dry
    due = s.completed // C.CHECK_EVERY > s.milestone and not between
    dry = s.dry and not queued and not creating and Job.REPLAN not in busy
    check = Job.CHECK not in busy and (due or (dry and s.completed != s.checked)) and left >= 1
    replan = not check and dry and Job.CHECK not in busy and s.completed == s.checked
    replan = replan and left >= 1
    return Decision(
        acknowledge=acknowledge,
        creations=creations,
        prioritize=prioritize,
        check=check,
        dry_check=check and dry,
        replan=replan,
        waiting=stuck,
    )


def _creations(s: Situation, queued: int, left: float) -> tuple[Creation, ...]:
    """The creation calls for `queued` completions: as many as the want needs, or one in the
    background; at most `left`, the calls the budget allows."""
    creating = s.creating
    most = s.calls if left == math.inf else min(s.calls, creating + int(left))  # in flight
    buffer = max(s.slots, 1)  # about one queued task per slot, so none waits on a call
    want = min(max(0, s.slots - s.leased) + buffer - s.ready, s.room) - creating * s.expected
    out: list[Creation] = []
    while queued and creating < most:
        urgent = want > 0 and s.barren < BARREN
        background = not creating and (queued >= C.PLANNER_BATCH or not s.leased)
        if not (urgent or background):
            break
        free = most - creating
        calls = min(free, max(1, math.ceil(want / s.expected))) if urgent else 1
        size = min(C.PLANNER_BATCH, max(1, math.ceil(queued / calls)), queued)
        wanted = min(ASK_MAX, max(1, math.ceil(want / calls))) if urgent else None
        out.append(Creation(size, wanted))
        queued -= size
        creating += 1
        want -= s.expected
    return tuple(out)
