"""The planner's pool of job threads: daemon threads, so that a job still blocked when the
planner stops — a model call, a person not answering the approval prompt — never keeps a
stopping `coop start` alive. (`ThreadPoolExecutor` joins its threads at interpreter exit,
whatever `shutdown(wait=False)` said, and its threads cannot be made daemon.)"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

R = TypeVar("R")
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None


class DaemonPool:
    """`size` daemon threads running submitted calls in order; the futures are the standard
    library's, so `concurrent.futures.wait` works on them."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        future: Future[R] = Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """Cancel what has not started and let the threads end after their current job; waits
        for none of them."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the coordinator reads it from the future
                future.set_exception(exc)
