"""What the board decides with: its books to read, and `emit` to change them (the actor
journals an event, then the books apply it), and the housekeeping every call starts with.

Time moves between calls, so each call first `settle`s: leases past their expiry end (their
tasks go back to the front; a model call their vanished worker was waiting for is charged by
its reservation, since the server billed it) and a stopping run with nothing left in flight
finishes. The workers' side (workers.py) and the planner's (planning.py) are desks too.
"""

from __future__ import annotations

from collections.abc import Callable

from coop import events as ev
from coop.board.books import Books
from coop.types import Kind, Reason, State

NO_ROOM = "the next task would not fit in what is left"
"""Why a run ended at a cap while it still had work or a question to ask."""


class Desk:
    def __init__(self, books: Books, emit: Callable[[ev.Event], None]) -> None:
        self.books = books
        self.emit = emit

    def settle(self) -> None:
        b = self.books
        expired = b.leases.expired(b.clock())
        for tid in expired:  # a model call its vanished worker was waiting for: billed all the same
            if (flying := b.ledger.landed(tid)) is not None:
                holder, kind, step = b.leases.holder(tid), Kind.EXECUTION.value, flying.step
                self.emit(ev.Usage(holder, kind, flying.tokens, 0, 0.0, tid, step, estimated=True))
        if expired:
            self.emit(ev.Expired(expired))
        finishing = b.finish()
        if b.metrics.due(force=finishing):
            b.export()

    def stop(self, reason: Reason, detail: str = "") -> None:
        """The run stops: no new task starts, in-flight ones finish and are kept."""
        if self.books.state is State.RUNNING:
            self.emit(ev.Stopping(reason.value, detail))
        self.settle()
