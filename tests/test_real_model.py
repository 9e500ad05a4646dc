"""A whole objective against a real model, when one is configured: what a real model's output
does to the planner (issue 21) — SmolLM2-135M-Instruct behind llama.cpp was the model this was
written against. It is not run in CI: a model server takes minutes to build and to answer.

    COOP_TEST_BASE_URL=http://127.0.0.1:8081/v1 COOP_TEST_MODEL=smollm2 \\
    COOP_TEST_EMBEDDING_MODEL=smollm2 pytest tests/test_real_model.py -s

(`COOP_TEST_API_KEY` too where the server wants a key.) The run's figures — tasks, refusals
by reason, unreadable replies, the answer's verdict, the time — are printed and written beside
the test's logs, for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from coop import agents, degenerate, registry, screen
from coop.tokens import estimating
from coop.types import Reason
from tests.support.procs import coop_env, spawn_start, unique

BASE_URL = os.environ.get("COOP_TEST_BASE_URL", "")
MODEL = os.environ.get("COOP_TEST_MODEL", "")
EMBEDDING_MODEL = os.environ.get("COOP_TEST_EMBEDDING_MODEL", "")
OBJECTIVE = "Write a short guide to growing tomatoes on a balcony"
MAX_TASKS = 10
TIMEOUT = 1800.0
"""Seconds the whole objective may take: a 135M model on 2 cores answers in seconds a call."""

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (BASE_URL and MODEL and EMBEDDING_MODEL),
        reason="no real model configured: set COOP_TEST_BASE_URL (an OpenAI-compatible server: "
        "llama.cpp, Ollama, vLLM), COOP_TEST_MODEL and COOP_TEST_EMBEDDING_MODEL to run a "
        "whole objective against it",
    ),
]


def prompts_own_words() -> list[str]:
    """The instructions of the creation and replanning prompts, as the planner sent them."""
    tok = estimating("any")
    creation = agents.creation_prompt(OBJECTIVE, [], ["x"], tok, 4000, wanted=3)
    return agents.instructions(creation) + agents.instructions(
        agents.replan_prompt(OBJECTIVE, ["x"], tok, 4000)
    )


def test_a_whole_objective_against_a_real_model(ray_cluster: Cluster, tmp_path: Path) -> None:
    """It ends by itself with a reason (not failed, not stopped); no task is a line the
    planner refuses (the prompt's words, placeholders, paragraphs, the objective); the answer
    is not degenerate, or it is marked so; nothing ends in a traceback."""
    env = coop_env(
        ray_cluster,
        OPENAI_BASE_URL=BASE_URL,
        OPENAI_API_KEY=os.environ.get("COOP_TEST_API_KEY", "no-key"),
    )
    objective = unique(OBJECTIVE)
    flags = ["--model", MODEL, "--embedding-model", EMBEDDING_MODEL, "--max-tasks", str(MAX_TASKS)]
    began = time.monotonic()
    log = tmp_path / "start.log"
    start, oid = spawn_start(objective, *flags, env=env, log=log)
    code = start.wait(TIMEOUT)
    took = time.monotonic() - began
    said = log.read_text()
    assert "Traceback" not in said, said[-3000:]
    snap = registry.find(oid).snapshot()
    assert snap.reason is not None and code == snap.reason.exit_code, said[-3000:]
    assert snap.reason not in (Reason.FAILED, Reason.STOPPED), snap.detail
    board = registry.find(oid)
    tasks = [text for _, text in board.task_texts()][1:]  # after the seed
    own = prompts_own_words()
    refusable = [t for t in tasks if screen.refusal(t, objective, own) is not None]
    assert not refusable, refusable
    answer = snap.answer
    assert answer is not None
    if answer.text:
        synthesis = agents.synthesis_prompt(objective, ["[#1] x"], 0, estimating("a"), 4000)
        flaw = degenerate.flaw(answer.text, agents.instructions(synthesis))
        assert answer.flaw or not flaw, f"an unmarked degenerate answer ({flaw})"
    figures = {
        "model": MODEL,
        "ended": f"{snap.reason.value}: {snap.detail}",
        "seconds": round(took),
        "tasks_completed": snap.completed,
        "tasks_added": len(tasks),
        "tasks": tasks,
        "refused": snap.progress.refused,
        "duplicates": [snap.progress.exact_duplicates, snap.progress.near_duplicates],
        "unreadable": snap.progress.unreadable,
        "completion_checks": snap.progress.checks,
        "answer": {
            "judged": answer.met,
            "flaw": answer.flaw,
            "cites": answer.cited,
            "missing": answer.missing,
            "first_lines": answer.text.splitlines()[:6],
        },
        "tokens": snap.total.tokens,
    }
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
