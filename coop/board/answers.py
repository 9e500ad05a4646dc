"""The objective's answers: one revision per run that wrote one, numbered 1, 2… in the order
they were recorded, none ever replaced (a finished objective continued with a larger cap
gets a new revision; status and the report show the newest)."""

from __future__ import annotations

from coop.types import Answer


class Answers:
    def __init__(self) -> None:
        self._kept: list[Answer] = []

    def next_revision(self) -> int:
        return len(self._kept) + 1

    def keep(self, answer: Answer) -> None:
        """Keep the revision `next_revision` named (the journal's order is the numbering)."""
        assert answer.revision == self.next_revision(), (answer.revision, self.next_revision())
        self._kept.append(answer)

    def latest(self) -> Answer | None:
        return self._kept[-1] if self._kept else None

    def all(self) -> list[Answer]:
        return list(self._kept)
