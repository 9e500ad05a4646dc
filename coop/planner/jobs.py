"""The planner's model calls — creation, prioritization, the completion check, a fresh plan —
each run on a thread of its own while the coordinator (loop.py) keeps scheduling others.

A job talks to the model and to the board, and returns what it did as an `Outcome`; it never
touches the progress ledger, which only the coordinator changes. The one step that must not
interleave between concurrent creation calls — checking proposals against every known task
for near-duplicates, adding them with the acknowledgement of their batch, and indexing what
was added — runs under one lock, so two batches proposing the same thing in other words cannot
both get it in.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coop import agents, screen
from coop import constants as C
from coop.calls import Context, ask
from coop.llm import LLMContextError
from coop.planner.index import TaskIndex
from coop.text import one_line
from coop.types import Kind, Result, Task

log = logging.getLogger(__name__)

Review = Callable[[Sequence[Task]], tuple[list[int], list[int]]]
"""Asks a person about new tasks: (approved ids, dropped ids)."""


class Job(enum.Enum):
    CREATE = "creation"
    PRIORITIZE = "prioritization"
    CHECK = "completion check"
    REPLAN = "fresh plan"


@dataclass
class Outcome:
    """What a job did, for the coordinator's ledger."""

    job: Job
    batch: list[Result] = field(default_factory=list)  # the completions a creation planned
    added: list[Task] = field(default_factory=list)
    proposed: int = 0
    repeats: int = 0  # proposals that only repeated finished work
    novel: bool = False  # a planned result said something no earlier result said
    met: bool = False  # the completion check's verdict
    why: str = ""
    unreadable: bool = False  # the check's reply could not be read


class Jobs:
    def __init__(self, ctx: Context, index: TaskIndex, review: Review | None) -> None:
        self.ctx = ctx
        self.index = index
        self.review = review  # asks a person about new tasks, when one is at this terminal
        self._commit = threading.Lock()
        self._unreviewed: queue.SimpleQueue[list[Task]] = queue.SimpleQueue()  # for `review`

    def create(
        self, batch: list[Result], wanted: int | None, abilities: Sequence[str] = ()
    ) -> Outcome:
        """New tasks from a batch of completions, added with the batch's acknowledgement.
        `wanted`: how many tasks the swarm can use now; `abilities`: what its workers can do
        (a task that needs some of it says so); both said in the prompt."""
        _, window = self.ctx.board.pending_window(C.PLANNER_TASK_WINDOW)
        sent = ""
        try:
            answer, sent = ask(
                self.ctx,
                Kind.CREATION,
                lambda budget: agents.creation_prompt(
                    self.ctx.objective,
                    batch,
                    [t.text for t in window],
                    self.ctx.llm.tokenizer,
                    budget,
                    wanted=wanted,
                    abilities=abilities,
                ),
            )
        except LLMContextError:
            log.error(
                "creation prompt does not fit the model even with half the context: "
                "%d result(s) acknowledged without new tasks",
                len(batch),
            )
            answer = ""
        seqs = [r.seq for r in batch]
        out = self._propose(Outcome(Job.CREATE, batch), answer, batch[-1].task_id, seqs, sent)
        log.info(
            "planned %d result(s): %d new task(s) of %d proposed",
            len(batch),
            len(out.added),
            out.proposed,
        )
        out.novel = any(self._is_news(r) for r in batch)
        return out

    def acknowledge(self, batch: list[Result]) -> None:
        """Acknowledge completions without a model call: a cap (tasks or budget) leaves no room."""
        self.ctx.board.add([], planner=self.ctx.name, planned=[r.seq for r in batch])
        log.info("%d result(s) acknowledged without planning: a cap is reached", len(batch))

    def prioritize(self) -> Outcome:
        """Reorder the head of the list; merged into whatever it has become meanwhile."""
        version, window = self.ctx.board.pending_window(C.PRIORITIZE_WINDOW)
        if len(window) >= 2:
            answer, _ = ask(
                self.ctx,
                Kind.PRIORITIZATION,
                lambda budget: agents.prioritization_prompt(
                    self.ctx.objective, window, self.ctx.llm.tokenizer, budget
                ),
            )
            order, unknown = agents.parse_order(answer, window)
            if not order and answer.strip():
                self._unreadable(Kind.PRIORITIZATION, answer)
            if order:
                moved = self.ctx.board.reorder(version, order)
                log.info(
                    "reordered %d task(s)%s",
                    moved.moved,
                    f", ignored {unknown} invented" if unknown else "",
                )
        return Outcome(Job.PRIORITIZE)

    def check(self, completed: int) -> Outcome:
        """Ask whether the objective is met by the work so far."""
        recent = self.ctx.board.results(max(0, completed - 5))
        pulse = self.ctx.board.pulse()
        answer, _ = ask(
            self.ctx,
            Kind.COMPLETION_CHECK,
            lambda budget: agents.completion_prompt(
                self.ctx.objective,
                recent,
                completed,
                pulse.pending + pulse.leased,
                pulse.unplanned,
                self.ctx.llm.tokenizer,
                budget,
            ),
        )
        met, why = agents.parse_completion(answer)
        if met is None:
            self._unreadable(Kind.COMPLETION_CHECK, answer)
            return Outcome(Job.CHECK, unreadable=True, why=one_line(answer, 120))
        log.info(
            "completion check after %d task(s): %s%s",
            completed,
            "met" if met else "not met",
            f" ({why})" if why else "",
        )
        return Outcome(Job.CHECK, met=met, why=why)

    def replan(self) -> Outcome:
        """A fresh plan from the objective and the work done."""
        completed = self.ctx.board.pulse().completed
        since = max(0, completed - C.REPLAN_HISTORY)  # the prompt keeps the newest that fit
        done = [r.task for r in self.ctx.board.results(since)]
        answer, sent = ask(
            self.ctx,
            Kind.CREATION,
            lambda budget: agents.replan_prompt(
                self.ctx.objective, done, self.ctx.llm.tokenizer, budget
            ),
        )
        return self._propose(Outcome(Job.REPLAN), answer, None, None, sent)

    # -- helpers --------------------------------------------------------------------------

    def _unreadable(self, kind: Kind, answer: str) -> None:
        """A reply no parser could read: counted on the board, with its start, for the tape."""
        log.warning("%s reply not understood: %r", kind.value, one_line(answer, 120))
        self.ctx.board.record_unreadable(self.ctx.name, kind.value, one_line(answer, 200))

    def _propose(
        self,
        out: Outcome,
        answer: str,
        parent: int | None,
        planned: list[int] | None,
        sent: str = "",
    ) -> Outcome:
        """Add what a creation or replanning answer proposes (with `planned`, the
        acknowledgement of the completions it came from); lines that are not tasks (`sent`:
        the prompt they answer) are refused."""
        own = agents.instructions(sent)
        needs: dict[str, list[str]] = {}
        refused: list[tuple[str, str]] = []
        for line in agents.parse_tasks(answer):
            task, caps = agents.parse_needs(line)
            why = screen.refusal(task, self.ctx.objective, own)
            if why is None:
                needs[task] = caps
            else:
                refused.append((line, why.value))
        if refused:
            log.info(
                "refused %d proposal(s) that are not tasks: %s",
                len(refused),
                "; ".join(f"{one_line(t, 60)!r} ({why})" for t, why in refused),
            )
        proposals = list(needs)
        with self._commit:
            fresh, near = self.index.split(proposals)
            report = self.ctx.board.add(
                fresh,
                parent,
                planner=self.ctx.name,
                planned=planned,
                hold=self.ctx.settings.approve,
                near_duplicates=len(near),
                needs=[needs.get(t, []) for t in fresh],
                refused=refused,
            )
            self.index.add([t.text for t in report.added])
            if report.added and self.review is not None:
                self._unreviewed.put(report.added)  # asked by the coordinator: `ask_person`
        out.added, out.proposed = report.added, len(proposals)
        out.repeats = report.repeats + len(near)
        return out

    def _is_news(self, result: Result) -> bool:
        """Does a result say something no earlier result said?"""
        hits = self.ctx.memory.query(result.text, 2)
        return not any(h.task_id != result.task_id and h.score >= C.RESULT_SIMILARITY for h in hits)

    def ask_person(self) -> None:
        """Ask the person at the terminal about the tasks added since the last time. Called by
        the coordinator, on the main thread, outside the commit lock: the prompt is read
        where the terminal's input goes, and creations go on while the person thinks."""
        assert self.review is not None or self._unreviewed.empty()
        while not self._unreviewed.empty():
            tasks = self._unreviewed.get()
            assert self.review is not None
            approve, drop = self.review(tasks)
            if approve:
                self.ctx.board.approve(approve)
            if drop:
                self.ctx.board.drop(drop)
