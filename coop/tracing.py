"""Traces of an objective, live and after the fact: the board's tape through `coop.traces`'
converter to an OTLP collector (`coop.otlp`, loaded only when an endpoint is configured).

Live, a thread in the planner's process tails the board as `coop events --follow` does and
sends each span as the event that ends it arrives: the run does not wait on the collector,
and a collector that cannot be reached costs one warning line, not the run (the spans can be
sent again from the journal). After the fact, `coop events --otlp` sends the whole tape, with
the spans of a running objective's open leases and run ended now and marked `coop.open`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from coop.board import BoardClient
from coop.errors import CoopError
from coop.traces import Converter
from coop.types import State

if TYPE_CHECKING:  # loaded only when spans are sent: a run without traces never imports it
    from coop.otlp import Sender

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables that turn live export on for `coop start`."""

POLL = 1.0
"""Seconds between the live exporter's reads of the board: a span reaches the collector at
most this long after the event that ends it."""

BATCH = 512
"""Spans per request of `coop events --otlp`: the SDK's own default batch size, which keeps
a long tape's requests under receivers' size limits."""

LIVE_TIMEOUT = 5.0
"""Seconds the live exporter waits for the collector per batch before giving up on it."""


def configured(endpoint: str | None) -> bool:
    """Whether spans are to be sent: an endpoint given, or one of the standard variables set."""
    return bool(endpoint) or any(os.environ.get(name) for name in ENDPOINT_VARS)


def check(endpoint: str | None) -> None:
    """Refuse a missing or malformed endpoint or timeout, and a missing `coop[otel]`, in one
    line."""
    try:
        from coop import otlp
    except ImportError as exc:
        raise CoopError(f"traces need OpenTelemetry: pip install 'coop[otel]' ({exc})") from None
    otlp.endpoint_of(endpoint)
    otlp.timeout_of(LIVE_TIMEOUT)


def converter(board: BoardClient, *, content: bool) -> Converter:
    about = board.describe()
    settings = asdict(board.run_settings())
    return Converter(about.id, about.text, about.created, settings, content=content)


def export(board: BoardClient, endpoint: str | None, *, content: bool) -> int:
    """Send the objective's whole tape as one trace; returns the spans sent."""
    from coop import otlp

    sender = otlp.Sender(endpoint)
    try:
        convert = converter(board, content=content)
        ended = board.state()[0] is State.FINISHED  # before the tape: see `status.stream`
        events = list(board.all_events())
        spans = convert.feed(events)
        if not ended and events:
            spans += convert.unfinished(events[-1].at)
        for start in range(0, len(spans), BATCH):
            sender.send(spans[start : start + BATCH])
        return len(spans)
    finally:
        sender.close()


@dataclass
class Exported:
    """What a live export did: spans the collector took, and the time spent converting and
    sending (in the exporter's thread, beside the run)."""

    spans: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def live(
    board: BoardClient, *, endpoint: str | None, content: bool, stats: Exported | None = None
) -> Iterator[None]:
    """While the block runs (and once more after it), send the board's spans as they end.
    A bad endpoint fails here, before the run; a collector failing later is warned about.
    `stats`: filled in as it goes (the bench reads it)."""
    from coop import otlp

    sender = otlp.Sender(endpoint, timeout=LIVE_TIMEOUT)
    done = threading.Event()
    tail = _Tail(board, sender, converter(board, content=content), stats or Exported())
    thread = threading.Thread(target=tail.run, args=(done,), name="coop-traces", daemon=True)
    thread.start()
    log.info("traces: sending spans to %s", sender.endpoint)
    try:
        yield
    finally:
        done.set()
        thread.join(LIVE_TIMEOUT * 2)
        sender.close()


class _Tail:
    """The live exporter's loop: read new events, convert, send — until the run ends, the
    board is gone, or the collector fails once (then the run is not made to wait on it again:
    the journal keeps every span for `coop events --otlp`)."""

    def __init__(
        self, board: BoardClient, sender: Sender, convert: Converter, stats: Exported
    ) -> None:
        self.board, self.sender, self.convert, self.stats = board, sender, convert, stats
        self.since = 0

    def run(self, done: threading.Event) -> None:
        from coop import otlp

        while True:
            last = done.is_set()  # read once more after the run: its answer ends the run span
            try:
                self._turn()
            except otlp.ExportError as exc:
                log.warning(
                    "traces: %s; no more spans are sent during this run (the journal keeps "
                    "them: `coop events %s --otlp`)",
                    exc,
                    self.convert.objective_id,
                )
                return
            except CoopError as exc:  # a board gone: nothing more to read
                log.warning("traces: stopped reading the board (%s)", exc)
                return
            if last:
                return
            done.wait(POLL)

    def _turn(self) -> None:
        started = time.perf_counter()
        events = list(self.board.all_events(self.since))
        if not events:
            return
        self.since = events[-1].seq
        spans = self.convert.feed(events)
        self.sender.send(spans)
        self.stats.spans += len(spans)
        self.stats.seconds += time.perf_counter() - started
