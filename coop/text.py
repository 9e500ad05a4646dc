"""Text rules shared by every layer: task identity and objective ids."""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " .,;:!?\"'`*_"
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
_WORD = re.compile(r"[\w/']+")
SLUG_CHARS = 40
HASH_CHARS = 8


def normalize(task: str) -> str:
    """The identity of a task for duplicate checks: case, spacing and edge punctuation ignored."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", task)).strip(_EDGE_PUNCT).casefold()


def objective_id(objective: str) -> str:
    """A readable slug plus a short hash of the exact text.

    Only [a-z0-9-], at most 49 characters, never starting with a digit: safe as a Ray actor
    name, a file name and a Weaviate tenant name whatever the objective holds.
    """
    ascii_text = unicodedata.normalize("NFKD", objective).encode("ascii", "ignore").decode()
    slug = _SLUG_JUNK.sub("-", ascii_text.lower()).strip("-")[:SLUG_CHARS].strip("-")
    digest = hashlib.sha256(objective.strip().encode("utf-8")).hexdigest()[:HASH_CHARS]
    if not slug or slug[0].isdigit():
        slug = f"o-{slug}".rstrip("-")
    return f"{slug}-{digest}"


def one_line(text: str, limit: int = 200) -> str:
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def words(text: str) -> list[str]:
    """The words of a text, case and punctuation ignored (`N/A` stays one word): what the
    planner compares when it asks whether a model's line restates something."""
    return [w.strip("'") for w in _WORD.findall(text.casefold()) if w.strip("'/")]


def overlap(said: list[str], source: list[str]) -> float:
    """The share of the words `said` that come, in order, from `source` (difflib's matching
    blocks): 1.0 for a copy, high for a copy with a word or two changed."""
    if not said:
        return 0.0
    blocks = difflib.SequenceMatcher(None, said, source, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(said)
