"""The scrub: keys known to coop masked whole and in pieces, credentials of any service masked by
their shape or their label, ordinary text left as it is — and the scrub applied where secrets
can leak: a fetched page through the toolbox, a log line, the board's events and results."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from coop import config, secrets
from coop.journal import journal_path
from coop.secrets import MASK, PIECE, keep_config, scrub
from coop.tools import Invocation
from coop.tools.box import Toolbox
from coop.tools.fetch import Fetch
from coop.types import Lease
from tests.support.board import in_process

OPENAI_KEY = "sk-proj-Q7vR2mX9pL4tZ8wK1nB6cY3hJ5gF0dS"
WEAVIATE_KEY = "wv8Kd2Lq9Xz4Rt7Yp1Mn6Bc3Hg5Jf0Sa"
"""Keys of this process, as a worker holds them (random-looking, like real ones)."""


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("WEAVIATE_API_KEY", WEAVIATE_KEY)
    monkeypatch.setattr(secrets, "_kept", set())  # what a test keeps stays in the test


def leaked(text: str, key: str) -> list[str]:
    """Runs of PIECE characters of `key`, forwards or reversed, still in `text` once its
    whitespace is gone: what an attacker could put back together."""
    squeezed = "".join(text.split())
    return [
        way[i : i + PIECE]
        for way in (key, key[::-1])
        for i in range(len(way) - PIECE + 1)
        if way[i : i + PIECE] in squeezed
    ]


FORMS: dict[str, Callable[[str], str]] = {
    "whole": lambda k: f"the key is {k} and more",
    "prefix": lambda k: f"the key is {k[:12]} and more",
    "suffix": lambda k: f"the key is {k[-9:]} and more",
    "middle": lambda k: f"the key is {k[5:20]} and more",
    "reversed": lambda k: f"the key is {k[::-1]} and more",
    "reversed prefix": lambda k: f"the key is {k[::-1][:10]} and more",
    "halves on two lines": lambda k: f"the key is {k[:17]}\n{k[17:]} and more",
    "halves far apart": lambda k: f"the key is {k[:17]}   {k[17:]} and more",
    "reversed halves": lambda k: f"the key is {k[::-1][:11]}\n\t{k[::-1][11:]} and more",
    "quoted": lambda k: f"the key is '{k}' and more",
}
"""How a tool told to get a key past an exact-value filter might print it."""


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("key", [OPENAI_KEY, WEAVIATE_KEY])
def test_a_known_key_is_masked_whole_and_in_pieces(form: str, key: str) -> None:
    out = scrub(FORMS[form](key))
    assert leaked(out, key) == [] and MASK in out, out
    assert out.startswith("the key is ") and out.endswith(" and more")  # the words around stay


def test_a_value_an_mcp_server_was_given_is_masked_when_its_name_says_secret() -> None:
    token, header = "tok-83hf92kd0alq7xme", "Zk2P9xq7Lw4Tn8Vb"
    keep_config({"GITLAB_TOKEN": token, "NODE_ENV": "production"}, {"X-Api-Key": header})
    out = scrub(f"env {token[::-1]} header {header[:9]} running in production")
    assert leaked(out, token) == leaked(out, header) == []
    assert out.endswith("running in production")


SHAPES = [
    ("Authorization: Bearer {}", "eyJhbGciOiJub25lIn0x9Qk3"),
    ("curl -H 'Authorization: Bearer {}'", "abcdefghijklmnopqrstuvwxyz"),
    ("Bearer {}", "h8Gk2Lp9Qx4Zt7Rm"),
    ("X-Weaviate-Api-Key: {}", "Kd82jf0Qm3Lx9Vz1"),
    ("WEAVIATE_API_KEY={}", "otherpersonskey42"),
    ('{{"client_secret": "{}"}}', "s3cr3t-v4lue!"),
    ("aws_secret_access_key = {}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("password: {}", "correct-horse-battery-9"),
    ("Authorization: Basic {}", "dXNlcjpwYXNz"),
    ("postgres://{}@db.internal:5432/app", "bob:hunter22"),
    ("id {} in the log", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary {}", "ASIAY34FZKBOKMUTVV7A"),
    (
        "jwt {} sent",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
    ),
    ("token {}", "ghp_" + "aB3" * 12),
    ("token {}", "gho_" + "Zx9" * 12),
    ("token {}", "ghs_" + "Qw1" * 12),
    ("token {}", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("slack {}", "xoxb-2048-8192-AbCdEfGhIjKlMnOp"),
    ("slack {}", "xoxp-1111-2222-3333-abcdef0123456789"),
    ("openai {}", "sk-" + "Ab1" * 16),
    ("openai {}", "sk-proj-" + "Cd2" * 20),
    ("anthropic {}", "sk-ant-api03-" + "Ef3" * 20),
    ("Incorrect API key provided: {}", "sk-ab***yz"),
    ("leaked {}", "token-abcdef123456"),
    ("leaked {}", "KEY-ab12cd34ef"),
    ("stripe {}", "sk_live_" + "Gh4" * 8),
    ("google {}", "AIza" + "Ij5kL" * 7),
    ("hf {}", "hf_" + "MnOpQrStUv" * 3 + "Wx"),
    ("key:\n{}", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"),
]


@pytest.mark.parametrize(("form", "secret"), SHAPES)
def test_a_credential_of_any_service_is_masked_by_its_shape_or_label(
    form: str, secret: str
) -> None:
    text = form.format(secret)
    out = scrub(text)
    assert secret not in out and MASK in out, out
    assert out.startswith(text.split(secret)[0])  # its label stays


ORDINARY = [
    "The quick brown fox jumps over the lazy dog; tomatoes need 6-8 hours of sun.",
    "task #12 done by vm:0 (objective journal-test-0a1b2c3d, key obj/3/4)",
    "Idempotency-Key: obj/3/4 and lease token 7, max_tokens=700, prompt tokens: 12345678",
    "see https://example.com/docs/page?id=42&lang=en and http://user@host.example/x",
    "sha256 3f2a9c0d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f, uuid "
    "9f1c2b3a4d5e6f708192a3b4c5d6e7f8, git 2096613f",
    "token = tokenize(text); secret = os.environ['X']; Bearer authentication is common",
    "risk-assessment, task-force and disk-space; a skeleton key-value store",
    "Write the tests first.\n\tThen the code.\n",
]


def test_what_an_openai_error_says_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "plainsecretvalue")
    text = scrub("key plainsecretvalue and sk-proj-abcdef123456 in Incorrect key sk-ab***yz")
    assert "plainsecretvalue" not in text and "sk-proj" not in text and "sk-ab" not in text


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_passes_unchanged(text: str) -> None:
    assert scrub(text) == text


class Page(BaseHTTPRequestHandler):
    """A page that leaks: another service's key by shape, and this process's key reversed and
    split across a line, as a prompt-injected page would."""

    def do_GET(self) -> None:
        body = (
            f"<p>deploy with ghp_{'k9' * 18}</p><pre>{OPENAI_KEY[::-1][:15]}\n"
            f"{OPENAI_KEY[::-1][15:]}</pre><p>Tomatoes</p>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_a_fetched_page_reaches_the_model_scrubbed(page: str) -> None:
    box = Toolbox([Fetch(["127.0.0.0/8"])])
    at = Invocation("o/1/1", 1, 1, "w", 5.0)
    out = box.run("fetch", f'{{"url": "{page}"}}', at).output
    assert out.ok and "Tomatoes" in out.text and "ghp_" not in out.text
    assert leaked(out.text, OPENAI_KEY) == [] and out.text.count(MASK) == 2


def test_events_and_results_are_kept_scrubbed(tmp_path: Path) -> None:
    """The board scrubs each event before it journals it: the result, the tape and the
    journal on disk hold no key, whoever let it by."""
    board = in_process("Leaky results", state_dir=tmp_path, max_tasks=5)
    board.add([f"Check {WEAVIATE_KEY[:10]}"])
    lease = board.lease("w")
    assert isinstance(lease, Lease)
    said = f"found xoxb-2048-8192-AbCdEfGhIjKl and {OPENAI_KEY[8:30]}"
    board.complete(lease.task.id, lease.token, "w", said)
    (result,) = board.results()
    assert result.text == f"found {MASK} and {MASK}" and result.task == f"Check {MASK}"
    tape = "".join(e.to_json() for e in board.all_events())
    oid = board.objective_id
    with closing(sqlite3.connect(journal_path(tmp_path, oid))) as db:
        stored = "".join(d for (d,) in db.execute("SELECT data FROM events"))
    for kept in (tape, stored):
        assert "xoxb-" not in kept and leaked(kept, OPENAI_KEY) == leaked(kept, WEAVIATE_KEY) == []


def test_a_log_line_is_scrubbed_of_a_reversed_key(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger("coop")
    saved = root.handlers[:], root.propagate, root.level
    try:
        config.configure_logging(quiet=False)
        logging.getLogger("coop.test").info("server said %s", WEAVIATE_KEY[::-1])
        err = capsys.readouterr().err
    finally:
        root.handlers[:], root.propagate, root.level = saved
    assert f"server said {MASK}" in err and leaked(err, WEAVIATE_KEY) == []
