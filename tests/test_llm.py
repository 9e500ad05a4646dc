"""The openai provider through the real openai client over HTTP to the loopback stand-in,
and against a real endpoint when one is configured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coop import agents
from coop.config import RunSettings
from coop.errors import CoopError
from coop.llm import LLMError, LLMFatalError, OfflineLLM, make_llm
from coop.llm_openai import CLIENT_MAX_RETRIES, OpenAILLM
from coop.simulate import lexical_embedding
from coop.testing.standin import Faults, MakeStandIn, StandIn
from tests.support.procs import SECRET, closed_port


def provider(
    server: StandIn, monkeypatch: pytest.MonkeyPatch, key: str = SECRET, model: str = "gpt-4o-mini"
) -> OpenAILLM:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return OpenAILLM(RunSettings(model=model), instance="test-instance")


def creation(llm: OpenAILLM) -> str:
    return agents.creation_prompt("Grow tomatoes", [], [], llm.tokenizer, 2000)


def test_completion_usage_is_the_servers_count(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = provider(standin, monkeypatch)
    reply = llm.complete(creation(llm), 200)
    (call,) = standin.calls
    assert (reply.prompt_tokens, reply.completion_tokens) == (
        call.prompt_tokens,
        call.completion_tokens,
    )
    assert call.kind == "creation" and call.instance == "test-instance"


def test_missing_usage_is_counted_locally(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(send_usage=False)
    llm = provider(server, monkeypatch)
    reply = llm.complete(creation(llm), 200)
    assert reply.prompt_tokens >= server.calls[0].prompt_tokens > 0


def test_embeddings_are_floats_in_input_order(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = provider(standin, monkeypatch)
    vectors = llm.embed(["tomato", "tax law", "tomato"]).vectors
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]
    assert all(isinstance(x, float) for x in vectors[0])


def test_rate_limits_are_retried_by_the_client(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(faults=Faults(rate_429=0.5, retry_after=0.05), seed=3)
    llm = provider(server, monkeypatch)
    for _ in range(5):
        llm.complete(creation(llm), 50)
    assert any(c.status == 429 for c in server.calls)
    assert sum(c.status == 200 for c in server.calls) == 5


def test_bad_key_is_fatal_and_the_message_holds_no_key(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(api_key="the-right-key")
    llm = provider(server, monkeypatch, key="sk-wrong-key-1234567")
    with pytest.raises(LLMFatalError, match="401") as info:
        llm.complete(creation(llm), 50)
    assert "sk-wrong" not in str(info.value) and server.base_url in str(info.value)
    assert len(server.calls) == 1  # no retry storm


def test_unknown_model_is_fatal(make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    server = make_standin(models=("real-model",))
    llm = provider(server, monkeypatch, model="no-such-model")
    with pytest.raises(LLMFatalError, match="404"):
        llm.complete(creation(llm), 50)


def test_no_key_and_no_base_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(CoopError, match="--llm offline"):
        make_llm(RunSettings(), "i", "worker")
    assert isinstance(make_llm(RunSettings(llm="offline").validate(), "i", "worker"), OfflineLLM)


@pytest.mark.live
@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY"),
    reason="no OPENAI_API_KEY configured: set it (with OPENAI_BASE_URL and "
    "COOP_MODEL for a compatible server) to test a real endpoint",
)
def test_real_endpoint() -> None:
    llm = OpenAILLM(
        RunSettings(
            model=os.environ.get("COOP_MODEL", "gpt-4o-mini"),
            embedding_model=os.environ.get("COOP_EMBEDDING_MODEL", "text-embedding-3-small"),
        ),
        "live",
    )
    reply = llm.complete(creation(llm), 200)
    assert reply.prompt_tokens > 0 and reply.text.strip()
    assert len(llm.embed(["hello"]).vectors[0]) > 10


@pytest.mark.parametrize("base64", [True, False])
def test_vectors_come_alike_in_base64_or_as_numbers(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, base64: bool
) -> None:
    """coop asks for base64 (OpenAI's own encoding, and decoded in C); a server that knows
    no base64 sends numbers, and the vectors are the same. An infinite number is refused in
    either form."""
    server = make_standin(base64=base64)
    llm = provider(server, monkeypatch)
    texts = ["tomato", "tax law"]
    assert llm.embed(texts).vectors == [lexical_embedding(t) for t in texts]
    assert [c.base64 for c in server.calls] == [True]
    server.faults.broken = "infinite"
    with pytest.raises(LLMError, match="a vector holding a number that is not finite"):
        llm.embed(texts)


def test_many_embeddings_go_in_batches(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = provider(standin, monkeypatch)
    texts = [f"text number {i}" for i in range(600)]
    out = llm.embed(texts)
    assert len(out.vectors) == 600 and out.vectors[599] == llm.embed([texts[599]]).vectors[0]
    assert [c.kind for c in standin.calls].count("embeddings") == 3 + 1
    assert out.tokens == sum(c.prompt_tokens for c in standin.calls[:3])


@pytest.mark.parametrize(
    "broken, call, needle",
    [
        ("html", "complete", "answered a chat completion with a str"),
        ("no-choices", "complete", "no choices"),
        ("null-content", "complete", "a message with no content"),
        ("html", "embed", "answered embeddings with a str"),
        ("no-data", "embed", "0 embeddings for 1 inputs"),
        ("not-base64", "embed", "answered embeddings with a string that is not a base64 vector"),
        ("infinite", "embed", "answered embeddings with a vector holding a number that is not"),
    ],
)
def test_a_reply_that_breaks_the_api_is_a_one_line_model_error(
    make_standin: MakeStandIn,
    monkeypatch: pytest.MonkeyPatch,
    broken: str,
    call: str,
    needle: str,
) -> None:
    server = make_standin(faults=Faults(broken=broken))
    llm = provider(server, monkeypatch)
    with pytest.raises(LLMError) as info:
        if call == "complete":
            llm.complete(creation(llm), 50)
        else:
            llm.embed(["a task"])
    message = str(info.value)
    assert message.startswith("MalformedReply: model server ") and server.base_url in message
    assert needle in message and "\n" not in message


def test_a_reply_without_usage_is_counted_here(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers may omit `usage` (llama.cpp, some proxies): not a fault, coop counts itself."""
    server = make_standin(faults=Faults(broken="no-usage"))
    llm = provider(server, monkeypatch)
    assert llm.complete(creation(llm), 50).prompt_tokens > 0
    assert llm.embed(["a task"]).tokens > 0


def test_an_unreachable_server_is_a_one_line_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    llm = OpenAILLM(RunSettings(), "t")
    llm.client = llm.client.with_options(max_retries=0)
    with pytest.raises(LLMError, match=r"^APIConnectionError: model server .* unreachable"):
        llm.complete(creation(llm), 50)
    with pytest.raises(LLMFatalError, match="unreachable"):
        llm.check()


def test_slow_headers_past_the_client_timeout_are_a_one_line_model_error(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_standin(faults=Faults(rate_slow=1.0, slow_seconds=5.0))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    llm = OpenAILLM(RunSettings(model_timeout=1.0), "t")
    llm.client = llm.client.with_options(max_retries=0)
    with pytest.raises(LLMError, match=r"^APITimeoutError: .* did not answer .* within 1s"):
        llm.complete(creation(llm), 50)


def test_the_check_before_a_run(make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """One listing request: the key, the models, and an answer that is no listing at all."""
    server = make_standin(api_key="right", models=("small-model", "embed-model"))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    settings = RunSettings(model="small-model", embedding_model="embed-model")
    with pytest.raises(LLMFatalError, match="401"):
        OpenAILLM(settings, "t").check()
    monkeypatch.setenv("OPENAI_API_KEY", "right")
    OpenAILLM(settings, "t").check()  # both models known
    with pytest.raises(LLMFatalError, match=r"does not know the model 'big-model'.*small-model"):
        OpenAILLM(RunSettings(model="big-model", embedding_model="embed-model"), "t").check()
    server.faults.broken = "html"
    with pytest.raises(LLMFatalError, match="not a model listing"):
        OpenAILLM(settings, "t").check()


@pytest.mark.parametrize(
    "broken, needle",
    [
        ("per-token", "answered embeddings with one vector per token (6 vectors for one input)"),
        ("ragged", "answered embeddings with vectors of different lengths (255, 256)"),
        ("no-data", "answered embeddings with 0 embeddings for 2 inputs"),
    ],
)
def test_the_check_before_a_run_embeds_two_inputs_and_names_a_bad_shape(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch, broken: str, needle: str
) -> None:
    """llama.cpp's server without pooling answers embeddings with a vector per token: the
    check says so in one line, with the fix, before any objective exists."""
    server = make_standin(faults=Faults(broken=broken))
    llm = provider(server, monkeypatch)
    with pytest.raises(LLMFatalError) as info:
        llm.check()
    message = str(info.value)
    assert needle in message and server.base_url in message and "\n" not in message
    assert ("--pooling mean" in message) == (broken == "per-token")
    assert "text-embedding-3-small" in message  # which flag to look at
    assert len([c for c in server.calls if c.kind == "embeddings"]) == 1  # two inputs in one


def test_the_check_rides_out_a_server_busy_for_a_moment(
    make_standin: MakeStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 is a server that works: the check retries it as every call of the run does, so a
    burst of them (a standby started while the swarm is rate-limited) does not stop a start.
    A server busy for longer than those retries is still one line."""
    server = make_standin(faults=Faults(busy_first=CLIENT_MAX_RETRIES, retry_after=0.05))
    assert provider(server, monkeypatch).check() > 0
    statuses = [c.status for c in server.calls if c.kind == "embeddings"]
    assert statuses == [429] * CLIENT_MAX_RETRIES + [200]

    busy = make_standin(faults=Faults(busy_first=CLIENT_MAX_RETRIES + 1, retry_after=0.05))
    with pytest.raises(LLMFatalError, match="429") as info:
        provider(busy, monkeypatch).check()
    assert "\n" not in str(info.value)
    assert [c.status for c in busy.calls if c.kind == "embeddings"] == [429] * (
        CLIENT_MAX_RETRIES + 1
    )


def test_the_check_returns_what_its_embeddings_cost(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = provider(standin, monkeypatch)
    spent = llm.check()
    (call,) = [c for c in standin.calls if c.kind == "embeddings"]
    assert spent == call.prompt_tokens > 0


def test_vectors_that_change_dimension_mid_run_are_a_malformed_reply(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = provider(standin, monkeypatch)
    llm.embed(["a task"])
    standin.faults.dimension = 128
    with pytest.raises(LLMError) as info:
        llm.embed(["another task"])
    assert info.value.malformed
    assert info.value.fault.endswith("vectors of 128 dimensions where earlier ones had 256")
    standin.faults.broken = "per-token"
    with pytest.raises(LLMError) as again:
        llm.embed(["a third task"])
    assert "one vector per token" in again.value.fault and "\n" not in str(again.value)


def test_the_server_counts_calibrate_the_estimate(
    standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open model has no tiktoken encoding: the estimate starts at 3 bytes a token, then
    follows what the server reports for the prompts it was sent (the stand-in counts 3 bytes
    a token, rounded up per prompt: the calibrated estimate keeps a margin above it)."""
    llm = provider(standin, monkeypatch, model="smollm2-unknown-to-tiktoken")
    assert not llm.tokenizer.exact and llm.tokenizer.bytes_per_token == 3.0
    prompt = agents.creation_prompt("Grow tomatoes " * 40, [], [], llm.tokenizer, 4000)
    for _ in range(3):
        llm.complete(prompt, 20)
    counted = sum(c.prompt_tokens for c in standin.calls)
    sent = 3 * len(prompt.encode())
    assert counted >= 500 and llm.tokenizer.bytes_per_token == pytest.approx(
        sent / counted / 1.15, rel=0.01
    )
    assert llm.tokenizer.count(prompt) > standin.calls[-1].prompt_tokens  # still errs high


BUILT = """
import typing, pydantic
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from coop.config import RunSettings
from coop.llm_openai import OpenAILLM

def models(root):
    todo, seen = [root], set()
    while todo:
        kind = todo.pop()
        if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel):
            if kind not in seen:
                seen.add(kind)
                todo += [f.annotation for f in kind.model_fields.values()]
        else:
            todo += typing.get_args(kind)
    return seen

replies = models(ChatCompletion) | models(CreateEmbeddingResponse)
print(sum(m.__pydantic_complete__ for m in replies), len(replies))
OpenAILLM(RunSettings(), "t")
print(sum(m.__pydantic_complete__ for m in replies), len(replies))
"""


def test_a_client_builds_the_reply_models_before_any_thread_races_to() -> None:
    """openai builds its pydantic models at first use, and two threads building one at once
    fail ("BaseModel cannot be instantiated directly"): a client builds every model of the
    replies coop reads when it is made, on one thread. In a fresh process, as a worker's."""
    out = subprocess.run(
        [sys.executable, "-c", BUILT],
        env=os.environ | {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    (before, total), (after, again) = (map(int, line.split()) for line in out[:2])
    assert total == again > 10 and before < total  # deferred by the openai package
    assert after == total  # every one built once a client is made
