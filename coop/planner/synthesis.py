"""The deliverable: the objective's answer, written by the model from the run's results when the
run ends, citing the tasks it drew on — the guide, the plan, the comparison the objective
names, instead of a heap of fragments (Magentic-One's final answer; BabyAGI's users asked for
"a final summary").

The workspace's files (with tools) are part of what the answer draws on, after the results:
a file a task wrote is often the work itself.

When every result fits one prompt, one call writes the answer. When they do not, consecutive
results are grouped into prompts that fit, each group is condensed into notes that keep their
citations, and the notes are synthesized in turn: hierarchically, every prompt within
`--max-prompt-tokens`. Notes may take a third of a prompt's room, so that every level packs at
least three of them into one prompt and the levels always converge.

An answer that is degenerate — one line over and over, the prompt echoed back, placeholder
citations (degenerate.py) — is asked for once more, told what was wrong with it; a second
degenerate answer is kept, marked with its `flaw`, for status, the report and
`coop results --final` to say so. Only citations of the run's own tasks are counted.

With an answer schema, the answer is JSON matching it (answers.py): asked for with structured
outputs where the server takes them, else in words; a reply that does not match is asked for
once more, shown its error; a second miss is kept as written, marked `invalid`.

Every call is an ordinary counted, rate-limited call. Before the first, the whole synthesis's
likely cost is held against what is left of the budget, so a run stopped by a cap gets its
answer only if `--synthesis-reserve` kept room for it, and says so if not.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence

from coop import agents, answers, degenerate
from coop import constants as C
from coop.calls import Context, ask
from coop.llm import LLMContextError, LLMError, NoStructuredOutputs
from coop.types import Answer, Kind, Result

log = logging.getLogger(__name__)

MAX_FILES = 100
"""Most workspace files given to the synthesis (in path order; the rest are named in the log):
the answer is one call's worth of reading, not an archive."""

_CITED = re.compile(r"\[#(\d+)\]")


def synthesize(
    ctx: Context, results: Sequence[Result], ended: str, files: Sequence[tuple[str, str]] = ()
) -> Answer:
    """The answer from `results` and the workspace's `files` (path, text), or an Answer that
    says why it is missing. `ended`: how the run ended, in words, for the model to judge
    whether the objective was met."""
    if not results:
        return Answer(missing="no task was completed")
    if len(files) > MAX_FILES:
        log.info(
            "synthesis: %d workspace file(s) beyond the first %d left out",
            len(files) - MAX_FILES,
            MAX_FILES,
        )
    items = [agents.cited(r.task_id, r.task, r.text) for r in results]
    items += [agents.filed(path, text[: C.MAX_RESULT_CHARS]) for path, text in files[:MAX_FILES]]
    groups = group(items, lambda part: _size(ctx, part), _room(ctx))
    price = _price(ctx, groups)
    short = ctx.board.budget_short(*price)
    if short:
        return Answer(missing=f"{short}; keep part of a cap for it with --synthesis-reserve")
    try:
        last = _condense(ctx, items, groups)
        if ctx.settings.answer_schema:
            return _typed(ctx, last, ended, {r.task_id for r in results})
        body, met, flaw = _final(ctx, last, ended, "")
        if flaw and not ctx.board.budget_short(*_price(ctx, [last])):
            log.warning("the model's answer %s; asking once more", flaw)
            body, met, flaw = _final(ctx, last, ended, flaw)
    except (LLMError, LLMContextError) as exc:
        return Answer(missing=f"the synthesis call failed: {exc}")
    if not body:
        return Answer(missing="the model's answer was empty")
    if flaw:
        log.warning("the model's answer %s: kept, and marked so", flaw)
    return Answer(text=body, cited=_cites(body, {r.task_id for r in results}), met=met, flaw=flaw)


def _typed(ctx: Context, part: list[str], ended: str, tasks: set[int]) -> Answer:
    """The answer as JSON matching the run's schema: with structured outputs where the server
    takes them, else asked in words and parsed; asked once more, shown its error, if it does
    not match. One that never does is kept as written, marked `invalid`."""
    schema = json.loads(ctx.settings.answer_schema)
    structured, text, error = True, "", ""
    for _ in range(2):
        build = functools.partial(
            agents.typed_synthesis_prompt,
            ctx.objective,
            part,
            ctx.llm.tokenizer,
            ended=ended,
            schema=ctx.settings.answer_schema,
            error=error,
            last=text,
        )
        try:
            text, _ = ask(ctx, Kind.SYNTHESIS, build, schema=schema if structured else None)
        except NoStructuredOutputs as exc:
            log.info("the model server takes no structured outputs (%s): asking in words", exc)
            structured = False
            text, _ = ask(ctx, Kind.SYNTHESIS, build)
        value, error = answers.check(text, schema)
        if not error:
            data = json.dumps(value, ensure_ascii=False)
            return Answer(
                text=json.dumps(value, indent=2, ensure_ascii=False),
                cited=_cites(data, tasks),
                data=data,
            )
        log.warning("the model's answer does not match the schema: %s", error)
    if not text.strip():
        return Answer(missing="the model's answer was empty")
    return Answer(text=text, cited=_cites(text, tasks), invalid=error)


def _cites(text: str, tasks: set[int]) -> list[int]:
    """The run's own tasks `text` cites as [#id]."""
    return sorted({int(n) for n in _CITED.findall(text)} & tasks)


def group(items: Sequence[str], size: Callable[[list[str]], int], room: int) -> list[list[str]]:
    """Consecutive items packed into groups whose prompt (`size` tokens) fits `room`. An item
    too long for any prompt goes alone, and its prompt trims it."""
    groups: list[list[str]] = [[]]
    for item in items:
        if groups[-1] and size([*groups[-1], item]) > room:
            groups.append([])
        groups[-1].append(item)
    return groups


def _condense(ctx: Context, items: list[str], groups: list[list[str]]) -> list[str]:
    """The items of the answer's one prompt: while the items take several prompts, each
    group is condensed to notes first."""
    while len(groups) > 1:
        log.info("synthesis: %d item(s) in %d prompts, condensed first", len(items), len(groups))
        items = [_ask(ctx, part, index, "", "")[0] for index, part in enumerate(groups, 1)]
        groups = group(items, lambda part: _size(ctx, part), _room(ctx))
    return groups[0]


def _final(ctx: Context, part: list[str], ended: str, flaw: str) -> tuple[str, bool | None, str]:
    """The answer from `part` (told the last one's `flaw`, if any): its body, whether the
    model judged the objective met, and what makes it degenerate ("" if nothing)."""
    text, prompt = _ask(ctx, part, 0, ended, flaw)
    body, met = agents.parse_synthesis(text)
    return body, met, degenerate.flaw(body, agents.instructions(prompt))


def _ask(ctx: Context, part: list[str], index: int, ended: str, flaw: str) -> tuple[str, str]:
    """One synthesis call: the answer (`index` 0), or the notes of group `index`; with the
    prompt it answered."""
    return ask(
        ctx,
        Kind.SYNTHESIS,
        lambda budget: agents.synthesis_prompt(
            ctx.objective, part, index, ctx.llm.tokenizer, budget, ended, flaw
        ),
        answer_tokens=_note_tokens(ctx) if index else None,
    )


def _note_tokens(ctx: Context) -> int:
    """The most one group's notes may take: a third of a prompt's room at most."""
    return min(ctx.settings.max_completion_tokens, _room(ctx) // 3)


def _room(ctx: Context) -> int:
    return ctx.settings.max_prompt_tokens - ctx.settings.max_completion_tokens


def _size(ctx: Context, part: list[str]) -> int:
    """Tokens of a synthesis prompt holding `part` whole."""
    prompt = agents.synthesis_prompt(ctx.objective, part, 0, ctx.llm.tokenizer, 10**9, "x" * 80)
    return ctx.llm.tokenizer.count(prompt)


def _price(ctx: Context, groups: list[list[str]]) -> tuple[int, int]:
    """(prompt, completion) tokens the synthesis will at most take: its first prompts as they
    are, then prompts of notes, each as long as notes may be, three or more to a prompt."""
    note, answer = _note_tokens(ctx), ctx.settings.max_completion_tokens
    prompt = sum(min(_size(ctx, g), _room(ctx)) for g in groups)
    if len(groups) == 1:
        return prompt, answer
    completion, notes = len(groups) * note, len(groups)
    while notes > 1:
        level = math.ceil(notes / max(3, _room(ctx) // note))
        prompt += notes * note
        completion += level * note if level > 1 else answer
        notes = level
    return prompt, completion
