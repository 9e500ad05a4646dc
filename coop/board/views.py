"""What the board shows of its books to status and dashboards: the whole snapshot, and the
small pulse polled often. Read only: a client in this process copies them on the way out, as
a call to the actor would."""

from __future__ import annotations

from dataclasses import replace

from coop.board.books import Books
from coop.types import Lease, Pulse, Snapshot, Usage


def snapshot(books: Books, objective_id: str, objective: str, created: float) -> Snapshot:
    b, t = books, books.tasks
    now = b.clock()
    return Snapshot(
        objective_id=objective_id,
        objective=objective,
        created=created,
        state=b.state,
        reason=b.reason,
        detail=b.detail,
        llm_label=b.settings.label,
        pending=[t.tasks[i] for i in t.pending],
        leased=[Lease(t.tasks[i], h.token, h.worker, h.expires - now) for i, h in b.leases.items()],
        completed=len(b.results),
        dead=[t.tasks[i] for i in t.dead],
        unplanned=b.unplanned(),
        workers=b.roster.all(),
        usage=dict(b.budget.usage),
        planner=b.claim.holder(now),
        progress=replace(
            b.progress,
            refused=dict(b.progress.refused),
            unreadable=dict(b.progress.unreadable),
            flawed=dict(b.progress.flawed),
        ),
        settings=b.settings,
        awaiting=len(t.unapproved),
        answer=b.answers.latest(),
        tools=b.tools.view(),
        files=b.files.listing(),
        lacking=b.lacking(now),
        replays=replace(b.replays),
    )


def pulse(books: Books) -> Pulse:
    b = books
    total = Usage.total(b.budget.usage.values())
    return Pulse(
        b.state,
        len(b.results),
        len(b.tasks.pending),
        len(b.leases),
        len(b.tasks.dead),
        b.settings.max_tasks,
        total.tokens,
        total.cost,
        b.unplanned(),
    )
