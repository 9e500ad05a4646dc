"""Reading a model's reply as a tolerant reader would, before any parser looks at it.

Real servers and small models wrap what coop asked for: llama.cpp's chat templates can send
JSON with its quotes HTML-escaped (`{&#34;met&#34;: false}`), models put JSON or lists in
Markdown code fences, and chatter comes before and after the object. Every parser of a
planner's reply reads `plain(reply)`; every JSON object it wants is `first_object(reply)`.
"""

from __future__ import annotations

import ast
import html
import json
import re
from typing import Any

_FENCE = re.compile(r"^[ \t]*(?:```|~~~)[\w+.-]*[ \t]*$", re.MULTILINE)
MAX_CANDIDATES = 50
"""Most `{` positions tried for an object: a reply of braces is not searched forever."""


def plain(text: str) -> str:
    """The reply with HTML entities unescaped and code fence lines taken out."""
    return _FENCE.sub("", html.unescape(text)).strip()


def first_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in the reply (a Python dict literal, as small models write
    `{'met': False}`, is read too); None when there is none."""
    text = plain(text)
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"\{", text)][:MAX_CANDIDATES]
    for start in starts:
        try:
            value: object = decoder.raw_decode(text, start)[0]
        except ValueError:
            value = _literal(text, start)
        if isinstance(value, dict):
            return value
    return None


def _literal(text: str, start: int) -> object:
    """A Python dict literal starting at `start` (up to some closing brace), or None."""
    for end in [m.end() for m in re.finditer(r"\}", text[start:])][:MAX_CANDIDATES]:
        try:
            return ast.literal_eval(text[start : start + end])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
    return None
