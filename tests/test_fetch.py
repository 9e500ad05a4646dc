"""The `fetch` tool against a real HTTP server on loopback: what it returns, what it will not
reach unless the run allows it, and one deadline however slowly a server answers."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from coop.tools import Invocation
from coop.tools.box import Toolbox
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


def test_credentials_in_the_url_are_dropped_never_sent(site: str) -> None:
    port = site.rsplit(":", 1)[1]
    out = Fetch(LOOPBACK).call("fetch", {"url": f"http://ann:hunter22@127.0.0.1:{port}/x"}, AT)
    sent = Site.seen[-1]
    assert out.ok and out.text.startswith(f"GET http://127.0.0.1:{port}/x: HTTP 200")
    assert sent["Host"] == f"127.0.0.1:{port}" and "Authorization" not in sent
    assert not any("hunter22" in v or "ann" in v for v in [out.text, *sent.values()])


CARRIERS = [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:0:7f00:1", "127.0.0.1"),  # SIIT
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
    ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible
    ("::a00:1", "10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo: its client, inverted
]


@pytest.mark.parametrize(("address", "carried"), CARRIERS)
def test_an_ipv6_address_is_judged_by_the_ipv4_it_carries(address: str, carried: str) -> None:
    """Refused before any packet is sent: the address check runs on the literal address."""
    out = Fetch().call("fetch", {"url": f"http://[{address}]:8080/latest"}, AT)
    assert not out.ok and out.text.startswith(f"{address} is ")
    assert f", which carries {carried}, a " in out.text and "not fetched" in out.text


def test_site_local_and_nat64_local_use_are_refused_public_carriers_are_not() -> None:
    for address in ("fec0::1", "fec0:0:0:ffff::1", "64:ff9b:1::a9fe:a9fe"):
        out = Fetch().call("fetch", {"url": f"http://[{address}]/"}, AT)
        assert not out.ok and "not fetched" in out.text
    assert "site-local" in Fetch().call("fetch", {"url": "http://[fec0::1]/"}, AT).text
    public = ("::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111")
    for address in public:
        assert Fetch().refusal(ipaddress.ip_address(address)) is None, address
    allowed = Fetch(LOOPBACK)
    assert allowed.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert allowed.refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) is not None


DRIP = """
import socket, sys, threading, time
def serve(conn, where):
    conn.recv(65536)
    head = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 9999\\r\\n"
    try:
        if where == "headers":
            conn.sendall(b"HTTP/1.1 200 OK\\r\\n")
            while True:
                conn.sendall(b"X")
                time.sleep(0.5)
        conn.sendall(head + b"\\r\\n")
        while True:
            conn.sendall(b"x")
            time.sleep(0.5)
    except OSError:
        conn.close()
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    where = "headers" if conn.recv(64, socket.MSG_PEEK).startswith(b"GET /headers") else "body"
    threading.Thread(target=serve, args=(conn, where), daemon=True).start()
"""
"""A server that answers a byte every 0.5 s, in its headers or its body, for ever; in a process
of its own, so the test process's sockets are the fetch's alone."""


@pytest.fixture(scope="module")
def drip() -> Iterator[str]:
    server = subprocess.Popen([sys.executable, "-c", DRIP], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    yield f"http://127.0.0.1:{int(server.stdout.readline())}"
    server.kill()
    server.wait()


def sockets_to(url: str) -> int:
    """Sockets this process holds open (its fds in /proc/self/fd) to the server at `url`, as
    the kernel sees them; the module's other server, in this process, is not counted."""
    port = f"{int(url.rsplit(':', 1)[1]):04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[2].endswith(f":{port}"):  # the remote end is the server
                inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own fd, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}") in inodes
    return count


@pytest.mark.parametrize("where", ["headers", "body"])
def test_one_deadline_ends_a_dripping_call_and_leaves_no_thread_or_socket(
    drip: str, where: str
) -> None:
    """Through the toolbox, which would give up on the call's thread 1 s after its timeout:
    the fetch ends itself at the deadline, so that thread and its socket are gone."""
    box = Toolbox([Fetch(LOOPBACK)])
    assert sockets_to(drip) == 0
    began = time.monotonic()
    ran = box.run("fetch", json.dumps({"url": f"{drip}/{where}"}), AT)
    elapsed = time.monotonic() - began
    assert not ran.output.ok and f"/{where} did not answer within 2s" in ran.output.text
    assert AT.timeout <= elapsed < AT.timeout + 0.5
    alive = [t.name for t in threading.enumerate() if "fetch" in t.name]
    assert alive == [] and sockets_to(drip) == 0
