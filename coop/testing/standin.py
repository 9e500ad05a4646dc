"""An OpenAI-compatible HTTP stand-in model server, on loopback, for tests and benchmarks.

Serves /v1/chat/completions, /v1/embeddings and /v1/models with answers from coop's simulator
(so coop's agents get well-formed replies), configurable latency, and injectable faults: 429
with Retry-After, 500, slow replies, malformed text, and replies that break the API's promises
(an HTML page with status 200, no choices, no embeddings, a null message, no usage, vectors per
token as llama.cpp sends them without pooling, ragged vectors). It can also answer as real
small models do: HTML-escaped text (`&#34;` for quotes, as a llama.cpp chat template did) and
scripted replies per agent kind (a looping answer, the prompt's own instructions). Every
request is recorded with its agent kind and the X-Coop-Instance header, so tests can tell which
coop process made which call.

It is an asyncio server (aiohttp): a reply's latency is a sleep that holds no thread, so one
process serves hundreds of requests in flight; `capacity()` measures how many a second it
answers when nothing sleeps, to tell a benchmark whether the stand-in could be its limit.

    python -m scripts.standin --port 8000 --latency 0.5 --rate-429 0.1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=anything coop start "..."
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import random
import threading
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from coop import tokens
from coop.constants import INSTANCE_HEADER, PROMPT_MARKERS
from coop.simulate import Simulator, lexical_embedding

MALFORMED = "Sorry!! I cannot <<format>> that ~~ as a list ~~ \x00 }{"
BROKEN = (
    *("html", "no-choices", "no-data", "null-content", "no-usage"),
    *("per-token", "ragged", "not-base64", "infinite"),
)
"""Ways `Faults.broken` breaks every successful reply: an HTML page with status 200 (a proxy's
error page), no `choices`, no embeddings `data`, a `null` message, no `usage`, one vector per
token of each input (llama.cpp without `--pooling`), vectors whose lengths differ, a string
that is not base64 for a vector, a vector holding an infinite number."""
HTML_PAGE = "<html><body><h1>502 Bad Gateway</h1><p>upstream unavailable</p></body></html>"


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_slow: float = 0.0
    rate_malformed: float = 0.0
    slow_seconds: float = 3.0  # before any byte of the answer: headers too
    retry_after: float = 0.2
    poison: str | None = None  # prompts containing this text always get a 500
    poison_retry_after: float = 0.0
    """When set, a poisoned 500 says Retry-After (seconds), which the openai client honours in
    place of its own backoff (0.5 s, 1 s, 2 s…): its retries come as many, only sooner."""
    context_limit: int = 0  # prompts over this many tokens get a 400 context_length_exceeded
    broken: str = ""  # one of BROKEN: every successful reply broken that way
    escape: bool = False  # chat replies HTML-escaped, quotes as &#34; (a llama.cpp template)
    dimension: int = 0  # embeddings cut to this many numbers (a server whose model changed)
    busy_first: int = 0
    """The first this many model requests (embeddings or chat) get a 429 with Retry-After, as
    a rate-limited API answers a burst, or a server still loading its model; then it serves."""


@dataclass
class Call:
    path: str
    status: int
    kind: str
    instance: str
    model: str
    subject: str = ""  # the task of an execution prompt
    prompt_tokens: int = 0
    completion_tokens: int = 0
    turn: int = 0  # the model's earlier turns in the conversation: which step of a task it is
    at: float = 0.0  # when it was answered
    system: str = ""  # the request's system message: the run's instructions
    structured: bool = False  # asked with response_format json_schema
    base64: bool = False  # embeddings asked for in base64


@dataclass
class StandIn:
    """The server; `start()` runs it in a background thread and returns its base URL."""

    port: int = 0
    latency: float = 0.0  # seconds per chat completion
    embed_latency: float = 0.0  # seconds per embeddings request
    faults: Faults = field(default_factory=Faults)
    simulator: Simulator = field(default_factory=Simulator)
    api_key: str | None = None  # when set, other keys get 401
    models: tuple[str, ...] = ()  # when set, other models get 404, and /models lists them
    seed: int = 0
    send_usage: bool = True  # some compatible servers omit `usage`
    scripted: dict[str, list[str]] = field(default_factory=dict)
    """Replies by agent kind ("synthesis", "creation"…), served in order, the last one again
    and again: what a real model said, in place of the simulator's."""
    base64: bool = True
    """Embeddings asked for in base64 come so, as from OpenAI; False: as lists of numbers
    whatever was asked, as from servers that know no base64."""
    structured: bool = True
    """Whether it takes `response_format` json_schema (structured outputs), as vLLM and OpenAI
    do, holding the answer to the schema; False: it refuses them with a 400, as servers
    without them do."""
    tool_args: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Arguments the model calls each named tool with, once per task, when a task is offered
    it (served in order, the last one again and again): how tests call tools of their own."""
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._model_requests = 0  # counted for faults.busy_first
        self._lock = threading.Lock()
        self._tokenizer = tokens.estimating("standin")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._bound = 0

    @property
    def base_url(self) -> str:
        assert self._bound, "the stand-in is not started"
        return f"http://127.0.0.1:{self._bound}/v1"

    def start(self) -> str:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30) or not self._bound:
            raise RuntimeError("the stand-in model server did not start")
        return self.base_url

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        loop.run_until_complete(site.start())
        server = site._server
        assert isinstance(server, asyncio.Server)
        self._bound = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        """Stop serving (once; the port is closed when this returns)."""
        loop, self._loop = self._loop, None
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def roll(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    def _busy(self) -> bool:
        """Whether this model request is one of the first `faults.busy_first`."""
        with self._lock:
            self._model_requests += 1
            return self._model_requests <= self.faults.busy_first

    def usage(self) -> dict[str, int]:
        """Tokens this server counted for successful calls: the bill, to check coop's against."""
        ok = [c for c in self.calls if c.status == 200]
        return {
            "prompt_tokens": sum(c.prompt_tokens for c in ok),
            "completion_tokens": sum(c.completion_tokens for c in ok),
        }

    def capacity(self, seconds: float = 3.0, clients: int = 32) -> float:
        """Requests a second this server answers when its replies do not sleep: embeddings of
        a short task (the commonest request of a run), from `clients` threads over keep-alive
        connections. Latency is lifted meanwhile, and those calls are not recorded."""
        saved, self.latency, self.embed_latency = (self.latency, self.embed_latency), 0.0, 0.0
        body = json.dumps({"model": "m", "input": ["Step 17: Draft a section on costs"]}).encode()
        url = f"{self.base_url}/embeddings"
        deadline = time.monotonic() + seconds
        before = len(self.calls)

        def client() -> int:
            done = 0
            while time.monotonic() < deadline:
                req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
                done += 1
            return done

        try:
            with ThreadPoolExecutor(clients) as pool:
                total = sum(pool.map(lambda _: client(), range(clients)))
        finally:
            self.latency, self.embed_latency = saved
            with self._lock:
                del self.calls[before:]
        return total / seconds

    # -- request handling, on the server's event loop -------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/_stats":
            return web.json_response(
                {"calls": [asdict(c) for c in self.calls], "usage": self.usage()}
            )
        body: dict[str, Any] = {}
        if request.method == "POST":
            try:
                body = json.loads(await request.read() or b"{}")
            except json.JSONDecodeError:
                return web.json_response(_error("body is not JSON", "invalid_json"), status=400)
        status, payload, extra, delay = self.respond(request.path, request.headers, body)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(payload, str):  # a proxy's error page
            return web.Response(status=status, text=payload, content_type="text/html")
        return web.Response(
            status=status, text=json.dumps(payload), content_type="application/json", headers=extra
        )

    def respond(
        self, path: str, headers: Any, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | str, dict[str, str], float]:
        """(status, JSON payload or an HTML page, extra headers, seconds to wait first)."""
        instance = headers.get(INSTANCE_HEADER, "")
        model = str(body.get("model", ""))
        chat = path.endswith("/chat/completions")
        prompt = _prompt(body) if chat else ""
        system = _prompt(body, "system") if chat else ""
        kind = next((k for k, m in PROMPT_MARKERS.items() if prompt.startswith(m)), "other")
        call = Call(
            path,
            200,
            kind if prompt else path.rsplit("/", 1)[-1],
            instance,
            model,
            prompt.rsplit("Your task:", 1)[-1].split("\n", 1)[0].strip()
            if kind == "execution"
            else "",
        )
        call.system = system
        messages = body.get("messages") or []
        call.turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        status, payload, extra, delay = self._answer(path, headers, body, prompt, call)
        call.status, call.at = status, time.time() + delay
        self.record(call)
        return status, payload, extra, delay

    def _answer(
        self, path: str, headers: Any, body: dict[str, Any], prompt: str, call: Call
    ) -> tuple[int, dict[str, Any] | str, dict[str, str], float]:
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided.", "invalid_api_key"), {}, 0.0
        if self.faults.broken == "html":  # a proxy's error page, whatever was asked
            return 200, HTML_PAGE, {}, self.latency if prompt else self.embed_latency
        if path.endswith("/models"):
            listing = [{"id": m, "object": "model"} for m in self.models]
            return 200, {"object": "list", "data": listing}, {}, 0.0
        if self.models and call.model not in self.models:
            message = f"The model {call.model} does not exist."
            return 404, _error(message, "model_not_found"), {}, 0.0
        if self.faults.poison and self.faults.poison in prompt:
            wait = self.faults.poison_retry_after
            retry = {"Retry-After": str(wait)} if wait else {}
            return 500, _error("The server had an error (poisoned).", "server_error"), retry, 0.0
        limit = self.faults.context_limit
        if limit and self._tokenizer.count(prompt) > limit:
            message = f"This model's maximum context length is {limit} tokens."
            return 400, _error(message, "context_length_exceeded"), {}, 0.0
        if self._busy() or self.roll(self.faults.rate_429):
            retry = {"Retry-After": str(self.faults.retry_after)}
            return 429, _error("Rate limit reached.", "rate_limit_exceeded"), retry, 0.0
        if self.roll(self.faults.rate_500):
            return 500, _error("The server had an error.", "server_error"), {}, 0.0
        delay = self.latency if prompt else self.embed_latency  # models think; lookups don't
        if self.roll(self.faults.rate_slow):
            delay += self.faults.slow_seconds
        if path.endswith("/embeddings"):
            return 200, self._embeddings(body, call), {}, delay
        if path.endswith("/chat/completions"):
            if _schema(body) is not None and not self.structured:
                message = "response_format type 'json_schema' is not supported by this server"
                return 400, _error(message, "invalid_request_error"), {}, 0.0
            return 200, self._chat(prompt, body, call), {}, delay
        return 404, _error(f"no route {path}", "not_found"), {}, 0.0

    def _chat(self, prompt: str, body: dict[str, Any], call: Call) -> dict[str, Any]:
        tools = [t["function"]["name"] for t in body.get("tools") or () if "function" in t]
        asked: list[tuple[str, dict[str, Any]]] = []
        schema = _schema(body)
        call.structured = schema is not None
        if self.roll(self.faults.rate_malformed):
            text = MALFORMED
        elif schema is not None:  # decoding held to the schema
            text = json.dumps(self.simulator.instance(schema, prompt))
        elif self.scripted.get(call.kind):
            replies = self.scripted[call.kind]
            text = replies.pop(0) if len(replies) > 1 else replies[0]
        elif tools and (asked := self._scripted_call(body.get("messages") or [], tools)):
            text = ""
        elif tools:  # the simulator's tool use, as tool_calls
            text, asked = self.simulator.chat(body.get("messages") or [], body["tools"])
        else:
            text = self.simulator.reply(prompt)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            text = self._tokenizer.trim(text, int(limit))
        if self.faults.escape:
            text = html.escape(text)
        call.prompt_tokens = self._tokenizer.count(prompt) + self._tokenizer.count(call.system)
        call.completion_tokens = self._tokenizer.count(text) + 10 * len(asked)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if asked:
            message["tool_calls"] = [
                {
                    "id": f"call_{len(self.calls)}_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, (name, args) in enumerate(asked)
            ]
        if self.faults.broken == "null-content":
            message["content"] = None
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls" if asked else "stop",
                    "message": message,
                }
            ],
        }
        if self.faults.broken == "no-choices":
            reply["choices"] = []
        if self.send_usage and self.faults.broken != "no-usage":
            reply["usage"] = {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens,
            }
        return reply

    def _scripted_call(
        self, messages: list[dict[str, Any]], tools: list[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The call of the first tool of `tool_args` offered and not yet called in this
        conversation (none once each has been called)."""
        made = {
            c["function"]["name"]
            for m in messages
            if isinstance(m, dict) and m.get("role") == "assistant"
            for c in m.get("tool_calls") or ()
        }
        for name, queue in self.tool_args.items():
            if name in tools and name not in made:
                with self._lock:
                    args = queue.pop(0) if len(queue) > 1 else queue[0]
                return [(name, args)]
        return []

    def _embeddings(self, body: dict[str, Any], call: Call) -> dict[str, Any]:
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        call.prompt_tokens = sum(self._tokenizer.count(t) for t in texts)
        call.base64 = body.get("encoding_format") == "base64"
        encode = call.base64 and self.base64
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(self._vector(t, i), encode)}
            for i, t in enumerate(texts)
        ]
        reply: dict[str, Any] = {
            "object": "list",
            "model": call.model,
            "data": [] if self.faults.broken == "no-data" else data,
        }
        if self.faults.broken != "no-usage":
            reply["usage"] = {
                "prompt_tokens": call.prompt_tokens,
                "total_tokens": call.prompt_tokens,
            }
        return reply

    def _vector(self, text: str, index: int) -> Any:
        """An input's embedding, or what `Faults.broken` sends in its place."""
        if self.faults.broken == "per-token":  # one vector for each word and the start token
            return [lexical_embedding(w) for w in ["<s>", *text.split()]]
        if self.faults.broken == "not-base64":
            return MALFORMED
        vector: list[Any] = lexical_embedding(text)[: self.faults.dimension or None]
        if self.faults.broken == "infinite":
            vector[-1] = float("inf")
        return vector[: len(vector) - index] if self.faults.broken == "ragged" else vector


def _encoded(vector: list[Any], base64: bool) -> Any:
    """A vector as OpenAI sends it: base64 of little-endian 32-bit floats when the request
    asks for it; a list of numbers else, or when it is not one (`per-token`: as a server
    that knows no base64 sends it)."""
    if not base64 or not all(isinstance(x, float) for x in vector):
        return vector
    return b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


MakeStandIn = Callable[..., StandIn]
"""The `make_standin` fixture: a server made to measure for one test."""


def _prompt(body: dict[str, Any], role: str = "") -> str:
    """The text of the request's messages: of those with `role`, or (by default) of all but
    the system message, which a model reads as standing instructions, not as the prompt."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    chosen = [m for m in messages if (m.get("role") == role if role else m.get("role") != "system")]
    return "\n".join(str(m.get("content") or "") for m in chosen)


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request's `response_format` holds the answer to, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    return schema if isinstance(schema, dict) else {}


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per chat completion")
    p.add_argument(
        "--embed-latency", type=float, default=0.0, help="seconds per embeddings request"
    )
    for name in ("429", "500", "slow", "malformed"):
        p.add_argument(f"--rate-{name}", type=float, default=0.0)
    p.add_argument("--broken", choices=BROKEN, default="", help="break every reply this way")
    p.add_argument("--busy-first", type=int, default=0, help="429 for the first N model requests")
    p.add_argument("--fanout", type=int, default=3, help="new tasks per completed task")
    p.add_argument("--limit", type=int, default=12, help="tasks in the simulated objective")
    p.add_argument("--api-key", help="accept only this key (others get 401)")
    a = p.parse_args()
    server = StandIn(
        port=a.port,
        latency=a.latency,
        embed_latency=a.embed_latency,
        api_key=a.api_key,
        faults=Faults(
            rate_429=a.rate_429,
            rate_500=a.rate_500,
            rate_slow=a.rate_slow,
            rate_malformed=a.rate_malformed,
            broken=a.broken,
            busy_first=a.busy_first,
        ),
        simulator=Simulator(fanout=a.fanout, limit=a.limit),
    )
    print(f"stand-in model server at {server.start()}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
