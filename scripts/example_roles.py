#!/usr/bin/env python
"""A model per role: a strong model plans, a cheap one executes, another writes the answer
(`--planner-model`, `--model` for the workers, `--answer-model`). Run against the local
stand-in model server, which serves three models by name and records which model every request
asked for; the example prints the requests per agent and model, and the cost per model from the
report (prices given in COOP_PRICES).

    python -m scripts.example_roles           # the stand-in on loopback; starts a local Ray

Exits 1 unless the planner's calls went to the planner's model, the executions to the workers'
and the synthesis to the answer's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

from coop.simulate import Simulator
from coop.testing.standin import StandIn
from coop.text import objective_id

COOP = Path(sys.executable).with_name("coop")
ROLES = {"planner": "big-planner", "worker": "small-worker", "answer": "careful-writer"}
PRICES = {"big-planner": [5.0, 15.0], "small-worker": [0.1, 0.4], "careful-writer": [2.5, 10.0]}
EXPECTED = {
    "creation": ROLES["planner"],
    "prioritization": ROLES["planner"],
    "completion": ROLES["planner"],
    "execution": ROLES["worker"],
    "synthesis": ROLES["answer"],
}


def main() -> int:
    server = StandIn(models=(*ROLES.values(), "embedder"), simulator=Simulator(fanout=2, limit=4))
    server.start()
    state = tempfile.mkdtemp(prefix="coop-ex-state-")
    env = {
        **os.environ,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "stand-in",
        "COOP_PRICES": json.dumps({**PRICES, "embedder": [0.02, 0]}),
        "COOP_STATE_DIR": state,
    }
    objective = f"Plan a herb garden for a north-facing balcony [{uuid.uuid4().hex[:6]}]"
    flags = ["--model", ROLES["worker"], "--planner-model", ROLES["planner"]]
    flags += ["--answer-model", ROLES["answer"], "--embedding-model", "embedder"]
    run = subprocess.run([str(COOP), "-q", "start", objective, *flags], env=env, text=True)
    server.stop()
    counts = Counter((c.kind, c.model) for c in server.calls if c.path.endswith("/completions"))
    print("\nrequests by agent and model:")
    for (kind, model), n in sorted(counts.items()):
        print(f"  {kind:15} {model:15} {n}")
    report = Path(state, "reports", f"{objective_id(objective)}.md").read_text()
    print("\ncost per model (from the report):")
    print(
        "\n".join(
            line
            for line in report.splitlines()
            if line.startswith("| model |")
            or any(line.startswith(f"| {m} |") for m in (*ROLES.values(), "embedder"))
        )
    )
    wrong = [(k, m) for k, m in counts if k in EXPECTED and EXPECTED[k] != m]
    return 0 if run.returncode == 0 and not wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())
