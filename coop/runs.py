"""`Run`: one objective seen from Python — its status, its tape, its results and its answer,
and the few things a person may do to it (wait, stop, approve).

The same object whether this process plans the objective (`coop.run`, `coop.start`) or only
looks at it (`coop.open`, live on a cluster or from its journal): everything is read from the
board, the one place that knows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from coop import status
from coop.board import BoardClient
from coop.errors import CoopError
from coop.journal import Event
from coop.types import Answer, Reason, Result, Snapshot, State

if TYPE_CHECKING:
    from pydantic import BaseModel

    from coop.planner import Finished

M = TypeVar("M", bound="BaseModel")

POLL = 0.5
"""Seconds between looks at a board this process does not plan."""


class NotLive(CoopError):
    """The objective is read from its journal: no cluster has it to stop or approve."""


class Planning:
    """The planner of a `coop.start`, running in a thread of this process: how it ended."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.finished: Finished | None = None
        self.error: BaseException | None = None


class Run:
    """An objective: planned by this process, or found by `coop.open`."""

    def __init__(self, board: BoardClient, planning: Planning | None = None) -> None:
        self._board = board
        self._planning = planning

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    @property
    def id(self) -> str:
        return self._board.objective_id

    @property
    def board(self) -> BoardClient:
        """The typed client of the objective's board, for what this class does not offer."""
        return self._board

    @property
    def finished(self) -> Finished | None:
        """How this process's planning ended (the report's and the answer's files); None
        while it runs, or when another process plans the objective."""
        return self._planning.finished if self._planning is not None else None

    def status(self) -> Snapshot:
        """The typed snapshot `coop status` renders."""
        self._board.refresh()
        return self._board.snapshot()

    def events(self, since: int = 0, follow: bool = False) -> Iterator[Event]:
        """The tape after sequence number `since`; with `follow`, until the objective ends."""
        return status.stream(self._board, since=since, follow=follow)

    def results(self) -> list[Result]:
        self._board.refresh()
        return self._board.results()

    @property
    def answer(self) -> Answer | None:
        """The newest revision of the answer (text, cited tasks, judged met, its flaw), or why
        there is none (`missing`); None before any run of the objective has ended."""
        return self.status().answer

    def answer_as(self, model: type[M]) -> M:
        """The answer as an instance of `model` (a pydantic model): the JSON the run was asked
        for with `answer_type=` or `--answer-schema`."""
        from coop import answers

        return answers.typed(self.answer, model, self.id)

    def wait(self, timeout: float | None = None) -> Snapshot:
        """Until the objective has ended and its answer is written; its last snapshot.
        TimeoutError after `timeout` seconds; a planner of this process that failed raises
        its error here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        planning = self._planning
        if planning is not None and planning.thread is not None:
            planning.thread.join(timeout)
            if planning.thread.is_alive():
                raise TimeoutError(f"{self.id} still runs after {timeout}s")
            if planning.error is not None:
                raise planning.error
            return self.status()
        while True:
            snap = self.status()
            if snap.state is State.FINISHED and snap.planner is None:
                return snap
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.id} still runs after {timeout}s")
            time.sleep(POLL)

    def stop(self) -> State:
        """Ask every instance to stop, as `coop stop` does: no new leases, in-flight work kept."""
        return self.live().stop(Reason.STOPPED)

    def approve(
        self, tasks: Sequence[int] | None = None, drop: Sequence[int] = ()
    ) -> tuple[int, int]:
        """Approve the tasks waiting for a person (all of them when `tasks` is None, but those
        in `drop`), and drop those in `drop`: how many were approved and dropped."""
        board = self.live()
        if tasks is None:
            return status.review(board, approve_all=True, drop=drop)
        return board.approve([t for t in tasks if t not in drop]), board.drop(list(drop))

    def live(self) -> BoardClient:
        """The board, to change: NotLive when it is only read from its journal."""
        if not self._board.live:
            raise NotLive(f"{self.id} is read from its journal: no running cluster has it here")
        return self._board
