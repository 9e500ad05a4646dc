#!/usr/bin/env python
"""A Python function as a tool: `@coop.tool` makes `forecast` a tool the model can call (its
schema from the annotations, its description from the docstring), and `coop start --tool
scripts.example_tool:forecast` offers it from this run's workers. The simulated model calls it
in every task; the example then reads the objective's tape and shows what the tool answered.

    python -m scripts.example_tool        # offline: no key, no server; starts a local Ray

Exits 1 unless the tool was called and answered in every task.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from pydantic import BaseModel, Field

import coop

COOP = Path(sys.executable).with_name("coop")


class Forecast(BaseModel):
    place: str
    days: int
    rain_mm: list[float]


@coop.tool
def forecast(place: str, days: int = Field(3, ge=1, le=14)) -> Forecast:
    """Rain forecast for a place, in mm per day, for the next `days` days (1 to 14)."""
    seed = sum(map(ord, place))
    return Forecast(place=place, days=days, rain_mm=[(seed * (d + 1)) % 9 / 2 for d in range(days)])


def main() -> int:
    objective = f"Plan a week of watering for a small garden [{uuid.uuid4().hex[:6]}]"
    flags = ["--llm", "offline", "--workers", "1"]
    tool = ["--tool", "scripts.example_tool:forecast"]
    run = subprocess.run([str(COOP), "-q", "start", objective, *flags, *tool], text=True)
    if run.returncode != 0:
        return 1
    tape = subprocess.run(
        [str(COOP), "events", objective, "--json"], capture_output=True, text=True, check=True
    ).stdout
    events = [json.loads(line) for line in tape.splitlines()]
    calls = [e for e in events if e["event"] == "step" and e.get("tool") == "forecast"]
    tasks = {e["id"] for e in events if e["event"] == "completed"}
    for call in calls:
        print(f"task #{call['task']} called forecast: {call['text'][:100]}")
    return 0 if calls and {c["task"] for c in calls} == tasks and all(c["ok"] for c in calls) else 1


if __name__ == "__main__":
    raise SystemExit(main())
