"""The demand policy as a table: each row a situation the coordinator can be in and the calls
it must start, with why. No threads, no board: `decide` is a pure function."""

from __future__ import annotations

import pytest

from coop.planner.demand import Creation, Decision, Situation, decide
from coop.planner.jobs import Job

CREATE, PRIORITIZE, CHECK, REPLAN = Job.CREATE, Job.PRIORITIZE, Job.CHECK, Job.REPLAN


def swarm(**kw: object) -> Situation:
    """8 slots, all busy, a round of tasks ready, room to spare, nothing queued or in flight:
    the demand is met; a row changes what it is about."""
    base: dict[str, object] = dict(room=1000, slots=8, leased=8, ready=8)
    base.update(kw)
    return Situation(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "situation, decision",
    [
        # demand met and nothing queued: nothing to do
        (swarm(), Decision()),
        # at a cap, claimed completions are acknowledged without a call: no task may be added
        (swarm(room=0, queued=5, ready=0, leased=0), Decision(acknowledge=True)),
        # an idle swarm wants 16 (8 idle slots + a round queued): the 2 queued completions
        # go one to a call, each asking for its share of what is still wanted
        (
            swarm(leased=0, ready=0, queued=2),
            Decision(creations=(Creation(1, 4), Creation(1, 5))),
        ),
        # the want is met and the queue short: no call, not even in the background
        (swarm(queued=2), Decision()),
        # the want is met but a full batch is queued: one call plans it in the background,
        # naming no number of tasks
        (swarm(queued=10), Decision(creations=(Creation(8, None),))),
        # one ready task short of a round of slots: a want of 1, one call for the queue
        (swarm(ready=7, queued=3), Decision(creations=(Creation(3, 1),))),
        # the calls in flight will bring what is wanted (2 × 3 ≥ 4): none more
        (swarm(ready=4, queued=3, creating=2, busy=frozenset({CREATE})), Decision()),
        # every creation call allowed is in flight: the queue waits however long it is
        (
            swarm(ready=0, leased=0, queued=20, creating=4, busy=frozenset({CREATE})),
            Decision(),
        ),
        # room for 2 more tasks only: one call for the whole queue, asking for 2
        (swarm(room=2, leased=0, ready=0, queued=3), Decision(creations=(Creation(3, 2),))),
        # the last two creation calls brought no task (the plan is running out): a want of 12
        # is not met sooner by a call for each completion as it comes; with 4 tasks still
        # leased, more completions come to fold into one call
        (swarm(leased=4, ready=0, queued=3, barren=2), Decision()),
        # ... a full batch: one call in the background
        (
            swarm(leased=4, ready=0, queued=8, barren=2),
            Decision(creations=(Creation(8, None),)),
        ),
        # ... nothing leased, so no more completions coming: one call for what is queued
        (
            swarm(leased=0, ready=0, queued=3, barren=2),
            Decision(creations=(Creation(3, None),)),
        ),
        # ... one barren call is not yet a trend: the want starts calls
        (
            swarm(leased=4, ready=0, queued=3, barren=1),
            Decision(creations=(Creation(1, 3), Creation(1, 3), Creation(1, 3))),
        ),
        # ... and while a call runs, the completions wait for the next one, folded
        (
            swarm(leased=4, ready=0, queued=2, barren=2, creating=1, busy=frozenset({CREATE})),
            Decision(),
        ),
        # ... even with nothing leased: the call in flight is the one that may bring tasks
        (
            swarm(leased=0, ready=0, queued=9, barren=2, creating=1, busy=frozenset({CREATE})),
            Decision(),
        ),
        # a long queue is split in batches of at most PLANNER_BATCH
        (
            swarm(leased=0, ready=0, queued=20, calls=2),
            Decision(creations=(Creation(8, 8), Creation(8, 10))),
        ),
        # the head holds tasks no prioritization has seen, and all 10 of it will wait beyond the
        # next round of 8 slots: one call orders it
        (swarm(ready=30, unordered=3), Decision(prioritize=True)),
        # ... a head of 8, all still waiting when the order lands: the next round of 8 slots
        # leases them all at once, the order would only say which starts a moment sooner
        (swarm(unordered=3), Decision()),
        # 9 ready but 8 free slots take all but one at once: their order changes nothing
        (swarm(leased=0, ready=9, unordered=9), Decision()),
        # 30 ready, all slots busy, but about 9 tasks are leased while the call runs: of the
        # head's 10 only one is still waiting when the order lands, and one has no order
        (swarm(ready=30, unordered=10, turnover=8.5), Decision()),
        # ... 2 free slots and 7 leased meanwhile: 1 left, the same
        (swarm(leased=6, ready=30, unordered=10, turnover=7.0), Decision()),
        # ... at half that pace, 5 of the 10 still wait when the order lands, but the next round
        # of 8 slots leases them all at once
        (swarm(ready=30, unordered=10, turnover=4.5), Decision()),
        # ... with 4 slots and 6 leased meanwhile, the next round of 4 takes the 4 left at once
        (swarm(slots=4, leased=4, ready=30, unordered=10, turnover=6.0), Decision()),
        # ... at under half that pace, 7 or 8 wait, 3 beyond the next round: worth a call
        (swarm(slots=4, leased=4, ready=30, unordered=10, turnover=2.5), Decision(prioritize=True)),
        # one prioritization at a time
        (swarm(ready=30, unordered=3, busy=frozenset({PRIORITIZE})), Decision()),
        # a single new task in the head: nothing to order it against
        (swarm(ready=30, unordered=1), Decision()),
        # CHECK_EVERY more completions since the last periodic check: a check
        (swarm(completed=20, milestone=1), Decision(check=True)),
        # a check is due but nothing is ready or leased: the calls in flight refill the list
        # or it runs dry and the dry check comes; a check now would see neither
        (
            swarm(
                completed=20, milestone=1, ready=0, leased=0, creating=1, busy=frozenset({CREATE})
            ),
            Decision(),
        ),
        # a check is due, nothing is ready and nothing is being planned: the leased task's
        # result refills the list or it runs dry and is checked then; a verdict now would
        # save no task (the leased one is paid for)
        (swarm(completed=50, milestone=4, ready=0, leased=1), Decision()),
        # ... but with a creation in flight (a swarm that outruns its planner): the check
        (
            swarm(
                completed=50, milestone=4, ready=0, leased=8, creating=1, busy=frozenset({CREATE})
            ),
            Decision(check=True),
        ),
        # a check is due but one is in flight: not two at once
        (swarm(completed=20, milestone=1, busy=frozenset({CHECK})), Decision()),
        # the list ran dry and this count was never checked: a check of the dry list
        (
            swarm(dry=True, ready=0, leased=0, completed=13, milestone=1),
            Decision(check=True, dry_check=True),
        ),
        # still dry after the check at this very count: a fresh plan
        (
            swarm(dry=True, ready=0, leased=0, completed=13, milestone=1, checked=13),
            Decision(replan=True),
        ),
        # dry while a fresh plan is in flight: wait for it
        (
            swarm(dry=True, ready=0, leased=0, completed=13, milestone=1, busy=frozenset({REPLAN})),
            Decision(),
        ),
        # dry on the board, but a creation is still planning results: no check yet
        (
            swarm(
                dry=True,
                ready=0,
                leased=0,
                completed=13,
                milestone=1,
                creating=1,
                busy=frozenset({CREATE}),
            ),
            Decision(),
        ),
        # only tasks no live worker can do, nothing in flight: time to wait for such a worker
        (swarm(stuck=2, ready=0, leased=0), Decision(waiting=True)),
        # ... not while a job in flight may still change that
        (swarm(stuck=2, ready=0, leased=0, busy=frozenset({PRIORITIZE})), Decision()),
        # the budget (a cap on tokens or cost, less the answer's reserve) allows 1 more planner
        # call: of the 2 the want asks for, one starts, with the whole queue and the whole want
        (
            swarm(leased=0, ready=0, queued=2, affordable=1),
            Decision(creations=(Creation(2, 10),)),
        ),
        # ... a full batch queued, a head worth ordering and a check due: the one call goes to
        # creation, not to prioritization nor the check
        (
            swarm(ready=30, queued=8, unordered=3, completed=20, milestone=1, affordable=1),
            Decision(creations=(Creation(8, None),)),
        ),
        # ... and at 2, to creation, then prioritization
        (
            swarm(ready=30, queued=8, unordered=3, completed=20, milestone=1, affordable=2),
            Decision(creations=(Creation(8, None),), prioritize=True),
        ),
        # ... allows 1, and a prioritization in flight has it: the check waits, and the queued
        # completion is not acknowledged (its call may fit once the one in flight settles)
        (
            swarm(queued=1, completed=20, milestone=1, busy=frozenset({PRIORITIZE}), affordable=1),
            Decision(),
        ),
        # ... allows 2 more: prioritization, then the check
        (
            swarm(ready=30, unordered=3, completed=20, milestone=1, affordable=2),
            Decision(prioritize=True, check=True),
        ),
        # ... allows none: claimed completions are acknowledged as at a cap, no call starts
        (
            swarm(
                leased=0, ready=0, queued=3, unordered=3, completed=20, milestone=1, affordable=0
            ),
            Decision(acknowledge=True),
        ),
        # ... a dry list with no call allowed: no check, no fresh plan (the board ends the run)
        (swarm(dry=True, ready=0, leased=0, completed=13, affordable=0), Decision()),
        (swarm(dry=True, ready=0, leased=0, completed=13, checked=13, affordable=0), Decision()),
    ],
)
def test_the_demand_policy(situation: Situation, decision: Decision) -> None:
    assert decide(situation) == decision
