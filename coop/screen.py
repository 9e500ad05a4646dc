"""Which proposed lines are not tasks: what a weak model proposes instead of work.

A small model asked for a numbered list of tasks gives back the prompt's own instructions
("Return no list if nothing is left to do"), placeholders (`(nothing)`, `N/A`, `[task]`), a
paragraph, or the objective itself — each a line a list parser takes for a task. The planner
refuses them with a reason (`Refusal`), journaled beside the duplicates it turns away.
"""

from __future__ import annotations

from collections.abc import Sequence

from coop.text import overlap, words
from coop.types import Refusal

LONG_TASK_CHARS = 400
"""A proposed line longer than this is a paragraph, not one line of work (tasks run to a
sentence or two; the board cuts any task at `MAX_TASK_CHARS`)."""
COPIED = 0.75
"""Share of a line's words taken, in order, from one sentence of the prompt (or from the
objective) at which the line restates it: SmolLM2's "Return no list if anything is left to
do" is 8 of 9 words of the prompt's "Return no list if nothing is left to do"."""
COVERED = 0.6
"""Share of a line's words that whole sentences of the prompt make up for it to restate
them (a line that strings several instructions together)."""
MIN_WORDS = 3
"""Fewest words of a line compared by share; a shorter one restates a heading only whole."""
FILLER = frozenset(
    [
        *("nothing", "none", "n/a", "na", "nil", "null", "tbd", "todo", "placeholder"),
        *("task", "tasks", "item", "list", "description", "id", "here", "empty"),
        *("new", "no", "more", "yet", "needed", "left", "to", "do", "is", "are", "the"),
        *("result", "results", "output", "response", "answer"),
    ]
)
"""Words that a placeholder line is made of, and nothing else: `(nothing)`, `N/A`, `[task]`,
"No new tasks needed", and the prompt's labels around one ("Result: 2 (nothing)")."""


def refusal(line: str, objective: str, own: Sequence[str]) -> Refusal | None:
    """Why `line` is not a task (None when it may be one). `own`: the sentences and headings
    of the prompt that asked for it (its instructions, not its data)."""
    said = [w for w in words(line) if not w.isdigit()]  # "(3) Return a list…" is that list
    if not said or set(said) <= FILLER:
        return Refusal.PLACEHOLDER
    if len(line) > LONG_TASK_CHARS:
        return Refusal.LONG
    if said[:1] == ["objective"] and said[1:]:  # "Objective: <the objective>"
        said = said[1:]
    goal = [w for w in words(objective) if not w.isdigit()]
    if said == goal or (len(said) >= MIN_WORDS and _copied(said, goal)):
        return Refusal.OBJECTIVE
    if _restates(said, [words(s) for s in own]):
        return Refusal.PROMPT
    return None


def _copied(said: list[str], source: list[str]) -> bool:
    """Is the line mostly `source`, and `source` mostly the line (not a task that merely
    names the objective's subject)?"""
    return overlap(said, source) >= COPIED and overlap(source, said) >= COPIED


def _restates(said: list[str], own: list[list[str]]) -> bool:
    """Is the line one of the sentences, mostly made of one, or of several strung together?"""
    text = f" {' '.join(said)} "
    covered = 0
    for sentence in filter(None, own):
        if said == sentence or (len(said) >= MIN_WORDS and overlap(said, sentence) >= COPIED):
            return True
        if len(sentence) >= MIN_WORDS and f" {' '.join(sentence)} " in text:
            covered += len(sentence)
    return covered >= COVERED * len(said)
