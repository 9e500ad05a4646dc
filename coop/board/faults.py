"""The test build's fault hook: a board whose process dies at a chosen point, so that tests can
show that a call Ray retries on the restarted board counts once (see `Board.invoke`). Unset in
a real run, where it costs one look at the environment when the board starts."""

from __future__ import annotations

import os
from pathlib import Path

CRASH_ENV = "COOP_TEST_BOARD_CRASH"
"""The test build's fault hook: "<dir>:<method>,<method>…" makes the board's process die once
per named method, after the call's transaction commits and before its reply leaves; the dir
keeps which have died (a restarted board does not die again on the retried call)."""


def fault_hook() -> frozenset[str]:
    """The methods `CRASH_ENV` names, read once when the board starts; none in a real run."""
    where, _, methods = os.environ.get(CRASH_ENV, "").partition(":")
    return frozenset(m for m in methods.split(",") if m and where)


def crash_once(method: str) -> None:
    marker = Path(os.environ[CRASH_ENV].partition(":")[0]) / method
    if not marker.exists():
        marker.touch()
        os._exit(1)
