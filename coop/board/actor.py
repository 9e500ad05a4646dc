"""The board: one detached Ray actor per objective holding its task list.

A Ray actor runs one method at a time, so each method below is atomic; that alone removes
BabyAGI's `is_empty()`-then-`popleft()` race. This class is the facade: it journals and
delegates. What it holds is its books (books.py): the parts, each with its own invariant —
tasks (tasks.py), leases with fencing tokens (leases.py), budget (budget.py), rate limit
(ratelimit.py), the planner's acknowledgements (acks.py), the planner claim (claim.py), the
worker roster (roster.py), the step ledger (ledger.py), workspace files (files.py), answers
(answers.py), tool statistics (toolstats.py). What a call decides is the desks': the workers'
side (workers.py), the planner's (planning.py), the housekeeping both start with (desk.py);
most of the board's methods are a desk's own, signature and docstring (`_on`).

Every change is a typed event (coop/events.py), written to the journal before the books apply
it (`_emit`) and applied by the same handlers when the board is rebuilt from its journal, so
replay cannot drift from life. A call that changes the board carries a request id (`invoke`):
its events and its reply commit together, so a call Ray retries counts once.

The class is plain Python: `cluster.named_actor` makes it an actor, and `BoardClient.local`
drives it in-process (tests, and the read-only journal view).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from coop import cluster, journal
from coop import events as ev
from coop.board import views
from coop.board.bell import GROUP, RINGS, WAITERS, Bell, Wake
from coop.board.books import Books
from coop.board.desk import NO_ROOM, Desk
from coop.board.faults import CRASH_ENV, crash_once, fault_hook
from coop.board.planning import PlannerDesk
from coop.board.workers import WorkerDesk
from coop.config import RunSettings
from coop.journal import Event, Journal, JournalError, journal_path
from coop.metrics import BoardMetrics
from coop.secrets import scrub_data
from coop.types import Answer, Objective, Pulse, Reason, Result, Snapshot, State

log = logging.getLogger(__name__)
__all__ = ["CRASH_ENV", "NO_ROOM", "Board"]
P = ParamSpec("P")
R = TypeVar("R")


def _on(desk: str, fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Board, P], R]:
    """A board method that is `fn` of the board's desk named `desk` (its name, signature and
    docstring, for mypy and `inspect` alike), called on the desk the board holds now (a
    rebuild makes new ones)."""

    def method(self: Board, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return fn(getattr(self, desk), *args, **kwargs)

    return functools.update_wrapper(method, fn)


class Board:
    GROUPS: ClassVar[dict[str, int]] = {GROUP: WAITERS}
    """Ray concurrency groups beside the default one (one thread, every call but the wait)."""
    MUTATING = frozenset(
        {
            "add",
            "approve",
            "drop",
            "record_progress",
            "record_unreadable",
            "reorder",
            "amend",
            "record_answer",
            "stop",
            "lease",
            "heartbeat",
            "complete",
            "complete_and_lease",
            "fail",
            "release",
            "record_usage",
            "step",
            "replayed",
            "write_file",
            "claim_planner",
            "release_planner",
        }
    )
    """The calls that change the board: each carries a request id (`invoke`)."""

    def __init__(
        self,
        objective_id: str,
        objective: str,
        settings: RunSettings,
        nonce: str,
        state_dir: str | None = None,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        restarted: bool | None = None,
    ) -> None:
        """`restarted`: this board takes over from one whose process died mid-run (default:
        whether Ray restarted this actor), so the planner claim and the leases held then come
        back, each with a fresh grace period, instead of ending."""
        self.objective_id = objective_id
        self.objective = objective
        self._settings = settings  # as created: a rebuild replays the amendments on them
        self.nonce = nonce  # tells the creator of this actor apart from later openers
        self.readonly = readonly
        self._clock = clock
        self.created = clock()
        self._metrics = BoardMetrics(objective_id)
        self._crash_after = fault_hook()
        self._bells = {wake: Bell() for wake in Wake}  # outlive a rebuild: waiters hold them
        self._reset()
        self._journal: Journal | None = None
        self.state_dir = state_dir
        if state_dir is not None:
            self._journal = Journal(
                journal_path(journal.state_dir(state_dir), objective_id),
                objective_id,
                create={"objective": objective, "settings": asdict(settings)},
                readonly=readonly,
            )
            self.created = self._journal.info.created
            self._replay(cluster.restarted() if restarted is None else restarted)

    def _reset(self) -> None:
        """Empty books, as before the first event: the journal's replay fills them."""
        self._books = books = Books(self._settings, self._clock, self._metrics)
        self._desk = Desk(books, self._emit)
        self._workers = WorkerDesk(
            books, self._emit, lambda: self._journal_ok, self._bells[Wake.WORK].ring
        )
        self._planning = PlannerDesk(books, self._emit)
        self._journal_ok = True

    def __repr__(self) -> str:  # the dashboard's and the log prefix's name for this actor
        return cluster.actor_name(self.objective_id, "board")

    # -- events: the only way state changes ----------------------------------------------

    def _emit(self, event: ev.Event) -> None:
        data = ev.encode(event)
        scrubbed = scrub_data(data)  # what a tool, a model or a page let by is not kept
        if scrubbed != data:
            event = ev.decode(event.KIND, scrubbed)
        if self._journal is not None:
            try:
                self._journal.append(event.KIND, scrubbed)
            except JournalError:
                self._journal_ok = False  # refuse new leases until a write succeeds again
                raise
            self._journal_ok = True
        self._books.apply(event)
        for wake, kinds in RINGS.items():
            if event.KIND in kinds:
                self._bells[wake].ring()

    def _replay(self, restarted: bool) -> None:
        """Rebuild from the journal. The claim and leases held when the journal ends either
        come back with a fresh grace period (`restarted`: their holders may be alive, waiting
        on this board) or end: a fresh board after a whole-cluster restart, or a reader."""
        assert self._journal is not None
        books = self._books
        count = 0
        for event in self._journal.events():
            books.apply(ev.decode(event.kind, event.data))
            count += 1
        now = self._clock()
        if restarted and not self.readonly:
            books.claim.restore(now)
            books.leases.extend(now + books.settings.lease_ttl)
        else:
            books.claim.release()
            held = books.leases.ids()
            if held:  # their tasks go back to the front
                if self._journal.readonly:
                    books.apply(ev.Expired(held))
                else:
                    self._emit(ev.Expired(held))
        if count:
            log.info("board %s rebuilt from %d journal events", self.objective_id, count)

    # -- calls: each one transaction, answered once -----------------------------------------

    def invoke(self, rid: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run the board's `method`, as the call with request id `rid` (made once by its
        client; "" for reads). Its events and its reply commit together: a call Ray retries
        after this board's process died is answered with its first reply, its effect counted
        once; one whose events never committed runs afresh (its process took them along)."""
        call = getattr(self, method)
        if not rid or self._journal is None or self.readonly:
            return call(*args, **kwargs)
        done, reply = self._journal.reply(rid)
        if done:
            return reply
        self._journal.begin()
        try:
            reply = call(*args, **kwargs)
        except JournalError:
            # all or nothing: a completion carries its task's usage, and its worker's retry
            # (a new call) must not charge what a half-written first try kept
            self._journal.rollback()
            self._rebuild()
            raise
        except BaseException:
            self._end_call("", None)  # what it applied is kept; a failure is not a reply
            raise
        self._end_call(rid, reply)
        if method in self._crash_after:  # the test build's fault hook (faults.py)
            crash_once(method)
        return reply

    def _end_call(self, rid: str, reply: Any) -> None:
        """Commit a call; if its events could not all be committed, what this board holds is
        no longer its journal's: it is rebuilt from the journal and the call fails."""
        assert self._journal is not None
        try:
            if self._journal.commit(rid, reply):
                return
            cause = JournalError(f"cannot write the journal {self._journal.path}: rolled back")
        except JournalError as exc:
            cause = exc
        self._rebuild()
        raise cause

    def _rebuild(self) -> None:
        """What this board holds is no longer its journal's: hold what the journal holds
        (leases and claim kept, their holders are alive)."""
        self._reset()
        self._replay(restarted=True)
        self._journal_ok = False  # refuse new leases until a write succeeds again

    # -- reading ------------------------------------------------------------------------

    def describe(self) -> Objective:
        self._desk.settle()
        b = self._books
        return Objective(
            self.objective_id, self.objective, self.created, b.state, b.reason, self.nonce
        )

    def run_settings(self) -> RunSettings:
        return self._books.settings

    def storage(self) -> str | None:
        """The state dir on the head node holding this objective's journal and memory."""
        return self.state_dir

    def state(self) -> tuple[State, Reason | None, str]:
        self._desk.settle()
        return self._books.state, self._books.reason, self._books.detail

    def results(self, since: int = 0, limit: int | None = None) -> list[Result]:
        """Completions in order, from sequence number `since` on."""
        end = None if limit is None else since + limit
        return self._books.results[since:end]

    def snapshot(self) -> Snapshot:
        self._desk.settle()
        return views.snapshot(self._books, self.objective_id, self.objective, self.created)

    def events(self, since: int = 0, limit: int = 1000) -> list[Event]:
        """The tape: journal events after sequence number `since` (none without a journal)."""
        if self._journal is None:
            return []
        return list(itertools.islice(self._journal.events(since), limit))

    def recent_events(self, count: int) -> list[Event]:
        return self._journal.tail(count) if self._journal is not None else []

    def pulse(self) -> Pulse:
        self._desk.settle()
        return views.pulse(self._books)

    def answers(self) -> list[Answer]:
        """Every revision of the objective's answer, oldest first."""
        return self._books.answers.all()

    @cluster.in_group(GROUP)
    def wait(self, wake: Wake, seen: int, timeout: float) -> int:
        """Once the count of the bell of `wake` differs from `seen` (bell.py), or after
        `timeout` seconds: the count. Runs on a thread of its own, so it reads nothing of the
        books."""
        return self._bells[wake].wait(seen, timeout)

    def stop(self, reason: Reason = Reason.STOPPED, detail: str = "") -> State:
        self._desk.settle()
        self._desk.stop(reason, detail)
        return self._books.state

    # -- the planner's side (planning.py) and the workers' (workers.py) ------------------

    claim_planner = _on("_planning", PlannerDesk.claim_planner)
    release_planner = _on("_planning", PlannerDesk.release_planner)
    add = _on("_planning", PlannerDesk.add)
    awaiting_approval = _on("_planning", PlannerDesk.awaiting_approval)
    approve = _on("_planning", PlannerDesk.approve)
    drop = _on("_planning", PlannerDesk.drop)
    record_progress = _on("_planning", PlannerDesk.record_progress)
    record_unreadable = _on("_planning", PlannerDesk.record_unreadable)
    amend = _on("_planning", PlannerDesk.amend)
    record_answer = _on("_planning", PlannerDesk.record_answer)
    reorder = _on("_planning", PlannerDesk.reorder)
    plan_view = _on("_planning", PlannerDesk.plan_view)
    pending_window = _on("_planning", PlannerDesk.pending_window)
    task_texts = _on("_planning", PlannerDesk.task_texts)
    budget_short = _on("_planning", PlannerDesk.budget_short)

    lease = _on("_workers", WorkerDesk.lease)
    heartbeat = _on("_workers", WorkerDesk.heartbeat)
    complete = _on("_workers", WorkerDesk.complete)
    complete_and_lease = _on("_workers", WorkerDesk.complete_and_lease)
    fail = _on("_workers", WorkerDesk.fail)
    release = _on("_workers", WorkerDesk.release)
    record_usage = _on("_workers", WorkerDesk.record_usage)
    steps = _on("_workers", WorkerDesk.steps)
    step = _on("_workers", WorkerDesk.step)
    replayed = _on("_workers", WorkerDesk.replayed)
    write_file = _on("_workers", WorkerDesk.write_file)
    read_file = _on("_workers", WorkerDesk.read_file)
    list_files = _on("_workers", WorkerDesk.list_files)
    acquire = _on("_workers", WorkerDesk.acquire)
