"""The planner's side of the board: who plans, what the planner adds, reorders and records, and
the view each of its turns reads.

The rules, each decided here and journaled as events the books apply:

* one planner instance plans at a time (claim.py): a planner that is not the live holder is
  refused (`PlannerLost`) whatever it asks;
* a batch of tasks and the completions it was planned from land in one event, so a planner
  that dies mid-batch leaves the batch wholly unplanned, and no completion is acknowledged
  twice; proposals the board has seen are turned away and counted;
* a reorder merges into the current order (tasks added, leased or done meanwhile are neither
  lost nor brought back); only a person's approval or drop touches held tasks;
* amended caps reopen a finished objective; an answer is the next revision, never a
  replacement.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from coop import constants as C
from coop import events as ev
from coop.board.desk import NO_ROOM, Desk
from coop.config import RunSettings
from coop.types import AddReport, Answer, PlanView, Progress, Reason, ReorderReport, State, Task


class PlannerDesk(Desk):
    def claim_planner(self, instance: str) -> str | None:
        """Take or renew the planner role; returns the live holder if it is someone else."""
        b = self.books
        now = b.clock()
        holder = b.claim.holder(now)
        if holder is not None and holder != instance:
            return holder
        if b.claim.owner() != instance:
            self.emit(ev.Planner(instance, "claimed"))
        b.claim.take(instance, now)  # renewed
        b.seen(instance)
        return None

    def release_planner(self, instance: str) -> None:
        if self.books.claim.owner() == instance:
            self.emit(ev.Planner(instance, "released"))

    def _check(self, planner: str | None) -> None:
        """Raise PlannerLost unless `planner` (None: not a planner) holds the live claim."""
        self.books.claim.check(planner, self.books.clock())

    def add(
        self,
        texts: Sequence[str],
        parent: int | None = None,
        *,
        planner: str | None = None,
        planned: Sequence[int] | None = None,
        hold: bool = False,
        near_duplicates: int = 0,
        needs: Sequence[Sequence[str]] = (),
        refused: Sequence[tuple[str, str]] = (),
    ) -> AddReport:
        """Append new tasks, rejecting any whose normalized text the board has seen.

        A planner passes its name and the completions (sequence numbers) this batch planned
        from: the tasks and the acknowledgement land in one event, so a planner that dies
        mid-batch leaves the batch wholly unplanned, never half, and a completion is never
        acknowledged twice (concurrent batches hold disjoint completions). It also passes how
        many proposals it rejected itself as near-duplicates, to be counted with the exact
        ones, and the lines it refused as no tasks at all, each with its reason (`Refusal`).
        """
        b = self.books
        self.settle()
        self._check(planner)
        screened = b.tasks.screen(texts, parent, accepting=b.state is State.RUNNING, needs=needs)
        rows, duplicates = screened.rows, screened.duplicates
        acked = [s for s in planned or () if s not in b.acks and s < len(b.results)]
        if rows or acked or duplicates or near_duplicates or refused:
            self.emit(
                ev.Added(
                    tasks=rows,
                    planned=acked or None,
                    exact=len(duplicates),
                    near=near_duplicates,
                    hold=hold,
                    refused=[(line, why) for line, why in refused],
                )
            )
        return AddReport([replace(b.tasks.tasks[r[0]]) for r in rows], duplicates, screened.repeats)

    def pending_window(self, limit: int) -> tuple[int, list[Task]]:
        """The head of the pending list and the version it was read at."""
        self.settle()
        t = self.books.tasks
        return t.version, [replace(t.tasks[i]) for i in t.pending[:limit]]

    def task_texts(self) -> list[tuple[int, str]]:
        """Every task ever added, for a planner building its near-duplicate index."""
        return [(t.id, t.text) for t in self.books.tasks.tasks.values()]

    def awaiting_approval(self) -> list[Task]:
        t = self.books.tasks
        return [replace(t.tasks[i]) for i in t.pending if i in t.unapproved]

    def approve(self, ids: Sequence[int]) -> int:
        chosen = self.books.tasks.awaiting(ids)
        if chosen:
            self.emit(ev.Approved(chosen))
        return len(chosen)

    def drop(self, ids: Sequence[int]) -> int:
        """Remove tasks a person rejected; only tasks still awaiting approval can go."""
        chosen = self.books.tasks.awaiting(ids)
        if chosen:
            self.emit(ev.Dropped(chosen))
        return len(chosen)

    def record_progress(self, planner: str, progress: Progress) -> None:
        self._check(planner)
        p = progress
        self.emit(ev.Progress(p.stalls, p.replans, p.repeating, p.checks))

    def record_unreadable(self, planner: str, kind: str, text: str) -> None:
        """A model reply of `kind` the planner could not read, with its start (`text`)."""
        self._check(planner)
        self.emit(ev.Unreadable(planner, kind, text))

    def amend(self, planner: str, changes: dict[str, Any]) -> bool:
        """New caps (`RunSettings.REOPENABLE`) from `coop start --resume`; a finished
        objective runs again with them. Returns whether it was reopened."""
        self.settle()
        self._check(planner)
        changes = {k: v for k, v in changes.items() if k in RunSettings.REOPENABLE}
        if not changes:
            return False
        reopen = self.books.state is State.FINISHED
        self.emit(ev.Reopened(changes, reopen))
        return reopen

    def record_answer(self, planner: str, answer: Answer) -> Answer:
        """Journal the run's answer as the next revision (with the time it was recorded)."""
        self._check(planner)
        a, answers = answer, self.books.answers
        revision, at = answers.next_revision(), self.books.clock()
        self.emit(
            ev.Answer(
                revision, a.text, list(a.cited), a.met, a.missing, at, a.flaw, a.data, a.invalid
            )
        )
        return answers.all()[-1]

    def budget_short(self, prompt_tokens: int, completion_tokens: int) -> str:
        """Why calls of at most this many tokens would not fit in the caps ("" if they would)."""
        return self.books.budget.short(prompt_tokens, completion_tokens)

    def reorder(self, version: int, order: Sequence[int]) -> ReorderReport:
        """Put `order` first; every other pending task keeps its relative place after them.

        Ids no longer pending (leased or completed meanwhile) are skipped; ids never seen are
        counted as invented and ignored. Nothing is added or dropped, whatever `order` holds.
        """
        t = self.books.tasks
        self.settle()
        first, unknown = t.merge_order(order)
        stale = version != t.version
        if first:
            self.emit(ev.Reordered(first))
        return ReorderReport(len(first), unknown, stale)

    def plan_view(self, since: int, limit: int) -> PlanView:
        """One turn's view for the planner: up to `limit` unacknowledged completions from
        sequence number `since` on, and the demand for tasks (see `PlanView`).

        A list run dry with no task of the usual cost left under a cap's share for tasks ends
        the run at that cap, as a lease refused for it with nothing in flight does: asking the
        model whether the objective is met would be paid from the answer's reserve."""
        b = self.books
        self.settle()
        now, done, t = b.clock(), len(b.results), b.tasks
        seqs = list(itertools.islice(b.acks.unacked(since, done), limit))
        pending, leased = len(t.pending), len(b.leases)
        dry = not pending and not leased and len(b.acks) == done
        if dry and (cap := self._no_room()) is not None:
            self.stop(cap, NO_ROOM)
        workers = b.live(now)
        stuck = len(b.lacking(now))
        return PlanView(
            state=b.state,
            results=[b.results[s] for s in seqs],
            completed=done,
            unplanned=b.unplanned(),
            pending=pending,
            ready=t.eligible_count(now) - stuck,
            leased=leased,
            slots=sum(w.slots for w in workers),
            room=self._room(done + leased + pending, pending),
            calls=b.budget.calls_that_fit(),
            head=t.pending[: C.PRIORITIZE_WINDOW],
            dry=dry,
            capabilities=sorted({c for w in workers for c in w.caps}),
            stuck=stuck,
        )

    def _no_room(self) -> Reason | None:
        """The cap a dry list cannot go on under: going on takes a planner call (a check, a
        plan), then a task; neither may break the tasks' share of a cap."""
        budget = self.books.budget
        return budget.over(budget.call_estimate()) or budget.over(budget.estimate())

    def _room(self, counted: int, pending: int) -> int:
        """Tasks that may still be added: under the task cap (`counted` pending, leased and
        done), and under the budget beside the `pending` ones already waiting."""
        room = self.books.settings.max_tasks - counted
        fit = self.books.budget.tasks_that_fit()
        return room if fit is None else min(room, fit - pending)
