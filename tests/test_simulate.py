"""The simulated model answers each agent prompt in the format its parser expects, and a
simulated objective is a finite tree with no duplicates."""

from __future__ import annotations

from coop import agents
from coop.simulate import Simulator, lexical_embedding, task_text
from coop.tokens import estimating
from coop.tools import ToolSpec
from coop.tools.functions import Tool
from coop.tools.workspace import SPECS
from coop.types import Result, Task

TOK = estimating("test")


def test_creation_answers_are_parsable_children() -> None:
    sim = Simulator(fanout=2, limit=6)
    results = [
        Result(1, "Develop a task list", "r", "w", 0, 0.0),
        Result(2, task_text(2), "r", "w", 1, 0.0),
    ]
    prompt = agents.creation_prompt("obj", results, [], TOK, 2000)
    tasks = agents.parse_tasks(sim.reply(prompt))
    assert tasks == [task_text(n) for n in (1, 2, 5, 6)]


def test_leaf_creation_says_nothing_parsable() -> None:
    sim = Simulator(fanout=3, limit=3)
    prompt = agents.creation_prompt(
        "obj", [Result(4, task_text(3), "r", "w", 0, 0.0)], [], TOK, 2000
    )
    assert agents.parse_tasks(sim.reply(prompt)) == []


def test_prioritization_answer_is_a_full_order() -> None:
    tasks = [Task(10, task_text(5)), Task(11, task_text(2)), Task(12, "misc")]
    prompt = agents.prioritization_prompt("o", tasks, TOK, 2000)
    order, unknown = agents.parse_order(Simulator().reply(prompt), tasks)
    assert order == [12, 11, 10] and unknown == 0


def test_execution_answer_is_labeled_simulated() -> None:
    prompt = agents.execution_prompt("o", "Write it", [], TOK, 2000)
    assert Simulator().reply(prompt).startswith("[simulated result")


def test_lexical_embedding_is_deterministic_and_similarity_tracks_wording() -> None:
    a, b, c = (
        lexical_embedding(t) for t in ("grow red tomatoes", "grow tomatoes red", "tax law of Peru")
    )
    assert a == b
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
    assert lexical_embedding("") == [0.0] * len(a)


def test_completion_check_is_met_only_when_nothing_is_pending_or_being_planned() -> None:
    def ask(sim: Simulator, pending: int, unplanned: int = 0) -> bool | None:
        prompt = agents.completion_prompt("o", [], 5, pending, unplanned, TOK, 2000)
        return agents.parse_completion(sim.reply(prompt))[0]

    assert ask(Simulator(), 0) and not ask(Simulator(), 2)
    assert not ask(Simulator(), 0, unplanned=3)  # follow-ups of 3 results are on their way
    assert not ask(Simulator(stubborn=True), 0)


def test_stubborn_model_repeats_itself() -> None:
    sim = Simulator(stubborn=True)
    first = agents.parse_tasks(sim.reply(agents.creation_prompt("o", [], [], TOK, 2000)))
    again = agents.parse_tasks(sim.reply(agents.replan_prompt("o", first, TOK, 2000)))
    assert first == again and len(first) == 3


def test_simulated_tasks_are_not_near_duplicates_of_each_other() -> None:
    vectors = [lexical_embedding(task_text(n)) for n in range(1, 200)]
    worst = max(
        sum(a * b for a, b in zip(vectors[i], vectors[j], strict=True))
        for i in range(len(vectors))
        for j in range(i)
    )
    assert worst < 0.92


def test_the_simulated_model_calls_the_users_own_tools_with_arguments_from_their_schema() -> None:
    """Every task calls each user tool whose required arguments have a simple type, once,
    before it leaves its notes; built-ins and MCP servers' tools are not called unasked."""

    def forecast(place: str, days: int, exact: bool = False) -> str:
        """Rain for a place."""
        return place

    def opaque(shape: dict[str, int] | None) -> str:
        """Takes what the simulator cannot fill."""
        return ""

    specs = [s.openai() for s in (*SPECS, Tool(forecast).spec(), Tool(opaque).spec())]
    specs.append(ToolSpec("time__now", "An MCP server's tool.").openai())
    sim = Simulator()
    prompt = agents.execution_messages("obj", task_text(3), [], [], TOK, 4000)
    history: list[dict[str, object]] = list(prompt)
    made = []
    while True:
        text, calls = sim.chat(history, specs)
        if not calls:
            break
        made += calls
        history.append({"role": "assistant", "tool_calls": [{"function": {"name": calls[0][0]}}]})
        history.append({"role": "tool", "content": "ok"})
    assert [name for name, _ in made] == ["workspace_read", "forecast", "workspace_write"]
    assert made[1][1] == {"place": task_text(3), "days": 3}
    assert text.endswith("- tool: ok")
