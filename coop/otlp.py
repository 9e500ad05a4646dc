"""Sending `coop.traces` spans to an OpenTelemetry collector over OTLP/HTTP, with the official
SDK and exporter (the `coop[otel]` extra).

Imported only when an endpoint is configured: a run without one never loads OpenTelemetry.
The spans are built as the SDK's own `ReadableSpan`s, with their derived ids and their
events' times, and handed to `OTLPSpanExporter` directly — no tracer, no random ids, no
clock — so what a receiver stores is exactly what the journal says.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from coop.errors import CoopError
from coop.traces import SpanRecord

TRACES_PATH = "/v1/traces"
"""Where OTLP/HTTP takes spans under a collector's base endpoint (the specification's)."""

DEFAULT_SERVICE = "coop"
"""`service.name` unless OTEL_SERVICE_NAME names another."""
TIMEOUT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
"""The standard variables for the seconds one batch may take, the traces' own first (seconds,
as the Python SDK reads them): set, they replace coop's own wait, as for any OTLP exporter."""


_SCOPE = InstrumentationScope("coop")
"""The instrumentation scope every span is reported under."""


_CALLS = ("chat ", "embeddings ")
"""Span names of calls to the model server: CLIENT spans (the rest are INTERNAL)."""


class ExportError(CoopError):
    """The collector did not take the spans (unreachable, refused, bad address)."""


def endpoint_of(explicit: str | None) -> str:
    """The traces URL: `explicit` (a base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT) or the
    standard variables; one line if it is missing or not an http(s) URL."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") if not explicit else ""
    base = explicit or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    url = traces or base
    if not url:
        raise ExportError(
            "no OTLP endpoint: pass --otlp-endpoint or set OTEL_EXPORTER_OTLP_ENDPOINT"
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError(f"bad OTLP endpoint {url!r}: expected http(s)://host:port")
    if traces or url.rstrip("/").endswith(TRACES_PATH):
        return url
    return url.rstrip("/") + TRACES_PATH


def timeout_of(default: float) -> float:
    """The seconds a batch may take: the first of `TIMEOUT_VARS` set, else `default`. A value
    that is not a positive number is refused in one line (the SDK would log and ignore it)."""
    for name in TIMEOUT_VARS:
        raw = os.environ.get(name)
        if raw:
            try:
                seconds = float(raw)
            except ValueError:
                seconds = math.nan
            if not (0 < seconds < math.inf):
                raise ExportError(f"bad {name} {raw!r}: expected seconds, a positive number")
            return seconds
    return default


class Sender:
    """One collector: converts span records and sends them, raising `ExportError` when the
    collector does not take them."""

    def __init__(self, endpoint: str | None, *, timeout: float = 10.0) -> None:
        self.endpoint = endpoint_of(endpoint)
        # the SDK logs each failure with its traceback: coop says it once, in one line
        logging.getLogger("opentelemetry.exporter.otlp").setLevel(logging.CRITICAL)
        self._exporter = OTLPSpanExporter(endpoint=self.endpoint, timeout=timeout_of(timeout))
        name = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE
        self._resource = Resource.create({"service.name": name})

    def send(self, spans: Sequence[SpanRecord]) -> None:
        if not spans:
            return
        result = self._exporter.export([self._readable(s) for s in spans])
        if result is not SpanExportResult.SUCCESS:
            raise ExportError(f"the OTLP collector at {self.endpoint} did not take the spans")

    def close(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]

    def _readable(self, s: SpanRecord) -> ReadableSpan:
        def ctx(sid: int) -> SpanContext:
            return SpanContext(
                s.trace_id, sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )

        status = Status(StatusCode.ERROR, s.error) if s.error else Status(StatusCode.OK)
        return ReadableSpan(
            name=s.name,
            context=ctx(s.span_id),
            parent=ctx(s.parent_id) if s.parent_id is not None else None,
            resource=self._resource,
            attributes=s.attributes,
            events=[Event(name, attrs, _nanos(at)) for name, at, attrs in s.events],
            kind=SpanKind.CLIENT
            if s.name.startswith(("chat ", "embeddings "))
            else SpanKind.INTERNAL,
            status=status,
            start_time=_nanos(s.start),
            end_time=_nanos(s.end),
            instrumentation_scope=_SCOPE,
        )


def _nanos(at: float) -> int:
    return int(at * 1e9)
