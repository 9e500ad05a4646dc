"""BabyAGI's three agents — execution, task creation, prioritization — and coop's completion
check, fresh plan and synthesis of the answer, as prompts and parsers.

Prompts are fitted to a token budget by dropping and trimming context, never the objective or
the task. Parsers take whatever a model says and keep only list items: a header, chatter or
outright garbage yields fewer tasks and a log line, never an exception.
"""

from __future__ import annotations

import functools
import logging
import re
import string
from collections.abc import Sequence

from coop import constants as C
from coop.llm import Message, ToolCall
from coop.memory import Hit
from coop.replies import first_object, plain
from coop.text import normalize, one_line, words
from coop.tokens import Tokenizer
from coop.types import Result, Task

log = logging.getLogger(__name__)

_ITEM = re.compile(r"^\s*(?:\d{1,4}\s*[.)]|[-*•+])\s+(.*\S)\s*$")
_TASK_ID = re.compile(r"^#(\d+)\s*[:.)-]?\s*")
_LABEL = re.compile(r"^(?:task|new task)\s*\d*\s*:\s*", re.IGNORECASE)
MIN_ITEM_TOKENS = 16
"""A context item trimmed to fewer tokens than this is dropped instead: it would say nothing."""


def _fit(tokenizer: Tokenizer, items: Sequence[str], room: int) -> tuple[list[str], int]:
    """The leading items that fit in `room` tokens, the last one trimmed if needed."""
    kept: list[str] = []
    used = 0
    for item in items:
        cost = tokenizer.count(item) + 1
        if used + cost > room:
            left = room - used - 1
            if left >= MIN_ITEM_TOKENS:
                kept.append(tokenizer.trim(item, left) + "…")
                used = room
            break
        kept.append(item)
        used += cost
    return kept, used


_EXECUTION = (
    C.PROMPT_MARKERS["execution"] + "\n"
    "Perform one task toward the objective. Use the context of the team's completed "
    "work where it helps{with_tools}.\n\n"
    "Objective: {{objective}}\n\n"
    "Context from completed tasks:\n{{context}}\n\n"
    "Your task: {{task}}\nResponse:"
)
EXECUTION = _EXECUTION.format(with_tools="")
EXECUTION_WITH_TOOLS = _EXECUTION.format(
    with_tools=", and the tools you are offered where they help; when you have what the task "
    "needs, answer with its result"
)
"""The execution prompt when the worker offers tools: the first message of a conversation."""
CREATION = (
    C.PROMPT_MARKERS["creation"] + "\n"
    "You plan the work of a team of agents toward an objective.\n\n"
    "Objective: {objective}\n\n"
    "Just completed:\n{done}\n\n"
    "Already planned (do not repeat these):\n{planned}\n\n{abilities}"
    "Based on these results, list the new tasks still needed to reach the objective "
    "that do not repeat planned or completed work.{wanted} Return them as a numbered list, "
    "one task per line, and nothing else. Return no list if nothing is needed."
)
WANTED = " The team has idle workers: propose up to {count} new tasks."
"""Said in a creation prompt when the queue is short (models honour "up to N")."""
ABILITIES = (
    "The team's workers can use: {names}. End the line of a task that needs one of these "
    "with [needs: name] (several: [needs: a, b]); only a worker that has them will do it.\n\n"
)
"""Said in a creation prompt when the live workers have tools or capabilities."""
CUT = " [cut to fit the prompt]"
"""Ends a tool output cut short so that a task's conversation fits its prompt."""
_NEEDS = re.compile(r"\s*\[needs?:\s*([^\]]*)\]\s*$", re.IGNORECASE)
PRIORITIZATION = (
    C.PROMPT_MARKERS["prioritization"] + "\n"
    "You order a team's pending tasks.\n\n"
    "Objective: {objective}\n\n"
    "Tasks to order (id: task):\n{tasks}\n\n"
    "Reorder these tasks so the most important one for the objective comes first. "
    "Return every task as a numbered list of lines '#id: task', and nothing else."
)
COMPLETION = (
    C.PROMPT_MARKERS["completion"] + "\n"
    "You judge whether a team has achieved its objective.\n\n"
    "Objective: {objective}\n\n"
    "Tasks completed: {completed}. Tasks still pending: {pending}. "
    "Results the planner has not yet planned from: {unplanned}.\n"
    "Most recent results:\n{done}\n\n"
    'Answer with JSON only, exactly like {{"met": false, "reason": "..."}}: "met" is '
    "true only if the objective is fully achieved by the work above."
)
REPLAN = (
    C.PROMPT_MARKERS["replan"] + "\n"
    "A team working toward an objective has stopped making progress. Plan afresh.\n\n"
    "Objective: {objective}\n\n"
    "Work already done (do not repeat it):\n{done}\n\n"
    "List the tasks that would still move the objective forward, as a numbered list, "
    "one task per line, and nothing else. Return no list if nothing is left to do."
)
SYNTHESIS = (
    C.PROMPT_MARKERS["synthesis"] + "\n"
    "A team of agents worked toward an objective. Write the objective's answer from their "
    "results.\n\n"
    "Objective: {objective}\n\n"
    "How the run ended: {ended}\n\n"
    "Results, each marked with the id of its task, then the files the team left in its "
    "workspace, each marked with its path:\n{results}\n\n"
    "Write what the objective asks for (the guide, the plan, the comparison…) in Markdown, "
    "drawing only on these results and files, and cite the tasks you use as [#id] and the "
    "files as [file path]. End with one line: "
    "'Objective met: yes' or 'Objective met: no'."
)
SYNTHESIS_JSON = (
    C.PROMPT_MARKERS["synthesis"] + "\n"
    "A team of agents worked toward an objective. Write the objective's answer from their "
    "results, as JSON.\n\n"
    "Objective: {objective}\n\n"
    "How the run ended: {ended}\n\n"
    "Results, each marked with the id of its task, then the files the team left in its "
    "workspace, each marked with its path:\n{results}\n\n"
    "Answer with one JSON value that matches this JSON Schema, and nothing else:\n{schema}\n"
    "Draw only on these results and files; where a text cites a task, write [#id]."
)
"""The synthesis when the run has an answer schema (`--answer-schema`, `answer_type=`)."""
RETRY_JSON = (
    "\n\nYour last answer did not match the schema ({error}). It was:\n{last}\n"
    "Answer again with JSON only, matching the schema."
)
"""Ends the typed synthesis asked again: what was wrong, and what the model wrote."""
NOTES = (
    C.PROMPT_MARKERS["synthesis"] + " (notes, part {part})\n"
    "A team of agents worked toward an objective. Condense these results of theirs into notes "
    "for the objective's answer.\n\n"
    "Objective: {objective}\n\n"
    "Results, each marked with the id of its task, and files, each marked with its path:"
    "\n{results}\n\n"
    "Keep every fact the answer may need, and the citations as [#id] and [file path]. Return "
    "only the notes."
)
NUDGE = (
    "\n\nYour last answer {flaw}. Write it again, once, in your own words: no line "
    "repeated, nothing copied from these instructions, and no placeholder in brackets where "
    "a real id or name belongs."
)
"""Ends a prompt asked again because the first answer was degenerate (the synthesis), or
follows that answer in a task's conversation (an execution)."""
HOUSE = (
    "Instructions from whoever set the objective, for every agent of the team: follow them "
    "in everything you do and write.\n\n{instructions}"
)
"""The system message every prompt starts with when the run has `--instructions`."""


def house(instructions: str) -> list[Message]:
    """The messages a prompt starts with: the run's instructions, if it has any."""
    text = instructions.strip()
    return [{"role": "system", "content": HOUSE.format(instructions=text)}] if text else []


_MET = re.compile(r"^\W*objective met\W*(yes|no)\b.*$", re.IGNORECASE | re.MULTILINE)
# str.format substitutes values without re-reading them, so braces in an objective are safe.


def execution_prompt(
    objective: str,
    task: str,
    context: Sequence[Hit],
    tokenizer: Tokenizer,
    budget: int,
    template: str = EXECUTION,
) -> str:
    """The task under `template` with as much of memory's context as fits `budget`."""
    fixed = tokenizer.count(template.format(objective=objective, task=task, context=""))
    items = [f"- {h.task}: {one_line(h.result, C.RESULT_SNIPPET_CHARS)}" for h in context]
    kept, _ = _fit(tokenizer, items, budget - fixed)
    return template.format(
        objective=objective, task=task, context="\n".join(kept) or "- (none yet)"
    )


def creation_prompt(
    objective: str,
    results: Sequence[Result],
    planned: Sequence[str],
    tokenizer: Tokenizer,
    budget: int,
    wanted: int | None = None,
    abilities: Sequence[str] = (),
) -> str:
    """`wanted`: how many tasks the swarm can use now, when its queue is short;
    `abilities`: what the live workers can do, for tasks that need it."""
    fields = {
        "objective": objective,
        "wanted": WANTED.format(count=wanted) if wanted else "",
        "abilities": ABILITIES.format(names=", ".join(abilities)) if abilities else "",
    }
    room = budget - tokenizer.count(CREATION.format(done="", planned="", **fields))
    done = [
        f"- Task: {r.task}\n  Result: {one_line(r.text, C.RESULT_SNIPPET_CHARS)}" for r in results
    ]
    done_kept, used = _fit(tokenizer, done, room)
    planned_kept, _ = _fit(tokenizer, [f"- {p}" for p in planned], room - used)
    return CREATION.format(
        done="\n".join(done_kept), planned="\n".join(planned_kept) or "- (nothing)", **fields
    )


def prioritization_prompt(
    objective: str, tasks: Sequence[Task], tokenizer: Tokenizer, budget: int
) -> str:
    room = budget - tokenizer.count(PRIORITIZATION.format(objective=objective, tasks=""))
    items, _ = _fit(tokenizer, [f"#{t.id}: {t.text}" for t in tasks], room)
    return PRIORITIZATION.format(objective=objective, tasks="\n".join(items))


def completion_prompt(
    objective: str,
    recent: Sequence[Result],
    completed: int,
    pending: int,
    unplanned: int,
    tokenizer: Tokenizer,
    budget: int,
) -> str:
    """`unplanned`: results whose follow-up tasks are still being planned — a checker told
    only "nothing pending" would judge a list about to grow as finished."""
    counts = dict(completed=completed, pending=pending, unplanned=unplanned)
    room = budget - tokenizer.count(COMPLETION.format(objective=objective, done="", **counts))
    done, _ = _fit(
        tokenizer,
        [f"- {r.task}: {one_line(r.text, C.RESULT_SNIPPET_CHARS // 2)}" for r in reversed(recent)],
        room,
    )
    return COMPLETION.format(
        objective=objective,
        **counts,
        done="\n".join(done) or "- (none)",
    )


def replan_prompt(
    objective: str, done_tasks: Sequence[str], tokenizer: Tokenizer, budget: int
) -> str:
    room = budget - tokenizer.count(REPLAN.format(objective=objective, done=""))
    done, _ = _fit(tokenizer, [f"- {t}" for t in reversed(done_tasks)], room)
    return REPLAN.format(objective=objective, done="\n".join(done) or "- (nothing yet)")


def cited(task_id: int, task: str, text: str) -> str:
    """A result as a synthesis prompt shows it: marked with its task id, to be cited so."""
    return f"[#{task_id}] {task}\n{text.strip()}"


def filed(path: str, text: str) -> str:
    """A workspace file as a synthesis prompt shows it: marked with its path."""
    return f"[file {path}]\n{text.strip()}"


def synthesis_prompt(
    objective: str,
    items: Sequence[str],
    part: int,
    tokenizer: Tokenizer,
    budget: int,
    ended: str = "",
    flaw: str = "",
) -> str:
    """The answer from cited results or notes (`part` 0; `ended` says how the run ended), or
    the notes of group `part`. `flaw`: what was wrong with the last answer, to be told."""
    template = SYNTHESIS if part == 0 else NOTES
    fields = {"objective": objective, "part": part, "ended": ended}
    nudge = NUDGE.format(flaw=flaw) if flaw else ""
    return _filled(template, fields, items, tokenizer, budget, nudge)


def _filled(
    template: str,
    fields: dict[str, object],
    items: Sequence[str],
    tokenizer: Tokenizer,
    budget: int,
    tail: str,
) -> str:
    """A synthesis template with as many of `items` as fit `budget` beside `tail`."""
    fixed = tokenizer.count(template.format(results="", **fields) + tail)
    kept, _ = _fit(tokenizer, list(items), budget - fixed)
    return template.format(results="\n\n".join(kept), **fields) + tail


def typed_synthesis_prompt(
    objective: str,
    items: Sequence[str],
    tokenizer: Tokenizer,
    budget: int,
    ended: str,
    schema: str,
    error: str = "",
    last: str = "",
) -> str:
    """The answer as JSON matching `schema`, from cited results or notes; told, on its one
    retry, the `error` of its `last` answer (cut to a quarter of the budget)."""
    retry = ""
    if error:
        retry = RETRY_JSON.format(error=error, last=tokenizer.trim(last, max(budget // 4, 1)))
    fields: dict[str, object] = {"objective": objective, "ended": ended, "schema": schema}
    return _filled(SYNTHESIS_JSON, fields, items, tokenizer, budget, retry)


_TEMPLATES = (
    EXECUTION_WITH_TOOLS,
    CREATION,
    WANTED,
    ABILITIES,
    PRIORITIZATION,
    COMPLETION,
    REPLAN,
    SYNTHESIS,
    NOTES,
    NUDGE,
)
_CLAUSE = re.compile(r"[.!?:\n]+\s*")


@functools.cache
def _clauses() -> tuple[tuple[str, str], ...]:
    """Every clause of coop's templates with its words, in order, once each: the same for
    every prompt, so split once per process rather than once per task."""
    found: dict[str, str] = {}
    for template in _TEMPLATES:
        for literal, *_ in string.Formatter().parse(template):
            for clause in _CLAUSE.split(literal):
                said = " ".join(words(clause))
                if said:
                    found.setdefault(clause.strip(), said)
    return tuple(found.items())


def instructions(prompt: str) -> list[str]:
    """The prompt's own words: the sentences and headings of coop's templates that `prompt`
    holds (not the objective, tasks or results filled into them), for telling a reply that
    only restates them."""
    sent = f" {' '.join(words(prompt))} "
    return [clause for clause, said in _clauses() if f" {said} " in sent]


def parse_synthesis(text: str) -> tuple[str, bool | None]:
    """(the answer, whether the model judged the objective met: None when it did not say)."""
    text = plain(text)
    verdicts = _MET.findall(text)
    body = _MET.sub("", text).strip()
    return body, (verdicts[-1].lower() == "yes") if verdicts else None


def parse_completion(text: str) -> tuple[bool | None, str]:
    """(met, reason) from a completion check: met only when the first JSON object's "met" is
    the boolean true (a model that rambles does not end a run); None when the reply holds no
    object with a "met" to read, or only the prompt's example with its reason left as "..."."""
    answer = first_object(text)
    reason = str(answer.get("reason", "")) if answer else ""
    if answer is None or "met" not in answer or ("reason" in answer and not words(reason)):
        # no verdict, or the prompt's example ({"met": …, "reason": "..."}) copied back
        log.info("completion check answer not understood; taken as not met: %r", one_line(text))
        return None, ""
    return answer["met"] is True, one_line(reason, 200)


def _items(text: str) -> list[str]:
    found = []
    for line in plain(text).splitlines():
        m = _ITEM.match(line)
        if not m:
            continue
        item = _LABEL.sub("", m.group(1).replace("**", "").strip())
        if item and not item.endswith(":"):  # "1. Research:" introduces a sub-list
            found.append(item)
    return found


def parse_tasks(text: str) -> list[str]:
    """New task texts from a creation answer."""
    tasks = [t[: C.MAX_TASK_CHARS] for t in _items(text)]
    if not tasks and text.strip():
        log.info("creation answer held no list items; no tasks added: %r", one_line(text, 120))
    return tasks


def parse_needs(task: str) -> tuple[str, list[str]]:
    """A proposed task's text, and the capabilities its `[needs: …]` ending names."""
    found = _NEEDS.search(task)
    if found is None:
        return task, []
    names = [n.strip().lower() for n in found.group(1).split(",") if n.strip()]
    return task[: found.start()].strip(), names


def execution_messages(
    objective: str,
    task: str,
    context: Sequence[Hit],
    history: Sequence[Message],
    tokenizer: Tokenizer,
    budget: int,
) -> list[Message]:
    """A task's conversation so far: the prompt, then the model's tool calls and what they
    gave. What does not fit the budget is trimmed: memory's context first, then the longest
    tool outputs (the model sees that they were cut)."""
    turns = [dict(m) for m in history]
    size = [tokenizer.count(str(m.get("content") or "")) for m in turns]
    fixed = tokenizer.count(EXECUTION_WITH_TOOLS.format(objective=objective, task=task, context=""))
    room = budget - fixed - sum(8 for _ in turns)  # a little for each message's framing
    while sum(size) > room:
        outputs = [i for i, m in enumerate(turns) if m.get("role") == "tool"]
        longest = max(outputs, key=lambda i: size[i], default=None)
        if longest is None or size[longest] <= 2 * MIN_ITEM_TOKENS:
            break  # nothing left worth cutting: the model's context error retry takes over
        keep = max(MIN_ITEM_TOKENS, size[longest] - (sum(size) - room), size[longest] // 4)
        cut = tokenizer.trim(str(turns[longest]["content"]), min(keep, size[longest] // 2))
        turns[longest]["content"] = cut + CUT
        size[longest] = tokenizer.count(cut + CUT)
    first = execution_prompt(
        objective, task, context, tokenizer, budget - sum(size), EXECUTION_WITH_TOOLS
    )
    return [{"role": "user", "content": first}, *turns]


def assistant_turn(text: str, calls: Sequence[ToolCall]) -> Message:
    """The model's turn that asked for tools, as the API wants it back in the history."""
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }


def tool_turn(call_id: str, text: str) -> Message:
    """What a tool gave, answering the model's call `call_id`."""
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def parse_order(text: str, tasks: Sequence[Task]) -> tuple[list[int], int]:
    """Task ids in the order the model gave, and how many items matched no known task."""
    by_id = {t.id: t for t in tasks}
    by_text = {normalize(t.text): t.id for t in tasks}
    order: list[int] = []
    unknown = 0
    for item in _items(text):
        m = _TASK_ID.match(item)
        tid = int(m.group(1)) if m and int(m.group(1)) in by_id else None
        if tid is None:
            tid = by_text.get(normalize(_TASK_ID.sub("", item)))
        if tid is None:
            unknown += 1
        elif tid not in order:
            order.append(tid)
    if not order and text.strip():
        log.info("prioritization answer matched no task; order kept: %r", one_line(text, 120))
    return order, unknown
