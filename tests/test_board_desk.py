"""The housekeeping every call starts with, alone: leases that expire, a model call in flight
charged by its reservation, a stop, a stopping run that finishes."""

from __future__ import annotations

from coop import events as ev
from coop.board.desk import Desk
from coop.types import Reason, State
from tests.support.board import Tape


def desk_with_a_lease() -> tuple[Tape, Desk]:
    tape = Tape(lease_ttl=10)
    tape.emit(ev.Added([(1, "a", None, []), (2, "b", None, [])], None, 0, 0, False))
    tape.emit(ev.Leased(1, 1, "w", tape.clock.now + 10, 500, 0.5))
    return tape, Desk(tape.books, tape.emit)


def test_settling_before_expiry_changes_nothing() -> None:
    tape, desk = desk_with_a_lease()
    mark = len(tape.events)
    tape.clock.now += 9
    desk.settle()
    assert tape.since(mark) == [] and 1 in tape.books.leases


def test_an_expired_lease_ends_and_its_call_in_flight_is_charged_to_its_holder() -> None:
    tape, desk = desk_with_a_lease()
    tape.books.ledger.fly(1, 1, 300, 0.3)
    mark = len(tape.events)
    tape.clock.now += 10
    desk.settle()
    assert tape.since(mark) == ["usage", "expired"]
    usage = tape.events[mark]
    assert isinstance(usage, ev.Usage)
    assert (usage.worker, usage.prompt, usage.task, usage.step, usage.estimated) == (
        "w",
        300,
        1,
        1,
        True,
    )
    assert tape.books.tasks.pending == [1, 2]
    desk.settle()
    assert len(tape.events) == mark + 2, "each lease expires once"


def test_a_stop_is_journaled_once_and_finishes_with_nothing_in_flight() -> None:
    tape, desk = desk_with_a_lease()
    mark = len(tape.events)
    desk.stop(Reason.STOPPED, "asked")
    desk.stop(Reason.MAX_COST)
    assert tape.since(mark) == ["stopping"]
    assert tape.books.state is State.STOPPING  # the lease is still out
    tape.clock.now += 10
    desk.settle()
    # mypy keeps the narrowing of the state across the call that changed it
    assert tape.books.state is State.FINISHED  # type: ignore[comparison-overlap]
    assert tape.books.reason is Reason.STOPPED
