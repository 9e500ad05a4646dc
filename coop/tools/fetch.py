"""The `fetch` tool: an HTTP(S) GET of a page or a file, with bounds on time and size.

A model's URL is not trusted: loopback, link-local, private, shared and reserved addresses are
refused (the cloud metadata service, the Ray dashboard, a database on the private network…)
unless the run allows a network explicitly (`--fetch-allow 10.0.0.0/8`). The check is made on
every address the name resolves to, the request goes to the address that was checked (so a
second, different DNS answer cannot slip through), and every redirect is checked again. Each
request carries the call's `Idempotency-Key`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from coop.tools import Invocation, ToolOutput, ToolSpec

MAX_BYTES = 512 * 1024
"""Most of a response read; the rest is not downloaded."""
MAX_REDIRECTS = 3
USER_AGENT = "coop-fetch/1 (+https://github.com/coop)"
SPEC = ToolSpec(
    "fetch",
    "GET a web page or file over http(s) and return its text (HTML reduced to its text, cut "
    f"at {MAX_BYTES // 1024} KiB). Only public addresses, unless the run allows others.",
    {
        "type": "object",
        "properties": {"url": {"type": "string", "description": "an http or https URL"}},
        "required": ["url"],
        "additionalProperties": False,
    },
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
        try:
            with httpx.Client(timeout=at.timeout, follow_redirects=False) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    resp = self._get(client, url, at.key)
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    return _describe(url, resp)
            return ToolOutput.error(f"more than {MAX_REDIRECTS} redirects from {args['url']}")
        except Refused as exc:
            return ToolOutput.error(str(exc))
        except httpx.TimeoutException:
            return ToolOutput.error(f"{url} did not answer within {at.timeout:g}s")
        except httpx.HTTPError as exc:
            return ToolOutput.error(f"{url}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Nothing is kept open between calls."""

    def _get(self, client: httpx.Client, url: str, key: str) -> httpx.Response:
        """GET `url` at the address its name was checked at, reading at most MAX_BYTES."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused(f"only http and https URLs with a host can be fetched, not {url!r}")
        address = self._address(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        )
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc, "User-Agent": USER_AGENT, "Idempotency-Key": key}
        request = client.build_request(
            "GET", target, headers=headers, extensions={"sni_hostname": parts.hostname}
        )
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
        return resp

    def _address(self, host: str, port: int) -> str:
        """The first address `host` resolves to, if every one of them may be fetched."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise Refused(f"cannot resolve {host}: {exc.strerror}") from None
        addresses = [str(info[4][0]) for info in infos]
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if not ip.is_global and not any(ip in net for net in self.allow):
                raise Refused(
                    f"{host} is {ip}, a {_kind(ip)} address: not fetched (the run may allow "
                    "its network with --fetch-allow)"
                )
        return addresses[0]


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


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
