"""The one door to a board: a typed client, and the only code in coop that calls the actor.

Modelled on Ray's own `ray.util.queue.Queue` (a public class over a private actor): every
`ray.get(handle.method.remote(...))` is here, behind methods named as the board's and typed
by the board's own signatures (`lease = _waited(Board.lease)`: mypy checks every call of
`client.lease(...)` against `Board.lease`), returning the dataclasses of `coop.types`.

The same client runs over three targets:

* a live board actor (`BoardClient.of_actor`): what every role uses on a cluster;
* a plain `Board` in this process (`BoardClient.in_process`): the planner and the worker run
  against it in unit tests with no Ray at all. A lock makes each call atomic, as an actor's
  single thread does, and results are copied as if they had crossed a process boundary;
* a `Board` rebuilt read-only from its journal (`registry.reader` makes it): status, events
  and results of an objective with no cluster, through the same interface (`live` is False).

Every call goes through `Board.invoke`, those that change the board with a request id made
here once, so that a call Ray retries on a restarted board counts once.

Errors behave the same over each target: the board's own exceptions (`JournalError`,
`PlannerLost`…) are raised as themselves, not inside Ray's wrapper; a board that cannot be
reached is `BoardUnavailable`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import ray

from coop import cluster
from coop.board.actor import Board
from coop.board.bell import Wake
from coop.board.lookout import Lookout
from coop.errors import CoopError
from coop.journal import Event
from coop.types import Objective, Pulse

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

EVENTS_PAGE = 1000
"""Events fetched per call when reading the whole tape."""
GIVE_UP_POLL = 0.5
"""Seconds between looks, while waiting on the board, at whether this process has given up on
it (`BoardClient.give_up`): how soon a call blocked on a silent connection returns."""


class BoardUnavailable(CoopError):
    """The board actor cannot be reached: dead for good, its cluster gone, or not answering
    within the time asked. `cause` is the one line that says why."""

    def __init__(self, objective_id: str, cause: str) -> None:
        super().__init__(f"the board of {objective_id} is unavailable: {cause}")
        self.cause = cause


def _waited(fn: Callable[Concatenate[Board, P], R]) -> Callable[Concatenate[BoardClient, P], R]:
    """A client method that calls the board's `fn` and returns its answer."""

    def method(self: BoardClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._within(None, fn, *args, **kwargs)

    method.__name__, method.__doc__ = fn.__name__, fn.__doc__
    return method


def _sent(
    fn: Callable[Concatenate[Board, P], object],
) -> Callable[Concatenate[BoardClient, P], None]:
    """A client method that sends the call to the board and does not wait."""

    def method(self: BoardClient, /, *args: P.args, **kwargs: P.kwargs) -> None:
        self._send(fn, *args, **kwargs)

    method.__name__, method.__doc__ = fn.__name__, fn.__doc__
    return method


class BoardClient:
    """Typed access to one objective's board; see the module's docstring."""

    def __init__(
        self,
        objective_id: str,
        *,
        handle: Any = None,
        board: Board | None = None,
        reread: Callable[[], Board] | None = None,
    ):
        assert (handle is None) != (board is None), "a client needs exactly one target"
        self.objective_id = objective_id
        self._handle = handle
        self._board = board
        self._reread = reread
        self._lock = threading.Lock() if board is not None else None
        self._given_up: str | None = None
        self._prefix, self._calls = uuid.uuid4().hex[:16], itertools.count()  # request ids
        self._lookouts = {wake: Lookout(functools.partial(self._ask_bell, wake)) for wake in Wake}

    @classmethod
    def of_actor(cls, objective_id: str, handle: Any) -> BoardClient:
        return cls(objective_id, handle=handle)

    @classmethod
    def in_process(cls, board: Board, reread: Callable[[], Board] | None = None) -> BoardClient:
        """A client of `board`; for a journal view, `reread` rebuilds it from the journal."""
        return cls(board.objective_id, board=board, reread=reread)

    def refresh(self) -> None:
        """A journal view reads its journal again, to follow a run it cannot reach; a live
        board is always current."""
        if self._reread is not None:
            fresh = self._reread()
            assert self._lock is not None
            with self._lock:
                self._board = fresh

    @property
    def live(self) -> bool:
        """True unless this is a read-only view of a journal: the objective can still move."""
        return self._board is None or not self._board.readonly

    def __getstate__(self) -> dict[str, Any]:  # a client travels to worker actors
        if self._board is not None:
            raise TypeError("an in-process board cannot be sent to another process")
        return {"objective_id": self.objective_id, "handle": self._handle}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["objective_id"], handle=state["handle"])  # type: ignore[misc]

    def give_up(self, cause: str) -> None:
        """Stop waiting on the board: every call in progress, and every one after, raises
        `BoardUnavailable(cause)` at once. For a process whose part is over while the board
        may not answer (a planner whose claim lapsed in a partition): Ray's calls over a
        connection the other side has dropped can block for minutes."""
        self._given_up = cause

    # -- transport --------------------------------------------------------------------------

    def _within(
        self,
        timeout: float | None,
        fn: Callable[Concatenate[Board, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        self._check_given_up()
        if self._board is not None:
            assert self._lock is not None
            rid = self._rid(fn.__name__)
            with self._lock:
                out: R = self._board.invoke(rid, fn.__name__, _copy(args), _copy(kwargs))
            return _copy(out)
        answer: R = self._await(self._submit(fn.__name__, args, kwargs), timeout)
        return answer

    def _await(self, ref: Any, timeout: float | None) -> Any:
        """The answer of one call to the actor, looking every GIVE_UP_POLL at `give_up`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = GIVE_UP_POLL if deadline is None else deadline - time.monotonic()
            try:
                return cluster.get(ref, max(0.0, min(left, GIVE_UP_POLL)))
            except ray.exceptions.GetTimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise BoardUnavailable(
                        self.objective_id, f"no answer within {timeout:g}s"
                    ) from None
            except ray.exceptions.RayError as exc:
                raise BoardUnavailable(self.objective_id, cluster.death_cause(exc)) from None
            self._check_given_up()

    def _check_given_up(self) -> None:
        if self._given_up is not None:
            raise BoardUnavailable(self.objective_id, self._given_up)

    def _send(
        self, fn: Callable[Concatenate[Board, P], object], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Fire and forget: the actor runs calls from one caller in the order they were sent,
        so a later call from the same process sees this one's effect."""
        self._check_given_up()
        if self._board is not None:
            try:  # as with an actor: the sender never hears how it went
                self._within(None, fn, *args, **kwargs)
            except Exception as exc:
                log.debug("%s failed on the board: %s", fn.__name__, exc)
            return
        self._submit(fn.__name__, args, kwargs)

    def _submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send one call to the actor."""
        return self._start(
            lambda: self._handle.invoke.remote(self._rid(method), method, args, kwargs)
        )

    def _start(self, send: Callable[[], Any]) -> Any:
        """`send()` a call to the actor. A handle whose cluster is gone (this process shut Ray
        down, or the head went away) makes Ray raise outright: that is `BoardUnavailable`."""
        try:
            return send()
        except Exception as exc:  # RayError, or the ValueError of an unknown actor
            cause = cluster.death_cause(exc) if isinstance(exc, ray.exceptions.RayError) else exc
            raise BoardUnavailable(self.objective_id, str(cause).splitlines()[0]) from None

    def _rid(self, method: str) -> str:
        """A request id for a call to `method`, made once: Ray's retry of the call carries
        the same one, and the board answers it with its first reply. Reads need none."""
        if method not in Board.MUTATING:
            return ""
        return (
            f"{self._prefix}-{next(self._calls)}"  # `next` of a count is atomic: threads share it
        )

    def _ask_bell(self, wake: Wake, seen: int, timeout: float) -> int:
        """`Board.wait`, outside the lock and the request ids: it runs beside the board's
        other calls, and changes nothing."""
        self._check_given_up()
        if self._board is not None:
            return self._board.wait(wake, seen, timeout)
        ref = self._start(lambda: self._handle.wait.remote(wake, seen, timeout))
        count: int = self._await(ref, None)
        return count

    # -- the board's methods, typed by the board's own signatures --------------------------------

    describe = _waited(Board.describe)
    run_settings = _waited(Board.run_settings)
    state = _waited(Board.state)
    results = _waited(Board.results)
    pending_window = _waited(Board.pending_window)
    snapshot = _waited(Board.snapshot)
    events = _waited(Board.events)
    recent_events = _waited(Board.recent_events)
    task_texts = _waited(Board.task_texts)
    awaiting_approval = _waited(Board.awaiting_approval)
    release_planner = _waited(Board.release_planner)
    add = _waited(Board.add)
    approve = _waited(Board.approve)
    drop = _waited(Board.drop)
    record_progress = _waited(Board.record_progress)
    record_unreadable = _waited(Board.record_unreadable)
    reorder = _waited(Board.reorder)
    plan_view = _waited(Board.plan_view)
    amend = _waited(Board.amend)
    budget_short = _waited(Board.budget_short)
    record_answer = _waited(Board.record_answer)
    answers = _waited(Board.answers)
    stop = _waited(Board.stop)
    lease = _waited(Board.lease)
    heartbeat = _waited(Board.heartbeat)
    complete = _waited(Board.complete)
    complete_and_lease = _waited(Board.complete_and_lease)
    fail = _waited(Board.fail)
    release = _waited(Board.release)
    acquire = _waited(Board.acquire)
    read_file = _waited(Board.read_file)
    write_file = _waited(Board.write_file)
    list_files = _waited(Board.list_files)
    record_usage = _sent(Board.record_usage)
    """Settles a model call without waiting for the board (calls from one process keep
    their order)."""
    steps = _waited(Board.steps)
    step = _waited(Board.step)
    last_step = _sent(Board.step)
    """A task's last step, not waited for: its completion, sent next, follows it in order."""
    replayed = _sent(Board.replayed)

    # -- conveniences over them -------------------------------------------------------------------

    def storage(self) -> Path:
        """The state dir on the head node (where the journal and the built-in memory live)."""
        where = self._within(None, Board.storage)
        if where is None:
            raise CoopError(f"the board of {self.objective_id} keeps no files")
        return Path(where)

    def claim_planner(self, instance: str, timeout: float | None = None) -> str | None:
        """`Board.claim_planner`; a renewal with no answer in `timeout` is `BoardUnavailable`
        (the planner counts how long its claim has gone unrenewed)."""
        return self._within(timeout, Board.claim_planner, instance)

    def pulse(self, timeout: float | None = None) -> Pulse:
        return self._within(timeout, Board.pulse)

    def bell(self, wake: Wake) -> int:
        """The board's bell for `wake` as this process last heard it (bell.py): read before a
        look at the board, and passed to `wait` after a look that found nothing to do."""
        return self._lookouts[wake].known

    def wait(self, wake: Wake, seen: int, timeout: float) -> int:
        """Back once the board's bell for `wake` has rung since `seen`, or after `timeout`
        seconds; one call to the board at a time however many of this process's threads
        wait (lookout.py)."""
        return self._lookouts[wake].wait(seen, timeout)

    def all_events(self, since: int = 0) -> Iterator[Event]:
        """Every event after `since`, fetched a page at a time."""
        while batch := self.events(since, EVENTS_PAGE):
            yield from batch
            since = batch[-1].seq


def describe_all(boards: Sequence[BoardClient], timeout: float) -> list[Objective]:
    """Every board's description, asked all at once; boards that do not answer in `timeout`
    (or died meanwhile) are left out."""
    found = [b.describe() for b in boards if b._board is not None]
    refs = [b._handle.describe.remote() for b in boards if b._handle is not None]
    if refs:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for ref in ready:
            try:
                found.append(ray.get(ref))
            except ray.exceptions.RayError:
                continue  # a board that died between listing and asking
    return found


def _copy(value: R) -> R:
    """What crossing a process boundary does to a value: the receiver gets its own copy."""
    copied: R = pickle.loads(pickle.dumps(value))
    return copied
