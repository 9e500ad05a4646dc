"""The `fetch` tool: an HTTP(S) GET of a page or a file, with bounds on time and size.

A model's URL is not trusted: loopback, link-local, private, shared, site-local and reserved
addresses are refused (the cloud metadata service, the Ray dashboard, a database on the private
network…) unless the run allows a network explicitly (`--fetch-allow 10.0.0.0/8`). An IPv6
address that carries an IPv4 one (mapped, SIIT, compatible, NAT64, 6to4, Teredo) is judged by
the IPv4 inside it, since that is where the packets end up. The check is made on every address
the name resolves to, the request goes to the address that was checked (so a second, different
DNS answer cannot slip through), and every redirect is checked again. Credentials written into
a URL (`user:pass@`) are dropped, never sent. Each request carries the call's
`Idempotency-Key`.

One deadline bounds the whole call — connecting, the headers, the body, every redirect — however
slowly a server drips its bytes: at the deadline the call's sockets are shut, so the call (and
the toolbox thread it runs on) ends then, leaving nothing open behind it. Only the name lookup
is the resolver's to bound.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Sequence
from html.parser import HTMLParser
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

from coop.tools import Invocation, ToolOutput, ToolSpec

MAX_BYTES = 512 * 1024
"""Most of a response read; the rest is not downloaded."""
MAX_REDIRECTS = 3
"""Redirects followed (each one checked like the first URL) before the call gives up."""
USER_AGENT = "coop-fetch/1 (+https://github.com/coop)"
"""Who is asking, for the server's logs."""
SPEC = ToolSpec(
    "fetch",
    "GET a web page or file over http(s) and return its text (HTML reduced to its text, cut "
    f"at {MAX_BYTES // 1024} KiB). Only public addresses, unless the run allows others. "
    "Credentials in a URL (user:password@) are dropped, never sent.",
    {
        "type": "object",
        "properties": {"url": {"type": "string", "description": "an http or https URL"}},
        "required": ["url"],
        "additionalProperties": False,
    },
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NON_PUBLIC_V6 = (
    ipaddress.IPv6Network("fec0::/10"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)
"""IPv6 networks Python's `is_global` still counts as public: site-local (deprecated, but routed
inside some sites) and NAT64's local-use prefix, whose IPv4 sits where its operator chose, so
it cannot be read out and checked."""
COMPATIBLE = ipaddress.IPv6Network("::/96")
"""IPv4-compatible IPv6 (`::7f00:1` is 127.0.0.1), deprecated but still parsed by resolvers."""
SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
"""IPv4-translated addresses (SIIT, RFC 2765): `::ffff:0:7f00:1` is 127.0.0.1."""
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""NAT64's well-known prefix (RFC 6052): a gateway forwards `64:ff9b::a9fe:a9fe` to
169.254.169.254."""


class Refused(Exception):
    """A URL this tool will not fetch (the message says why, for the model)."""


class Fetch:
    name = "fetch"

    def __init__(self, allow: Sequence[str] = ()) -> None:
        """`allow`: networks (CIDR) that may be fetched though not public."""
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]

    def tools(self) -> list[ToolSpec]:
        return [SPEC]

    def call(self, tool: str, args: dict[str, Any], at: Invocation) -> ToolOutput:
        url = str(args["url"])
        deadline = _Deadline(at.timeout)
        try:
            with deadline, httpx.Client(timeout=at.timeout, follow_redirects=False) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    url, resp = self._get(client, url, at.key, deadline)
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    return _describe(url, resp)
            return ToolOutput.error(f"more than {MAX_REDIRECTS} redirects from {_shown(url)}")
        except Refused as exc:
            return ToolOutput.error(str(exc))
        except httpx.HTTPError as exc:
            if deadline.passed or isinstance(exc, httpx.TimeoutException):
                return ToolOutput.error(f"{_shown(url)} did not answer within {at.timeout:g}s")
            return ToolOutput.error(f"{_shown(url)}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Nothing is kept open between calls."""

    def _get(
        self, client: httpx.Client, url: str, key: str, deadline: _Deadline
    ) -> tuple[str, httpx.Response]:
        """GET `url` at the address its name was checked at, reading at most MAX_BYTES.
        Returns the URL as fetched (without credentials) and the response."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused(f"only http and https URLs with a host can be fetched, not {url!r}")
        url = _shown(url)
        address = self._address(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        )
        target = urlunsplit(
            (parts.scheme, _netloc(address, parts), parts.path or "/", parts.query, "")
        )
        host = _netloc(parts.hostname, parts)  # never the user:password@ of the URL
        headers = {"Host": host, "User-Agent": USER_AGENT, "Idempotency-Key": key}
        extensions = {"sni_hostname": parts.hostname, "trace": deadline.trace}
        request = client.build_request("GET", target, headers=headers, extensions=extensions)
        resp = client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) >= MAX_BYTES:
                    break
            resp._content = bytes(body[:MAX_BYTES])  # what `.content` answers from now on
        finally:
            resp.close()
        return url, resp

    def _address(self, host: str, port: int) -> str:
        """The first address `host` resolves to, if every one of them may be fetched."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = [str(info[4][0]) for info in infos]
        for text in addresses:
            if (why := self.refusal(ipaddress.ip_address(text))) is not None:
                raise Refused(
                    f"{host} is {text}{why}: not fetched (the run may allow its network with "
                    "--fetch-allow)"
                )
        return addresses[0]

    def refusal(self, ip: Address) -> str | None:
        """Why `ip` may not be fetched (", a loopback address"), or None if it may. An
        address that carries IPv4 ones is judged by them."""
        inside: list[Address] = list(embedded(ip))
        for judged in inside or [ip]:
            if any(judged in net for net in self.allow):
                continue
            if not judged.is_global or any(judged in net for net in NON_PUBLIC_V6):
                carries = f", which carries {judged}," if inside else ","
                return f"{carries} a {_kind(judged)} address"
        return None


def embedded(ip: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one carries, where the packets would really go (none for
    an IPv4 address, or an IPv6 one that carries none)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # its server and its client
    if any(ip in net for net in (COMPATIBLE, SIIT, NAT64)):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def _kind(ip: Address) -> str:
    for kind in ("loopback", "link_local", "site_local", "private", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}", False):
            return kind.replace("_", "-")
    return "unspecified" if ip.is_unspecified else "non-public"


def _netloc(host: str, parts: SplitResult) -> str:
    """`host` (an IPv6 one in brackets) with the URL's port, if it names one."""
    netloc = f"[{host}]" if ":" in host else host
    return f"{netloc}:{parts.port}" if parts.port else netloc


def _shown(url: str) -> str:
    """`url` without the credentials it may carry: as it is fetched, shown and recorded."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class _Deadline:
    """One deadline for a whole call. httpx bounds each read, not their sum, so a server that
    drips a byte at a time would keep the call alive for ever; at the deadline this shuts every
    socket the call opened (learnt through httpcore's `trace` extension), which wakes a blocked
    read at once and ends the call, its thread and its sockets."""

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name, self._timer.daemon = "fetch-deadline", True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        self._timer.join()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: keeps each new connection's socket (one opened just
        after the deadline is shut at once)."""
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sockets.append(sock)
            late = self.passed
        if late:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End both directions of `sock`, waking any read blocked on it; one already closed by its
    owner is left be."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _describe(url: str, resp: httpx.Response) -> ToolOutput:
    kind = resp.headers.get("content-type", "").split(";")[0].strip() or "unknown type"
    raw = resp.content
    text = raw.decode(resp.encoding or "utf-8", errors="replace")
    if kind == "text/html":
        text = _text_of(text)
    cut = " (cut)" if len(raw) >= MAX_BYTES else ""
    head = f"GET {url}: HTTP {resp.status_code} {kind}, {len(raw):,} bytes{cut}"
    return ToolOutput(resp.is_success, f"{head}\n\n{text}")


class _Text(HTMLParser):
    """The visible text of an HTML page: what a model needs of it, in far fewer tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style", "noscript")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style", "noscript") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def _text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return "\n".join(parser.parts)
