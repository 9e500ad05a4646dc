"""What the board shows of its books, alone: the snapshot and the pulse."""

from __future__ import annotations

from coop import events as ev
from coop.board import views
from coop.types import State
from tests.support.board import Tape


def test_the_snapshot_and_the_pulse_count_the_same_books() -> None:
    tape = Tape(max_tasks=7)
    tape.emit(ev.Added([(1, "a", None, []), (2, "b", None, ["gpu"])], None, 0, 0, True))
    tape.emit(ev.Approved([1]))
    tape.emit(ev.Leased(1, 1, "w", tape.clock.now + 30, 10, 0.0))
    tape.emit(ev.Usage("w", "execution", 100, 20, 0.1, 1))
    tape.emit(ev.Planner("p", "claimed"))
    snap = views.snapshot(tape.books, "obj-1", "objective", 5.0)
    assert (snap.objective_id, snap.objective, snap.created) == ("obj-1", "objective", 5.0)
    assert [t.id for t in snap.pending] == [2] and snap.awaiting == 1
    assert [(lease.task.id, lease.worker, lease.ttl) for lease in snap.leased] == [(1, "w", 30)]
    assert snap.planner == "p" and snap.lacking == {2: ["gpu"]}
    pulse = views.pulse(tape.books)
    assert (pulse.state, pulse.completed, pulse.pending, pulse.leased) == (State.RUNNING, 0, 1, 1)
    assert (pulse.max_tasks, pulse.tokens) == (7, 120)
