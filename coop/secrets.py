"""Secrets kept out of everything coop shows or keeps: tool and MCP outputs, fetched pages, log
lines, events and results (the board scrubs each event before it journals it).

Two nets. The values coop knows to be secret — its own keys (`SECRET_ENV`) and those this
process was handed for an MCP server (`keep`) — are caught whole and in pieces: any run of at
least `PIECE` characters of one, forwards or reversed, even split by spaces or newlines, since a
prompt-injected tool can be told to print a key backwards or in halves to get it past an
exact-value filter. And text shaped like a credential of any service is caught by its shape,
since the key a page or a server leaks is often someone else's. Ordinary prose, task ids,
hex digests and URLs without credentials pass unchanged: each shape needs the marks of a key
(a service's prefix, a label, digits among letters), not just a long word.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from coop import constants as C

MASK = "***"
"""What a secret becomes."""
PIECE = 8
"""Fewest characters of a known secret that are masked on their own: shorter runs occur by
chance in ordinary text; 8 random characters of a key do not."""
MIN_SECRET = 4
"""Shortest value taken as a secret at all (a local server's key may be a short word)."""
SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|cookie|session", re.IGNORECASE)
"""An MCP server's env variable or header whose value `keep_config` treats as secret; the
others (`NODE_ENV=production`, `LOG_LEVEL=debug`) are ordinary words that must not vanish from
every output."""

_kept: set[str] = set()
"""Secret values this process was handed besides its own keys (see `keep`)."""

_ANY = r"[^\s\"',;&<>]"
"""A character of a credential's value: anything but what ends one in a header, a line of
env, JSON or a query string."""
_VALUE = rf"(?:(?={_ANY}*\d){_ANY}{{8,}}|{_ANY}{{20,}})"
"""A credential's value after a bare label: 8 or more characters with a digit among them, or
20 or more of any kind, so that `token = tokenize(x)` in a program's output is left alone."""

LABELLED = re.compile(
    r"(?P<keep>\b[\w-]*?(?:api[_-]?key|access[_-]?key|secret|token|passw(?:or)?d|authorization"
    r"|auth)[\"']?\s*[:=]\s*[\"']?(?:(?P<scheme>Bearer|Basic|Token|Bot)\s+)?)"
    rf"(?(scheme){_ANY}{{4,}}|{_VALUE})",
    re.IGNORECASE,
)
"""A value under a credential's label — a header (`X-Weaviate-Api-Key: …`, `Authorization:
Basic …`), an env line (`WEAVIATE_API_KEY=…`), a JSON field (`"client_secret": "…"`): whose
key it is cannot be told from its shape, only from its label. The label is kept; after an
auth scheme (`Bearer`, `Basic`…) any value is a credential."""
BEARER = re.compile(r"(?P<keep>\bBearer\s+)" + _VALUE)
"""A bearer token without its header (`curl -H` lines, logs of a request)."""
URL_CREDENTIALS = re.compile(
    r"(?P<keep>\b[a-z][a-z0-9+.-]*://)[^\s/@:]+:[^\s/@]+(?=@)", re.IGNORECASE
)
"""`user:password@` in a URL (a database or a proxy URL printed by a tool); the host stays."""

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
"""A JSON Web Token: base64url JSON (`{"` is `eyJ`), a payload, a signature — a session or an
API credential, whoever issued it."""
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")
"""An AWS access key id (long-term `AKIA`, temporary `ASIA`…): its secret key has no shape, but
is caught by its label (`aws_secret_access_key = …`)."""
GITHUB = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")
"""GitHub tokens: personal (`ghp_`, fine-grained `github_pat_`), OAuth (`gho_`), user-to-server
(`ghu_`), server-to-server (`ghs_`) and refresh (`ghr_`)."""
SLACK = re.compile(r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9-]{10,}")
"""Slack tokens: bot (`xoxb-`), user (`xoxp-`), app-level (`xapp-`) and the rest."""
SK = re.compile(r"\b(?:sk|key|token)-[A-Za-z0-9_*-]{6,}", re.IGNORECASE)
"""`sk-` keys: OpenAI's (`sk-…`, `sk-proj-…`, the `sk-ab***yz` of its error messages) and
Anthropic's (`sk-ant-…`), which the model clients coop runs beside may hold; and the `key-…`
and `token-…` shapes of other services (any case), as coop's first scrub masked them."""
STRIPE = re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")
"""Stripe secret and restricted keys."""
GOOGLE = re.compile(r"\bAIza[0-9A-Za-z_-]{35}")
"""A Google API key."""
HUGGING_FACE = re.compile(r"\bhf_[A-Za-z0-9]{30,}")
"""A Hugging Face access token (open models' weights are often fetched with one)."""
PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
"""A PEM private key block (SSH, TLS), whole or cut off at the end of the text."""

SHAPES = (PRIVATE_KEY, JWT, AWS_KEY_ID, GITHUB, SLACK, SK, STRIPE, GOOGLE, HUGGING_FACE)
"""Credentials known by their shape alone: masked whole."""
LABELS = (URL_CREDENTIALS, LABELLED, BEARER)
"""Credentials known by what precedes them: the value is masked, the label kept."""
HINTS = {
    PRIVATE_KEY: re.compile("-----BEGIN "),
    JWT: re.compile("eyJ"),
    AWS_KEY_ID: re.compile("AKIA|ASIA|ABIA|ACCA"),
    GITHUB: re.compile("gh[pousr]_|github_pat_"),
    SLACK: re.compile("xox[abposre]-|xapp-"),
    SK: re.compile("(?:sk|key|token)-", re.IGNORECASE),
    STRIPE: re.compile("k_(?:live|test)_"),
    GOOGLE: re.compile("AIza"),
    HUGGING_FACE: re.compile("hf_"),
    URL_CREDENTIALS: re.compile("://"),
    LABELLED: re.compile(r"api[_-]?key|access[_-]?key|secret|token|passw|auth", re.IGNORECASE),
    BEARER: re.compile("Bearer"),
}
"""What each pattern's match must contain, found by a plain search: text without it is not
run through the pattern itself. Scrubbing runs on every event the board journals and every
tool output, and a pattern that tries a label at every word (LABELLED) costs a hundred times
more than the search that says no label is there."""

_NON_SPACE = re.compile(r"\S+")


def keep(values: Iterable[str]) -> None:
    """Treat `values` as secret in this process from now on, like its own keys."""
    _kept.update(v for v in values if len(v) >= MIN_SECRET)


def keep_config(*maps: Mapping[str, str]) -> None:
    """Treat as secret the values of an MCP server's env and headers whose names say they are
    (`SECRET_NAME`)."""
    keep(value for names in maps for name, value in names.items() if SECRET_NAME.search(name))


SHORT = 64
"""Strings up to this long are scrubbed through a cache: an event's names and kinds (its
worker, "execution", "model"…) come back on every event the board journals."""


def scrub(text: str) -> str:
    """`text` with every secret coop knows of, and everything shaped like one, masked."""
    return _scrub(text, _known())


def _scrub(text: str, known: tuple[str, ...]) -> str:
    if len(text) <= SHORT:
        return _scrub_short(text, known)
    return _scrub_text(text, known)


@functools.lru_cache(maxsize=1024)
def _scrub_short(text: str, known: tuple[str, ...]) -> str:
    return _scrub_text(text, known)  # keyed by what is known: a secret kept later counts


def _scrub_text(text: str, known: tuple[str, ...]) -> str:
    for value in known:
        if len(value) < PIECE:  # too short to look for in pieces: whole only
            text = text.replace(value, MASK)
    text = _mask_pieces(text, _grams(known))
    for shape in SHAPES:
        if HINTS[shape].search(text):
            text = shape.sub(MASK, text)
    for label in LABELS:
        if HINTS[label].search(text):
            text = label.sub(r"\g<keep>" + MASK, text)
    return text


def scrub_data(data: Any) -> Any:
    """`data` (an event's: JSON-like) with every string in it scrubbed."""
    return _scrub_data(data, _known())  # the secrets known, looked up once per event


def _scrub_data(data: Any, known: tuple[str, ...]) -> Any:
    if isinstance(data, str):
        return _scrub(data, known)
    if isinstance(data, list):
        return [_scrub_data(item, known) for item in data]
    if isinstance(data, tuple):
        return tuple(_scrub_data(item, known) for item in data)
    if isinstance(data, dict):
        return {key: _scrub_data(value, known) for key, value in data.items()}
    return data


def _known() -> tuple[str, ...]:
    """The secret values of this process, longest first (so a key containing another is
    masked whole)."""
    own = (os.environ.get(name, "") for name in C.SECRET_ENV)
    values = {v for v in own if len(v) >= MIN_SECRET} | _kept
    return tuple(sorted(values, key=lambda v: (-len(v), v)))


@functools.lru_cache(maxsize=8)
def _grams(known: tuple[str, ...]) -> frozenset[str]:
    """Every run of PIECE characters of each known value, forwards and reversed."""
    return frozenset(
        way[i : i + PIECE]
        for value in known
        for way in (value, value[::-1])
        for i in range(len(way) - PIECE + 1)
    )


def _mask_pieces(text: str, grams: frozenset[str]) -> str:
    """Mask each run of text made of known secrets' PIECE-grams, whitespace between its
    characters ignored (a key split across a line break is one run, masked with the break)."""
    if not grams:
        return text
    runs = [(m.start(), m.group()) for m in _NON_SPACE.finditer(text)]
    squeezed = "".join(word for _, word in runs)
    offsets, total = [], 0  # where each run starts in `squeezed`
    for _, word in runs:
        offsets.append(total)
        total += len(word)

    def original(at: int) -> int:
        """Where character `at` of `squeezed` is in `text`."""
        run = bisect.bisect_right(offsets, at) - 1
        return runs[run][0] + at - offsets[run]

    spans: list[list[int]] = []
    for at in range(len(squeezed) - PIECE + 1):
        if squeezed[at : at + PIECE] in grams:
            if spans and at <= spans[-1][1]:
                spans[-1][1] = at + PIECE
            else:
                spans.append([at, at + PIECE])
    pieces, kept = [], 0  # built in one pass: one copy of the text, however many spans
    for start, end in spans:
        pieces += [text[kept : original(start)], MASK]
        kept = original(end - 1) + 1
    pieces.append(text[kept:])
    return "".join(pieces)
