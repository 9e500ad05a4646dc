"""The `fetch` tool against a real HTTP server on loopback: what it returns, and what it will not
reach unless the run allows it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coop.tools import Invocation
from coop.tools.fetch import MAX_BYTES, Fetch

AT = Invocation("obj/3/4", 3, 1, "w", timeout=2.0)
LOOPBACK = ["127.0.0.0/8"]


class Site(BaseHTTPRequestHandler):
    """Pages that test a fetcher: text, HTML, a big file, a slow one, redirects."""

    seen: list[dict[str, str]] = []  # noqa: RUF012 — the requests' headers, for the tests

    def do_GET(self) -> None:
        Site.seen.append(dict(self.headers))
        if self.path == "/slow":
            time.sleep(5)
        if self.path.startswith("/to/"):
            self.send_response(302)
            rest = self.path[len("/to/") :]
            self.send_header("Location", rest if rest.startswith("http") else f"/{rest}")
            self.end_headers()
            return
        kind, body = {
            "/page": ("text/html", b"<html><script>x()</script><h1>Tomatoes</h1><p>Water</p>"),
            "/big": ("application/octet-stream", b"x" * (MAX_BYTES * 2)),
        }.get(self.path, ("text/plain", b"plain text"))
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_page_comes_back_as_its_text_with_the_idempotency_key(site: str) -> None:
    out = Fetch(LOOPBACK).call("fetch", {"url": f"{site}/page"}, AT)
    assert out.ok and "HTTP 200 text/html" in out.text
    assert "Tomatoes\nWater" in out.text and "x()" not in out.text  # text, not the script
    assert Site.seen[-1]["Idempotency-Key"] == "obj/3/4"


def test_loopback_private_and_link_local_addresses_are_refused_unless_allowed(site: str) -> None:
    for url in (f"{site}/page", "http://10.1.2.3/", "http://169.254.169.254/latest/meta-data/"):
        out = Fetch().call("fetch", {"url": url}, AT)
        assert not out.ok and "not fetched" in out.text and "--fetch-allow" in out.text
    assert "loopback" in Fetch().call("fetch", {"url": f"{site}/x"}, AT).text
    assert "link-local" in Fetch().call("fetch", {"url": "http://169.254.1.1/"}, AT).text


def test_a_redirect_is_checked_again(site: str) -> None:
    allowed_first = Fetch(["127.0.0.1/32"])
    ok = allowed_first.call("fetch", {"url": f"{site}/to/page"}, AT)
    assert ok.ok and "Tomatoes" in ok.text
    out = allowed_first.call("fetch", {"url": f"{site}/to/http://10.0.0.1/admin"}, AT)
    assert not out.ok and "10.0.0.1" in out.text and "not fetched" in out.text


def test_size_and_time_are_bounded(site: str) -> None:
    big = Fetch(LOOPBACK).call("fetch", {"url": f"{site}/big"}, AT)
    assert big.ok and f"{MAX_BYTES:,} bytes (cut)" in big.text
    began = time.monotonic()
    slow = Fetch(LOOPBACK).call("fetch", {"url": f"{site}/slow"}, AT)
    assert not slow.ok and "did not answer within 2s" in slow.text
    assert time.monotonic() - began < 4


def test_what_is_not_an_http_url_is_refused() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/x", "no scheme", "http://"):
        out = Fetch().call("fetch", {"url": url}, AT)
        assert not out.ok and "only http and https" in out.text
