"""The workers' side of the board: which task a worker gets, what its steps, completions and
failures do, and how its spending is charged.

The rules, each decided here and journaled as events the books apply:

* a lease goes to the first pending task a worker may take now and can do, and reserves the
  budget its execution will likely spend; when that no longer fits under a cap, no new task
  starts, and with nothing in flight that could free budget the run stops with the cap; no
  lease is given while the journal cannot be written (no work that could not be recorded);
* only the holder of a task's newest lease may record its steps, complete it, fail it or give
  it back (a zombie's late call is STALE); a completion repeated under the token that
  completed it is a DUPLICATE, answered without charging again;
* every model call is charged with what its server reported, even under a lost lease (it was
  paid), and spending past a cap stops the run; the task cap stops it at its last completion;
* a failed attempt requeues the task at the back after a growing delay, or dead-letters it
  after `max_attempts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from coop import constants as C
from coop import events as ev
from coop.board.books import Books
from coop.board.desk import NO_ROOM, Desk
from coop.board.files import BadPath, clean
from coop.journal import JournalError
from coop.types import Kind, Lease, Outcome, Reason, Replays, Seat, State, Step, StepKind

log = logging.getLogger(__name__)


class WorkerDesk(Desk):
    def __init__(
        self,
        books: Books,
        emit: Callable[[ev.Event], None],
        writable: Callable[[], bool],
        ring: Callable[[], None],
    ) -> None:
        """`writable`: whether the journal's last write succeeded (no lease is given if not);
        `ring`: wakes the workers waiting for work (bell.py)."""
        super().__init__(books, emit)
        self._writable = writable
        self._ring = ring

    def lease(self, worker: str, caps: Sequence[str] = ()) -> Lease | State:
        """The next task, or the board's state when there is none to give (never raises)."""
        b = self.books
        self.settle()
        b.seen(worker)
        capped = len(b.results) + len(b.leases) >= b.settings.max_tasks
        if b.state is not State.RUNNING or capped or not self._writable():
            return b.state
        now = b.clock()
        kit = set(caps)
        tid = b.tasks.next_eligible(now, lambda task: set(task.needs) <= kit)
        if tid is None:
            b.roster.idle(worker, now)
            return b.state
        b.roster.busy(worker)
        estimate = b.budget.estimate()
        if (cap := b.budget.over(estimate)) is not None:
            if not b.leases:  # nothing in flight could free budget: this is the end
                self.stop(cap, NO_ROOM)
            return b.state
        token, ttl = b.leases.next_token, b.settings.lease_ttl
        try:
            self.emit(ev.Leased(tid, token, worker, now + ttl, estimate[0], estimate[1]))
        except JournalError as exc:
            log.error("%s", exc)
            return b.state
        task, tries = replace(b.tasks.tasks[tid]), b.tries[tid]
        steps, started = self.steps(tid) if tries > 1 else ([], {})
        return Lease(task, token, worker, ttl, tries, tuple(steps), started)

    def heartbeat(
        self, worker: str, held: Sequence[tuple[int, int]], seat: Seat | None = None
    ) -> list[int]:
        """Renew the leases `worker` holds; returns the task ids it has lost. `seat`: what it
        can take on (slots, capabilities), which the planner plans for."""
        b = self.books
        self.settle()
        b.seen(worker)
        if seat is not None:
            b.roster.seat(worker, seat)
        return b.leases.renew(held, b.clock() + b.settings.lease_ttl)

    def complete(
        self,
        task_id: int,
        token: int,
        worker: str,
        text: str,
        flaw: str = "",
        last: Step | None = None,
        embedded: Sequence[int] = (),
    ) -> Outcome:
        """Record a result (`flaw`: what makes it degenerate, when it was kept all the same).
        Returns only once it is in the journal; raises JournalError if it could not be
        written (then nothing of the call is), and the worker keeps the task and tries again.

        What the task ran up and the board was not told rides along, so that a task's end is
        one round trip: `last`, its final step (recorded as `step` records it), and
        `embedded`, the tokens of each embedding call made for it since its last step (the
        write of its result). Both are settled before the result, even under a lost lease:
        they were paid. Until then the lease's reservation stood for the last step."""
        b = self.books
        self.settle()
        b.seen(worker)
        if b.tasks.done.get(task_id) == token:
            return Outcome.DUPLICATE  # its usage was settled by the call that completed it
        owned = b.owns(task_id, token)
        if last is not None:
            self._record_step(task_id, token, worker, last, owned)
        self._charge_embedded(worker, embedded)
        if not owned:
            return Outcome.STALE
        self.emit(ev.Completed(task_id, token, worker, text[: C.MAX_RESULT_CHARS], b.clock(), flaw))
        if len(b.results) >= b.settings.max_tasks:
            self.stop(Reason.MAX_TASKS)
        self.settle()
        return Outcome.ACCEPTED

    def complete_and_lease(
        self,
        task_id: int,
        token: int,
        worker: str,
        text: str,
        caps: Sequence[str] = (),
        flaw: str = "",
        last: Step | None = None,
        embedded: Sequence[int] = (),
    ) -> tuple[Outcome, Lease | State]:
        """`complete`, then `lease` for the same worker, in one round trip: a busy worker's
        steady state costs one actor call per task instead of two. While another worker has
        recently found nothing to do, no task comes with the completion: the slot asks again
        through `lease` (POLL_MIN later), and an idle worker, woken by the bell, gets it
        first. A weak preference, not a reservation: holding the task for the idle worker
        would starve a worker that alone can do what is left."""
        outcome = self.complete(task_id, token, worker, text, flaw, last, embedded)
        if self.books.roster.others_idle(worker, self.books.clock() - C.POLL_MAX * 2):
            self._ring()
            return outcome, self.books.state
        return outcome, self.lease(worker, caps)

    def fail(self, task_id: int, token: int, worker: str, error: str) -> Outcome:
        """Count a failed attempt: requeue at the back after a growing delay, or dead-letter
        after max_attempts."""
        b = self.books
        self.settle()
        b.seen(worker)
        if not b.owns(task_id, token):
            return Outcome.STALE
        attempts = b.tasks.tasks[task_id].attempts + 1
        dead = attempts >= b.settings.max_attempts
        delay = b.settings.retry_delay * 2 ** (attempts - 1)
        self.emit(ev.Failed(task_id, worker, error[:500], dead, b.clock() + delay))
        self.settle()
        return Outcome.DEAD if dead else Outcome.REQUEUED

    def release(self, task_id: int, token: int, worker: str) -> Outcome:
        """Give a task back unattempted (a worker shutting down): it goes to the front."""
        self.settle()
        if not self.books.owns(task_id, token):
            return Outcome.STALE
        self.emit(ev.Released(task_id))
        self.settle()
        return Outcome.REQUEUED

    def record_usage(
        self,
        worker: str,
        kind: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency: float = 0.0,
        task_id: int | None = None,
    ) -> None:
        """Settle a model call (its event is the call's line on the tape). Spending past a
        cap stops the objective (in-flight work finishes and is kept)."""
        self.settle()
        self.books.seen(worker)
        p, c, lat = prompt_tokens, completion_tokens, round(latency, 4)
        self.emit(ev.Usage(worker, kind, p, c, lat, task_id))
        self._stop_if_spent()

    def _stop_if_spent(self) -> None:
        """Spending past a cap stops the objective (in-flight work finishes and is kept)."""
        if (cap := self.books.budget.over(None)) is not None:
            self.stop(cap, "budget spent")

    def steps(self, task_id: int) -> tuple[list[Step], dict[int, str]]:
        """A task's finished steps, and its unsafe tool calls started and never finished (step
        -> tool): what a worker leasing it again replays instead of redoing."""
        ledger = self.books.ledger
        return ledger.steps(task_id), ledger.started(task_id)

    def step(
        self,
        task_id: int,
        token: int,
        worker: str,
        done: Step | None = None,
        acquire: int = 0,
        starting: str = "",
        embedded: Sequence[int] = (),
    ) -> tuple[bool, float]:
        """A task's worker between two steps, in one round trip: settle the embedding calls
        made for the task since its last call (`embedded`: its memory query, before the first
        step) and the step that just finished (`done`) — both even under a lost lease: they
        were paid —, then open the next: `acquire` tokens from the rate limit for a model call
        (noted as in flight once granted), or mark an unsafe tool as `starting`. Returns
        (whether the lease is still the worker's, seconds to wait before asking again).

        Embeddings are settled here, as they happen, not saved for the completion: the
        lease's reservation covers the task's model calls only, and a run near its cap must
        see what in-flight tasks spent before it leases another (the answer's reserve was
        spent that way)."""
        b = self.books
        self.settle()
        b.seen(worker)
        owned = b.owns(task_id, token)
        self._charge_embedded(worker, embedded)
        if done is not None:
            self._record_step(task_id, token, worker, done, owned)
        if not owned:
            return False, 0.0
        if acquire:
            wait = b.bucket.acquire(acquire, b.clock())
            if wait == 0.0:  # granted: in flight until its step is recorded
                cost = b.settings.cost(Kind.EXECUTION.value, acquire, 0)
                b.ledger.fly(task_id, b.ledger.next_step(task_id), acquire, cost)
            return True, wait
        if starting:
            self.emit(ev.Started(task_id, b.ledger.next_step(task_id), starting, worker))
        return True, 0.0

    def _charge_embedded(self, worker: str, embedded: Sequence[int]) -> None:
        """Settle a task's embedding calls, each its own usage event (as `record_usage`
        writes it)."""
        for tokens in embedded:
            self.emit(ev.Usage(worker, Kind.EMBEDDING.value, tokens, 0, 0.0, None))
        if embedded:
            self._stop_if_spent()

    def _record_step(self, task_id: int, token: int, worker: str, done: Step, owned: bool) -> None:
        """A finished step: its model call or tool call counted whoever holds the lease now
        (it was paid, or it ran), the step itself kept in the ledger by the holder, once."""
        d, latency = done, round(done.latency, 4)
        if d.kind is StepKind.MODEL:
            kind = Kind.EXECUTION.value
            self.emit(ev.Usage(worker, kind, d.prompt, d.completion, latency, task_id, d.step))
        else:
            self.emit(ev.Tool(worker, task_id, d.step, d.tool, d.ok, latency, d.bytes))
        if owned and d.step == self.books.ledger.next_step(task_id):
            self.emit(
                ev.Step(
                    task_id,
                    token,
                    worker,
                    d.step,
                    d.kind.value,
                    d.text,
                    list(d.calls),
                    d.call,
                    d.tool,
                    d.ok,
                    d.prompt,
                    d.completion,
                    d.latency,
                    d.bytes,
                )
            )
        self._stop_if_spent()

    def replayed(self, worker: str, task_id: int, saved: Replays) -> None:
        """A worker resumed a task from its ledger: what it did not redo (for the tape and
        status)."""
        r = saved
        self.emit(
            ev.Replayed(worker, task_id, r.tasks, r.steps, r.calls, r.tokens, r.cost, r.unknown)
        )

    def write_file(
        self, task_id: int, token: int, worker: str, path: str, content: str, key: str
    ) -> tuple[bool, str]:
        """A workspace write by the holder of a task's lease, once per idempotency key.
        Returns (written, what to tell the model)."""
        files = self.books.files
        self.settle()
        if not self.books.owns(task_id, token):
            return False, f"not written: the lease on task #{task_id} was lost"
        try:
            where = clean(path)
            if (before := files.seen(key)) is not None:
                return True, f"already written by this step: {before}"
            files.check(where, content)
        except BadPath as exc:
            return False, f"not written: {exc}"
        self.emit(ev.Wrote(where, content, key, task_id, worker))
        return True, f"wrote {where} ({files.size(where):,} bytes)"

    def read_file(self, path: str) -> str | None:
        try:
            return self.books.files.read(clean(path))
        except BadPath:
            return None

    def list_files(self) -> list[tuple[str, int]]:
        return self.books.files.listing()

    def acquire(self, tokens: int) -> float:
        """Cluster-wide rate limit: 0 to go ahead now (the request is counted), else the
        seconds to wait before asking again."""
        return self.books.bucket.acquire(tokens, self.books.clock())
