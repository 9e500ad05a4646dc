"""The planner's near-duplicate index."""

from __future__ import annotations

from coop.llm import OfflineLLM
from coop.planner.index import TaskIndex


def test_near_duplicate_proposals_are_turned_away() -> None:
    index = TaskIndex(OfflineLLM(), lambda tokens: None)
    index.add(["Research the soil pH levels for tomatoes"])
    fresh, near = index.split(
        [
            "Research soil pH levels for the tomatoes",  # the same words, reordered
            "Build a sturdy trellis from bamboo canes for the tomatoes",
            "Build a sturdy trellis from bamboo canes for tomatoes",  # near the one before it
            "Plan the watering schedule",
            "research the soil ph levels for tomatoes.",  # exact: left for the board to count
        ]
    )
    assert near == [
        "Research soil pH levels for the tomatoes",
        "Build a sturdy trellis from bamboo canes for tomatoes",
    ]
    assert fresh == [
        "research the soil ph levels for tomatoes.",
        "Build a sturdy trellis from bamboo canes for the tomatoes",
        "Plan the watering schedule",
    ]
