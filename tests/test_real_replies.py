"""A planner and a worker against a model server that answers as SmolLM2-135M-Instruct did
behind llama.cpp (issue 21): the real openai client over HTTP to the stand-in, replaying the
small model's replies — the prompt's instructions and placeholders proposed as tasks, JSON
HTML-escaped, a completion check it cannot answer, an answer that loops."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from coop import constants as C
from coop import events as ev
from coop import report, status
from coop.board import Board, BoardClient
from coop.calls import Context
from coop.config import RunSettings
from coop.journal import Event
from coop.llm_openai import OpenAILLM
from coop.planner import loop
from coop.planner.loop import Planner
from coop.planner.synthesis import synthesize
from coop.runs import Run
from coop.testing.standin import MakeStandIn, StandIn
from coop.types import EventKind, Lease, Reason, Refusal, State
from coop.worker import Worker
from tests.support.board import in_process
from tests.support.memory import InProcessMemory
from tests.test_degenerate import GOOD, LOOPING

OBJECTIVE = "Write a short guide to growing tomatoes on a balcony"
ECHOED_CREATION = (  # SmolLM2 echoes the completed task's result, then invents
    "Task: Develop a task list\nResult: 1. Research the topic\n2. Draft an outline\n"
    "3. Write the guide"
)
INSTRUCTIONS_AS_TASKS = (
    "1. Based on these results, list the new tasks still needed to reach the objective\n"
    "2. Return no list if nothing is needed\n"
    "3. (nothing)\n"
    "4. N/A\n"
    f"5. {OBJECTIVE}\n"
    "6. Buy 20-litre pots"
)


def openai_llm(server: StandIn, monkeypatch: pytest.MonkeyPatch, name: str) -> OpenAILLM:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    return OpenAILLM(RunSettings(model="smollm2", embedding_model="smollm2"), name)


def run_objective(
    server: StandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings: object
) -> BoardClient:
    """A whole objective: a planner and one worker, each with its own client of `server`."""
    board = in_process(OBJECTIVE, tmp_path, max_tasks=20, **settings)
    llm = openai_llm(server, monkeypatch, "planner")
    memory = InProcessMemory(llm)
    p = Planner(
        Context(board, llm, memory, board.run_settings(), OBJECTIVE, "planner"),
        stop := threading.Event(),
    )
    p.claim(wait=False)
    board.add([C.DEFAULT_INITIAL_TASK], planner="planner")
    worker_llm = openai_llm(server, monkeypatch, "w")
    w = Worker(Context(board, worker_llm, memory, board.run_settings(), OBJECTIVE, "w"), 1, stop)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    p.run()
    stop.set()
    thread.join(30)
    p.release()
    return board


def test_the_prompts_words_and_placeholders_become_no_task_and_escaped_json_is_read(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = make_standin(
        scripted={
            "creation": [ECHOED_CREATION, INSTRUCTIONS_AS_TASKS, "No new tasks are needed."],
            "completion": ['{"met": true, "reason": "the guide is written"}'],
        }
    )
    server.faults.escape = True  # every reply as {&#34;met&#34;: true, …}
    board = run_objective(server, monkeypatch, tmp_path)
    snap = board.snapshot()
    assert (snap.reason, snap.detail) == (Reason.DONE, "the guide is written")
    tasks = [text for _, text in board.task_texts()]
    assert tasks == [
        C.DEFAULT_INITIAL_TASK,
        "Draft an outline",
        "Write the guide",
        "Buy 20-litre pots",
    ]
    assert snap.progress.refused == {
        Refusal.PROMPT.value: 2,
        Refusal.PLACEHOLDER.value: 2,
        Refusal.OBJECTIVE.value: 1,
    }
    assert not snap.progress.unreadable  # the escaped JSON was read
    refused = [
        r
        for e in board.all_events()
        if e.kind is EventKind.ADDED
        for r in e.data.get("refused", ())
    ]
    assert [why for _, why in refused] == [
        "restates the prompt",
        "restates the prompt",
        "a placeholder",
        "a placeholder",
        "restates the objective",
    ]
    tape = "\n".join(status.event_line(e) for e in board.all_events())
    assert "refused '(nothing)': a placeholder" in tape
    assert "5 (2 restates the prompt, 2 a placeholder, 1 restates the objective)" in str(
        report.markdown(snap, board.results())
    )
    # the counts survive a rebuild from the journal
    rebuilt = Board(snap.objective_id, OBJECTIVE, snap.settings, "n", str(tmp_path), readonly=True)
    assert rebuilt.snapshot().progress.refused == snap.progress.refused


def test_a_completion_check_unreadable_three_times_running_stops_the_run(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SmolLM2 asked for the check's JSON answered in prose: counted, on the tape, and the
    third in a row ends the run as stalled, saying why, instead of asking until a cap."""
    monkeypatch.setattr(C, "CHECK_EVERY", 1)  # a check after every completion
    server = make_standin(
        scripted={
            # three tasks a call: some are ready whenever a completion lands, so each is
            # checked (with one ready at most, a worker leases it at once and the list is
            # checked only when it runs dry)
            "creation": [
                "\n".join(f"{n}. Step {i}{part} of the guide" for n, part in enumerate("abc", 1))
                for i in range(1, 8)
            ],
            "completion": ["No, the sky is not green."],
        }
    )
    board = run_objective(server, monkeypatch, tmp_path)
    snap = board.snapshot()
    assert snap.reason is Reason.STALLED
    assert f"could not be read {loop.UNREADABLE_CHECKS} times in a row" in snap.detail
    assert "No, the sky is not green." in snap.detail and "\n" not in snap.detail
    assert snap.progress.unreadable == {"completion-check": loop.UNREADABLE_CHECKS}
    assert snap.completed < 20  # not asked until the cap
    lines = [status.event_line(e) for e in board.all_events() if e.kind is EventKind.UNREADABLE]
    assert len(lines) == 3 and "completion-check: 'No, the sky is not green.'" in lines[0]
    view = status.status_view(snap)
    assert "unreadable replies: 3 (3 completion-check)" in str(view.renderables[0])


def results_board(tmp_path: Path) -> BoardClient:
    board = in_process(OBJECTIVE, tmp_path, max_tasks=10)
    board.add(["Research the topic", "Write the guide"])
    for text in ("Tomatoes need 6-8 hours of sun.", "Use a 20-litre pot; water daily."):
        lease = board.lease("w")
        assert isinstance(lease, Lease)
        board.complete(lease.task.id, lease.token, "w", text)
    return board


@pytest.mark.parametrize(
    "replies, flaw",
    [([LOOPING], "repeats itself"), ([LOOPING, GOOD + "\n\nSee also [#99]."], "")],
)
def test_a_degenerate_answer_is_asked_again_once_then_kept_and_marked(
    make_standin: MakeStandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    replies: list[str],
    flaw: str,
) -> None:
    server = make_standin(scripted={"synthesis": list(replies)})
    board = results_board(tmp_path)
    board.claim_planner("planner")
    llm = openai_llm(server, monkeypatch, "planner")
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), OBJECTIVE, "planner")
    answer = board.record_answer("planner", synthesize(ctx, board.results(), "done"))
    assert [c.kind for c in server.calls if c.kind == "synthesis"] == ["synthesis"] * 2
    assert answer.flaw == flaw and answer.text
    snap = board.snapshot()
    said = status.status_view(snap)
    final = report.final(snap)
    if flaw:
        assert "the model's answer repeats itself" in str(said.renderables[0])
        assert final.startswith("> Note: the model's answer repeats itself")
        assert "**the model's answer repeats itself**" in report.markdown(snap, board.results())
    else:
        assert answer.cited == [1, 2]  # [#99] names no task: not counted
        assert final == answer.text + "\n" and "repeats" not in str(said.renderables[0])
    assert board.answers()[-1].flaw == flaw  # journaled with it
    seen = Run(board).answer  # as the Python API shows it
    assert seen is not None and seen.flaw == flaw and seen.text == answer.text


def tape(events: list[Event]) -> str:
    """The tape's lines, as `coop events` prints them."""
    return "\n".join(status.event_line(e) for e in events)


def test_journals_from_before_replay_without_refusals_or_marks(tmp_path: Path) -> None:
    """An `added` event without `refused` and an `answer` without `flaw`, as older versions
    wrote them, replay as none refused and an unmarked answer."""
    board = in_process(OBJECTIVE, tmp_path)
    board.add(["a task"], planner=None)
    events = list(board.all_events())
    assert "refused" not in events[-1].data  # nothing refused: the event is as it was
    assert board.snapshot().progress.refused == {} and "refused" not in tape(events)
    raw = Board(board.objective_id, OBJECTIVE, board.run_settings(), "n", str(tmp_path))
    old = {"revision": 1, "text": "old", "cited": [], "met": None, "missing": "", "at": 1.0}
    raw._books.apply(ev.decode(EventKind.ANSWER, ev.upgrade_v1(EventKind.ANSWER, old)))
    assert raw.answers()[-1].flaw == "" and State.RUNNING is raw.snapshot().state


@pytest.mark.parametrize(
    "replies, flaw, calls",
    [
        (["Water the pots daily.\n" * 6], "repeats itself", 2),
        (["Water the pots daily.\n" * 6, "Water 20-litre pots daily; more in a heatwave."], "", 2),
        (["Water 20-litre pots daily; more in a heatwave."], "", 1),
    ],
)
def test_a_degenerate_result_is_asked_again_once_then_kept_and_marked(
    make_standin: MakeStandIn,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    replies: list[str],
    flaw: str,
    calls: int,
) -> None:
    """A task's answer that loops is followed, in its conversation, by the nudge; a second
    degenerate answer is kept, marked on its `completed` event, in status and the report."""
    server = make_standin(scripted={"execution": list(replies)})
    board = in_process(OBJECTIVE, tmp_path, max_tasks=1)
    board.add(["Say how often to water"])
    llm = openai_llm(server, monkeypatch, "w")
    stop = threading.Event()
    w = Worker(
        Context(board, llm, InProcessMemory(llm), board.run_settings(), OBJECTIVE, "w"), 1, stop
    )
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    thread.join(30)  # the task cap of 1 ends the objective, and the worker with it
    stop.set()
    (result,) = board.results()
    assert result.flaw == flaw and [c.kind for c in server.calls].count("execution") == calls
    snap = board.snapshot()
    assert snap.progress.flawed == ({flaw: 1} if flaw else {})
    completed = [e for e in board.all_events() if e.kind is EventKind.COMPLETED]
    assert ("the model's result repeats itself" in tape(completed)) == bool(flaw)
    assert ("**the model's result repeats itself**" in report.markdown(snap, [result])) == bool(
        flaw
    )
