"""Output that says nothing though it is long: what a weak model writes when it loops.

Small models asked for an answer can give one line ten times over, the prompt back, or
citations copied from the prompt's example (`[#id]`). Such text is no parse error — it reads
as an answer — so it is recognised here, by its shape, and `flaw` says what is wrong with it
in words that follow "the model's answer" ("repeats itself").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from coop.text import overlap, words

REPEATS = "repeats itself"
ECHOES = "echoes the prompt"
PLACEHOLDERS = "cites placeholders instead of tasks"

REPEATED_SHARE = 0.5
"""Share of an answer's lines (or sentences) that are repeats of an earlier one at which it
repeats itself: a real answer repeats a line or two, never half of them."""
MIN_UNITS = 3
"""Fewest lines (or sentences) in which repetition is judged."""
MANY = 4
"""Times one line (or sentence) of MIN_LOOP_WORDS or more may appear before the text repeats
itself, whatever else it holds: a model looping on a paragraph."""
MIN_LOOP_WORDS = 4
ECHOED_SHARE = 0.3
"""Share of an answer's words in sentences copied from its prompt's instructions at which it
echoes the prompt."""
COPIED = 0.75
"""Share of a sentence's words taken, in order, from one of the prompt's at which it is a
copy (a word or two changed, as small models do)."""
MIN_ECHO_WORDS = 5
"""Shortest sentence whose copy counts as an echo: "Objective met" is a verdict, not one."""
_PLACEHOLDER = re.compile(
    r"\[(?:#\s*)?(?:id|n|x|task|task[ _-]?id|\.\.\.|…)\s*\]"  # [#id], [id], [#task]…
    r"|\[file path\]"  # the synthesis prompt's own example
    r"|(?<![\w\]])\[[a-z]+(?:_[a-z]+)+\]",  # [task_list_name], not code's arr[max_index]
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")


def flaw(text: str, own: Sequence[str]) -> str:
    """What makes `text` degenerate ("" when nothing does). `own`: the sentences of the
    instructions in the prompt it answers."""
    if _repeats([line for line in text.splitlines() if len(words(line)) >= 2]):
        return REPEATS
    if _repeats([s for s in _SENTENCE.split(" ".join(text.split())) if len(words(s)) >= 2]):
        return REPEATS
    if _echoes(text, [words(s) for s in own if len(words(s)) >= MIN_ECHO_WORDS]):
        return ECHOES
    if _PLACEHOLDER.search(text):
        return PLACEHOLDERS
    return ""


def _repeats(units: list[str]) -> bool:
    if len(units) < MIN_UNITS:
        return False
    seen = Counter(" ".join(words(u)) for u in units)
    looped = any(n >= MANY and len(u.split()) >= MIN_LOOP_WORDS for u, n in seen.items())
    return looped or 1 - len(seen) / len(units) >= REPEATED_SHARE


def _echoes(text: str, own: list[list[str]]) -> bool:
    """Do sentences copied from the prompt's instructions make up much of the text?"""
    sentences = [words(s) for s in _SENTENCE.split(text)]
    total = sum(len(s) for s in sentences)
    copied = sum(
        len(s)
        for s in sentences
        if len(s) >= MIN_ECHO_WORDS and any(overlap(s, o) >= COPIED for o in own)
    )
    return total > 0 and copied >= ECHOED_SHARE * total
