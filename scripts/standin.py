#!/usr/bin/env python
"""An OpenAI-compatible HTTP stand-in model server, on loopback, for tests and benchmarks.

Serves /v1/chat/completions, /v1/embeddings and /v1/models with answers from coop's simulator
(so coop's agents get well-formed replies), configurable latency, and injectable faults: 429
with Retry-After, 500, slow replies and malformed text. Every request is recorded with its agent
kind and the X-Coop-Instance header, so tests can tell which coop process made which call.

    python scripts/standin.py --port 8000 --latency 0.5 --rate-429 0.1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=anything coop start "..."
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from coop import tokens
from coop.constants import INSTANCE_HEADER, PROMPT_MARKERS
from coop.simulate import Simulator, lexical_embedding

MALFORMED = "Sorry!! I cannot <<format>> that ~~ as a list ~~ \x00 }{"


@dataclass
class Faults:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_slow: float = 0.0
    rate_malformed: float = 0.0
    slow_seconds: float = 3.0
    retry_after: float = 0.2
    poison: str | None = None  # prompts containing this text always get a 500
    context_limit: int = 0  # prompts over this many tokens get a 400 context_length_exceeded


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


@dataclass
class StandIn:
    """The server; `start()` runs it in a background thread and returns its base URL."""

    port: int = 0
    latency: float = 0.0  # seconds per chat completion
    embed_latency: float = 0.0  # seconds per embeddings request
    faults: Faults = field(default_factory=Faults)
    simulator: Simulator = field(default_factory=Simulator)
    api_key: str | None = None  # when set, other keys get 401
    models: tuple[str, ...] = ()  # when set, other models get 404
    seed: int = 0
    send_usage: bool = True  # some compatible servers omit `usage`
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._tokenizer = tokens.estimating("standin")
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.base_url

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def roll(self, rate: float) -> bool:
        with self._lock:
            return self._rng.random() < rate

    def usage(self) -> dict[str, int]:
        """Tokens this server counted for successful calls: the bill, to check coop's against."""
        ok = [c for c in self.calls if c.status == 200]
        return {
            "prompt_tokens": sum(c.prompt_tokens for c in ok),
            "completion_tokens": sum(c.completion_tokens for c in ok),
        }

    # -- request handling, called from the handler's threads ------------------------------

    def respond(
        self, path: str, headers: Any, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        instance = headers.get(INSTANCE_HEADER, "")
        model = str(body.get("model", ""))
        prompt = _prompt(body) if path.endswith("/chat/completions") else ""
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
        status, payload, extra = self._answer(path, headers, body, prompt, call)
        call.status = status
        self.record(call)
        return status, payload, extra

    def _answer(
        self, path: str, headers: Any, body: dict[str, Any], prompt: str, call: Call
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided.", "invalid_api_key"), {}
        if path.endswith("/models"):
            return (
                200,
                {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]},
                {},
            )
        if self.models and call.model not in self.models:
            return 404, _error(f"The model {call.model} does not exist.", "model_not_found"), {}
        if self.faults.poison and self.faults.poison in _prompt(body):
            return 500, _error("The server had an error (poisoned).", "server_error"), {}
        limit = self.faults.context_limit
        if limit and self._tokenizer.count(_prompt(body)) > limit:
            return (
                400,
                _error(
                    f"This model's maximum context length is {limit} tokens.",
                    "context_length_exceeded",
                ),
                {},
            )
        if self.roll(self.faults.rate_429):
            return (
                429,
                _error("Rate limit reached.", "rate_limit_exceeded"),
                {"Retry-After": str(self.faults.retry_after)},
            )
        if self.roll(self.faults.rate_500):
            return 500, _error("The server had an error.", "server_error"), {}
        delay = self.latency if prompt else self.embed_latency  # models think; lookups don't
        time.sleep(delay + (self.faults.slow_seconds if self.roll(self.faults.rate_slow) else 0))
        if path.endswith("/embeddings"):
            return 200, self._embeddings(body, call), {}
        if path.endswith("/chat/completions"):
            return 200, self._chat(prompt, body, call), {}
        return 404, _error(f"no route {path}", "not_found"), {}

    def _chat(self, prompt: str, body: dict[str, Any], call: Call) -> dict[str, Any]:
        text = MALFORMED if self.roll(self.faults.rate_malformed) else self.simulator.reply(prompt)
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit:
            text = self._tokenizer.trim(text, int(limit))
        call.prompt_tokens = self._tokenizer.count(prompt)
        call.completion_tokens = self._tokenizer.count(text)
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
        }
        if self.send_usage:
            reply["usage"] = {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens,
            }
        return reply

    def _embeddings(self, body: dict[str, Any], call: Call) -> dict[str, Any]:
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        call.prompt_tokens = sum(self._tokenizer.count(t) for t in texts)
        return {
            "object": "list",
            "model": call.model,
            "data": [
                {"object": "embedding", "index": i, "embedding": lexical_embedding(t)}
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens},
        }


def _prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _handler(server: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: +40 ms a reply

        def _send(self, status: int, payload: dict[str, Any], extra: dict[str, str]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)  # the client may have given up or been killed

        def do_GET(self) -> None:
            if self.path == "/_stats":
                self._send(
                    200, {"calls": [asdict(c) for c in server.calls], "usage": server.usage()}, {}
                )
            else:
                self._send(*server.respond(self.path, self.headers, {}))

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, _error("body is not JSON", "invalid_json"), {})
                return
            self._send(*server.respond(self.path, self.headers, body))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--latency", type=float, default=0.0, help="seconds per chat completion")
    p.add_argument(
        "--embed-latency", type=float, default=0.0, help="seconds per embeddings request"
    )
    for name in ("429", "500", "slow", "malformed"):
        p.add_argument(f"--rate-{name}", type=float, default=0.0)
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
        ),
        simulator=Simulator(fanout=a.fanout, limit=a.limit),
    )
    print(f"stand-in model server at {server.start()}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
