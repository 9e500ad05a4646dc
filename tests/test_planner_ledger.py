"""The progress ledger alone: stalls and what pays them back, the verdicts (a fresh plan, a
loop), replans spent, unreadable completion checks in a row."""

from __future__ import annotations

from coop import constants as C
from coop.planner.ledger import UNREADABLE_CHECKS, Ledger, Verdict
from coop.types import Progress


def test_stalls_up_to_the_limit_call_for_a_fresh_plan() -> None:
    ledger = Ledger()
    verdicts = [ledger.batch(False, 0, 0) for _ in range(C.STALL_LIMIT)]
    assert verdicts == [Verdict.GO_ON] * (C.STALL_LIMIT - 1) + [Verdict.REPLAN]
    ledger.replanned()
    assert (ledger.progress.replans, ledger.progress.stalls) == (1, 0)


def test_progress_pays_a_stall_back_and_never_below_none() -> None:
    ledger = Ledger()
    ledger.batch(False, 0, 0)
    ledger.batch(False, 0, 0)
    assert ledger.batch(True, 3, 0) is Verdict.GO_ON
    assert ledger.progress.stalls == 1
    ledger.batch(True, 3, 0)
    ledger.batch(True, 3, 0)
    assert ledger.progress.stalls == 0


def test_batches_mostly_repeating_finished_work_are_a_loop() -> None:
    ledger = Ledger()
    verdicts = [ledger.batch(False, 3, 2) for _ in range(C.LOOP_BATCHES)]
    assert verdicts[-1] is Verdict.LOOP  # a loop outranks the stalls counted alongside


def test_a_batch_with_progress_ends_a_run_of_repeats() -> None:
    ledger = Ledger()
    for _ in range(C.LOOP_BATCHES - 1):
        ledger.batch(False, 3, 2)
    ledger.batch(True, 3, 2)
    assert ledger.progress.repeating == 0


def test_a_batch_repeating_less_than_half_is_no_repeat() -> None:
    ledger = Ledger()
    ledger.batch(False, 3, 1)
    assert ledger.progress.repeating == 0 and ledger.progress.stalls == 1


def test_replans_are_spent_after_the_most_allowed() -> None:
    ledger = Ledger(Progress(replans=C.MAX_REPLANS - 1))  # inherited from the board
    assert not ledger.spent
    ledger.replanned()
    assert ledger.spent


def test_unreadable_checks_count_only_in_a_row() -> None:
    ledger = Ledger()
    for _ in range(UNREADABLE_CHECKS - 1):
        assert not ledger.checked(unreadable=True)
    assert not ledger.checked(unreadable=False)  # a readable reply starts the count again
    reads = [ledger.checked(unreadable=True) for _ in range(UNREADABLE_CHECKS)]
    assert reads == [False] * (UNREADABLE_CHECKS - 1) + [True]
    assert ledger.progress.checks == 2 * UNREADABLE_CHECKS
