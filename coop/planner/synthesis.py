"""The deliverable: the objective's answer, written by the model from the run's results when the
run ends, citing the tasks it drew on — the guide, the plan, the comparison the objective
names, instead of a heap of fragments (Magentic-One's final answer; BabyAGI's users asked for
"a final summary").

When every result fits one prompt, one call writes the answer. When they do not, consecutive
results are grouped into prompts that fit, each group is condensed into notes that keep their
citations, and the notes are synthesized in turn: hierarchically, every prompt within
`--max-prompt-tokens`. Every call is an ordinary counted, rate-limited call. Before the first,
the whole synthesis's likely cost is held against what is left of the budget, so a run stopped
by a cap gets its answer only if `--synthesis-reserve` kept room for it, and says so if not.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence

from coop import agents
from coop.calls import Context, ask
from coop.llm import LLMContextError, LLMError
from coop.types import Answer, Kind, Result

log = logging.getLogger(__name__)

_CITED = re.compile(r"\[#(\d+)\]")


def synthesize(ctx: Context, results: Sequence[Result], revision: int) -> Answer:
    """The answer from `results`, or an Answer that says why it is missing."""
    if not results:
        return Answer(revision, missing="no task was completed")
    items = [agents.cited(r.task_id, r.task, r.text) for r in results]
    groups = group(items, lambda part: _size(ctx, part), _room(ctx))
    price = _price(ctx, groups)
    short = ctx.board.budget_short(*price)
    if short:
        return Answer(
            revision,
            missing=f"{short}; keep part of a cap for it with --synthesis-reserve",
        )
    try:
        text = _write(ctx, items, groups)
    except (LLMError, LLMContextError) as exc:
        return Answer(revision, missing=f"the synthesis call failed: {exc}")
    body, met = agents.parse_synthesis(text)
    if not body:
        return Answer(revision, missing="the model's answer was empty")
    cited = sorted({int(n) for n in _CITED.findall(body)} & {r.task_id for r in results})
    return Answer(revision, body, cited, met)


def group(items: Sequence[str], size: Callable[[list[str]], int], room: int) -> list[list[str]]:
    """Consecutive items packed into groups whose prompt (`size` tokens) fits `room`. An item
    too long for any prompt goes alone, and its prompt trims it."""
    groups: list[list[str]] = [[]]
    for item in items:
        if groups[-1] and size([*groups[-1], item]) > room:
            groups.append([])
        groups[-1].append(item)
    return groups


def _write(ctx: Context, items: list[str], groups: list[list[str]]) -> str:
    """Synthesize; while the items take several prompts, condense each group to notes first."""
    while len(groups) > 1:
        log.info("synthesis: %d item(s) in %d prompts, condensed first", len(items), len(groups))
        items = [_ask(ctx, part, index) for index, part in enumerate(groups, 1)]
        groups = group(items, lambda part: _size(ctx, part), _room(ctx))
    return _ask(ctx, groups[0], 0)


def _ask(ctx: Context, part: list[str], index: int) -> str:
    """One synthesis call: the answer (`index` 0), or the notes of group `index`."""
    return ask(
        ctx,
        Kind.SYNTHESIS,
        lambda budget: agents.synthesis_prompt(
            ctx.objective, part, index, ctx.llm.tokenizer, budget
        ),
    )


def _room(ctx: Context) -> int:
    return ctx.settings.max_prompt_tokens - ctx.settings.max_completion_tokens


def _size(ctx: Context, part: list[str]) -> int:
    """Tokens of a synthesis prompt holding `part` whole."""
    prompt = agents.synthesis_prompt(ctx.objective, part, 1, ctx.llm.tokenizer, 10**9)
    return ctx.llm.tokenizer.count(prompt)


def _price(ctx: Context, groups: list[list[str]]) -> tuple[int, int]:
    """(prompt, completion) tokens the synthesis will at most take: its first prompts as they
    are, then prompts of notes, each note at most one full answer long."""
    out = ctx.settings.max_completion_tokens
    prompt = sum(min(_size(ctx, g), _room(ctx)) for g in groups)
    calls, notes = len(groups), len(groups)
    while notes > 1:
        level = max(1, math.ceil(notes * out / _room(ctx)))
        prompt += notes * out
        calls, notes = calls + level, level
    return prompt, calls * out
