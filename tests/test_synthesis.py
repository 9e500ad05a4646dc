"""The objective's answer: hierarchical synthesis within the prompt budget (in-process), and
end to end with real `coop` processes — budget caps with and without a reserve, a finished
objective continued for a second answer, `--final` from the journal alone, a failed synthesis."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from coop import agents, registry
from coop.calls import Context
from coop.llm import Completion, OfflineLLM
from coop.planner.synthesis import synthesize
from coop.testing.standin import Faults, MakeStandIn
from coop.text import objective_id
from coop.types import Lease, Reason, Result
from tests.support.board import in_process
from tests.support.memory import InProcessMemory
from tests.support.procs import STATE_DIR, coop_env, run_coop, unique


class Recording(OfflineLLM):
    """The simulator, keeping every prompt it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        self.prompts.append(prompt)
        return super().complete(prompt, max_tokens)


def results(board_objective: str, count: int) -> tuple[Context, list[Result], Recording]:
    board = in_process(
        board_objective, max_prompt_tokens=1500, max_completion_tokens=600, max_tasks=1000
    )
    llm = Recording()
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), board_objective, "p")
    board.add([f"Write part {i} of the guide" for i in range(count)])
    for i in range(count):
        lease = board.lease("w")
        assert isinstance(lease, Lease)
        board.complete(lease.task.id, lease.token, "w", f"Part {i}: " + "useful detail " * 30)
    return ctx, board.results(), llm


def test_results_that_do_not_fit_one_prompt_are_synthesized_in_groups_within_the_budget() -> None:
    ctx, done, llm = results("Write a long guide", 40)
    answer = synthesize(ctx, done, "done; tasks completed: 40, still pending: 0")
    assert len(llm.prompts) > 2, "one prompt held everything"
    notes = [p for p in llm.prompts if "(notes, part" in p.split("\n", 1)[0]]
    assert notes and llm.prompts[-1].startswith(agents.SYNTHESIS.split("\n", 1)[0])
    room = ctx.settings.max_prompt_tokens - ctx.settings.max_completion_tokens
    assert all(llm.tokenizer.count(p) <= room for p in llm.prompts)
    assert answer.text.startswith("# Write a long guide") and answer.met is True
    assert answer.cited == [r.task_id for r in done]  # every citation survived the notes
    usage = ctx.board.snapshot().usage["synthesis"]
    assert usage.calls == len(llm.prompts)  # every call counted like any other


def test_the_workspace_files_are_part_of_what_the_answer_draws_on() -> None:
    ctx, done, llm = results("Write a guide with files", 2)
    files = [("notes/soil.md", "Loam, pH 6.5"), ("notes/water.md", "Deeply, twice a week")]
    answer = synthesize(ctx, done, "done; tasks completed: 2, still pending: 0", files)
    assert "[file notes/soil.md]\nLoam, pH 6.5" in llm.prompts[-1]
    assert "[file notes/water.md]\nDeeply, twice a week" in llm.prompts[-1]
    assert "[file notes/soil.md]" in answer.text and "[file notes/water.md]" in answer.text
    assert answer.cited == [r.task_id for r in done]


def test_garbage_from_the_model_is_a_missing_answer_not_a_crash() -> None:
    class Blank(OfflineLLM):
        def complete(self, prompt: str, max_tokens: int) -> Completion:
            return Completion("   \nObjective met: yes\n", 5, 5)

    board = in_process("Blank answers")
    llm = Blank()
    ctx = Context(board, llm, InProcessMemory(llm), board.run_settings(), "Blank answers", "p")
    done = [Result(1, "a task", "a result", "w", 0, 0.0)]
    answer = synthesize(ctx, done, "done")
    assert not answer.text and answer.missing == "the model's answer was empty"
    assert synthesize(ctx, [], "done").missing == "no task was completed"


@pytest.mark.parametrize("reserve, answered", [("0.3", True), ("0", False)])
def test_a_run_stopped_at_max_tokens_gets_its_answer_only_from_a_reserve(
    ray_cluster: Cluster, tmp_path: Path, reserve: str, answered: bool
) -> None:
    objective = unique("Spend wisely")
    env = coop_env(ray_cluster)
    proc = run_coop(
        "start",
        objective,
        "--llm",
        "offline",
        "--max-tokens",
        "6000",
        "--synthesis-reserve",
        reserve,
        env=env,
        timeout=180,
    )
    assert proc.returncode == Reason.MAX_TOKENS.exit_code, proc.stderr
    snap = registry.find(objective).snapshot()
    assert snap.answer is not None and bool(snap.answer.text) is answered
    if answered:
        assert "answer: " in proc.stdout and snap.total.tokens <= 6000
    else:
        assert "synthesis-reserve" in snap.answer.missing and "no answer:" in proc.stdout
    report = (STATE_DIR / "reports" / f"{objective_id(objective)}.md").read_text()
    assert report.index("## Answer") < report.index("## How the run ended")
    assert report.count("### ") >= snap.completed  # every result still in the report


def test_a_finished_objective_continued_gets_a_second_answer_and_keeps_the_first(
    ray_cluster: Cluster,
) -> None:
    objective = unique("Grow the list")
    env = coop_env(ray_cluster)
    first = run_coop("start", objective, "--llm", "offline", "--max-tasks", "3", env=env)
    assert first.returncode == Reason.MAX_TASKS.exit_code, first.stderr
    again = run_coop("start", "--resume", objective, "--max-tasks", "6", env=env, timeout=180)
    assert again.returncode == Reason.MAX_TASKS.exit_code, again.stderr
    assert "reopened with --max-tasks 6" in again.stderr
    board = registry.find(objective)
    answers = board.answers()
    assert [a.revision for a in answers] == [1, 2]
    assert len(answers[0].cited) == 3 and len(answers[1].cited) == 6
    assert board.snapshot().answer == answers[1] and board.snapshot().completed == 6


def test_the_final_answer_is_read_from_the_journal_with_no_cluster(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    objective = unique("Answer from disk")
    env = coop_env(ray_cluster)
    assert run_coop("start", objective, "--llm", "offline", env=env).returncode == 0
    live = run_coop("results", objective, "--final", env=env)
    nowhere = coop_env(None, RAY_TMPDIR=str(tmp_path))  # no cluster to find at all
    offline = run_coop("results", objective_id(objective), "--final", env=nowhere)
    assert live.returncode == offline.returncode == 0
    assert offline.stdout == live.stdout and offline.stdout.startswith(f"# {objective}")
    assert "[#1]" in offline.stdout and "reading its journal" in offline.stderr


def test_a_failed_synthesis_leaves_the_results_and_says_the_answer_is_missing(
    make_standin: MakeStandIn, ray_cluster: Cluster
) -> None:
    server = make_standin(faults=Faults(poison="# coop synthesis agent", poison_retry_after=0.05))
    objective = unique("No answer today")
    env = coop_env(ray_cluster, server)
    proc = run_coop("start", objective, "--max-tasks", "4", env=env, timeout=240)
    assert proc.returncode == Reason.MAX_TASKS.exit_code, proc.stderr
    assert "no answer: the synthesis call failed: InternalServerError" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    final = run_coop("results", objective, "--final", env=env)
    assert final.returncode == 1 and "has no answer: the synthesis call failed" in final.stderr
    report = (STATE_DIR / "reports" / f"{objective_id(objective)}.md").read_text()
    assert "*No answer: the synthesis call failed" in report and report.count("### ") == 4
