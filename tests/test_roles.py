"""A model per role: `--planner-model`, `--worker-model`, `--answer-model` over `--model`;
each request goes to its role's model (the stand-in records the model of every request), usage
and cost are counted per model at each one's price, status and report name every role's
model, and the check before start asks for every model named."""

from __future__ import annotations

import json

import pytest
from ray.cluster_utils import Cluster

from coop import registry, report
from coop.config import RunSettings
from coop.errors import CoopError
from coop.journal import journal_path
from coop.simulate import Simulator
from coop.testing.standin import MakeStandIn
from coop.text import objective_id
from tests.support.procs import STATE_DIR, assert_one_line_error, coop_env, run_coop, unique

MODELS = ("big", "small", "writer", "embed")
PRICES = {"big": [10.0, 20.0], "small": [1.0, 2.0], "writer": [100.0, 200.0], "embed": [0.1, 0]}


def test_each_role_calls_its_own_model_and_pays_its_price(
    make_standin: MakeStandIn, ray_cluster: Cluster
) -> None:
    server = make_standin(models=MODELS, simulator=Simulator(fanout=2, limit=2))
    env = coop_env(ray_cluster, server, COOP_PRICES=json.dumps(PRICES))
    objective = unique("Split the work by model")
    roles = ("--planner-model", "big", "--answer-model", "writer", "--embedding-model", "embed")
    proc = run_coop("start", objective, "--model", "small", *roles, "--max-cost", "5", env=env)
    assert proc.returncode == 0, proc.stderr
    chats = [c for c in server.calls if c.path.endswith("/chat/completions")]
    by_kind: dict[str, set[str]] = {}
    for c in chats:
        by_kind.setdefault(c.kind, set()).add(c.model)
    assert by_kind["execution"] == {"small"}
    assert by_kind["synthesis"] == {"writer"}
    assert by_kind["creation"] == by_kind["completion"] == {"big"}
    assert all(by_kind[k] == {"big"} for k in ("prioritization", "replan") if k in by_kind)
    snap = registry.find(objective).snapshot()
    for kind, model in (("execution", "small"), ("creation", "big"), ("synthesis", "writer")):
        p_in, p_out = PRICES[model]
        paid = sum(
            c.prompt_tokens * p_in + c.completion_tokens * p_out
            for c in chats
            if c.model == model and c.kind == kind
        )
        assert snap.usage[kind].cost == pytest.approx(paid / 1e6, rel=1e-6)
    models = report.by_model(snap)
    assert set(models) == set(MODELS)
    assert snap.total.cost == pytest.approx(sum(u.cost for u in models.values()))
    said = "(planner big, worker small, answer writer)"
    assert said in snap.llm_label and said in proc.stdout
    text = report.path(STATE_DIR, snap.objective_id).read_text()
    assert said in text and "| execution | small |" in text and "| writer |" in text


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--worker-model", "nope"], "does not know the model 'nope'"),
        (["--answer-model", "nope"], "pass another --answer-model"),
        (["--planner-model", "nope"], "pass another --planner-model"),
    ],
)
def test_an_unknown_model_for_one_role_is_one_line_before_anything_exists(
    make_standin: MakeStandIn, ray_cluster: Cluster, flags: list[str], needle: str
) -> None:
    server = make_standin(models=MODELS)
    env = coop_env(ray_cluster, server, COOP_EMBEDDING_MODEL="embed")
    objective = unique("Ask for every model")
    proc = run_coop("-q", "start", objective, "--model", "small", *flags, env=env, timeout=90)
    assert_one_line_error(proc, needle)
    assert not journal_path(STATE_DIR, objective_id(objective)).exists()


def test_a_cost_cap_needs_a_price_for_every_roles_model() -> None:
    from coop.config import new_settings

    with pytest.raises(CoopError, match="--max-cost needs a price for mystery-model"):
        new_settings(worker_model="mystery-model", max_cost=1.0)
    # embedding calls count too: an unpriced embedding model would be charged nothing
    with pytest.raises(CoopError, match="--max-cost needs a price for mystery-embed"):
        new_settings(embedding_model="mystery-embed", max_cost=1.0)
    assert new_settings(embedding_model="mystery-embed").prices[2] == 0.0  # no cap: no need
    settings = RunSettings(llm="offline", planner_model="big").validate()
    assert set(settings.models().values()) == {settings.model}
