"""Objective ids are safe names whatever the objective holds."""

from __future__ import annotations

import re

import pytest

from coop.text import normalize, objective_id

SAFE = re.compile(r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$")


@pytest.mark.parametrize(
    "objective",
    [
        "Grow tomatoes",
        "Say \"hello\" and 'bye'",
        "a/b\\c/../../etc/passwd",
        "🍅🍅🍅",
        "Ünïcödé résumé",
        "x" * 10_000,
        "   ",
        "123 numbers first",
        "tab\tnew\nline",
        "CON",
    ],
)
def test_objective_id_is_safe_for_actor_file_and_tenant_names(objective: str) -> None:
    oid = objective_id(objective)
    assert SAFE.match(oid), oid
    assert len(oid) <= 64  # Weaviate tenant names


def test_objective_id_is_stable_and_distinguishes_texts() -> None:
    assert objective_id("Grow tomatoes") == objective_id("Grow tomatoes")
    assert objective_id("Grow tomatoes") != objective_id("Grow Tomatoes")
    assert objective_id("Grow tomatoes").startswith("grow-tomatoes-")


def test_normalize() -> None:
    assert normalize("  Write   THE intro. ") == normalize("write the intro") == "write the intro"
    assert normalize("...") == ""
