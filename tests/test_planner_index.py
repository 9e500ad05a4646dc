"""The planner's near-duplicate index."""

from __future__ import annotations

from coop.llm import Embeddings, OfflineLLM
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


class Counting(OfflineLLM):
    """The simulator, noting every text it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed(self, texts: list[str]) -> Embeddings:
        self.embedded += texts
        return super().embed(texts)


def test_a_task_split_let_through_is_added_without_being_embedded_again() -> None:
    """The board adds what `split` let through (or some of it): those tasks are known by the
    vectors they were compared by, and paid for once; a task from elsewhere is embedded."""
    llm = Counting()
    index = TaskIndex(llm, lambda tokens: None)
    fresh, near = index.split(["Plan the watering schedule", "Buy bamboo stakes"])
    assert fresh == ["Plan the watering schedule", "Buy bamboo stakes"] and near == []
    index.add(["Plan the watering schedule", "Label the seed trays"])
    assert llm.embedded == [
        "Plan the watering schedule",
        "Buy bamboo stakes",
        "Label the seed trays",
    ]
    assert index.split(["Plan the schedule watering", "Label the trays seed"])[1] == [
        "Plan the schedule watering",
        "Label the trays seed",
    ]
