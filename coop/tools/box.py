"""The tools one task may use, and the one place a tool call is run.

Whatever the model asks — a tool that does not exist, arguments that are not JSON or do not
fit the tool's schema — and whatever the tool does — raise, run past its time, answer
megabytes, or print a secret — the step loop gets a `ToolOutput` back, never an exception:
the model reads what went wrong and can try again, and the worker keeps running.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from coop.secrets import scrub
from coop.text import one_line
from coop.tools import Invocation, ToolOutput, ToolProvider, ToolSpec

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 16_000
"""Most of a tool's output the model is shown; the rest is cut, and the cut is said."""
TOOL_TIMEOUT = 60.0
"""Seconds a tool call may take before the model is told it timed out."""


@dataclass(frozen=True)
class Ran:
    """One tool call, as the tape records it."""

    tool: str
    provider: str  # the capability it belongs to ("" for an unknown tool)
    output: ToolOutput
    latency: float
    size: int  # bytes (UTF-8) the tool answered, before any cut


class Toolbox:
    """A worker's tools (its node's providers); `for_task` adds those bound to one task."""

    def __init__(self, providers: Sequence[ToolProvider], timeout: float = TOOL_TIMEOUT) -> None:
        self.timeout = timeout
        self.providers = list(providers)
        self._by_tool: dict[str, tuple[ToolProvider, ToolSpec]] = {}
        self._validators: dict[
            str, Any
        ] = {}  # a tool's compiled schema: checked once, not per call
        for provider in providers:
            for spec in provider.tools():
                self._by_tool.setdefault(spec.name, (provider, spec))

    def capabilities(self) -> list[str]:
        """The capability names these tools give (a provider's name)."""
        return sorted({p.name for p, _ in self._by_tool.values()})

    def __bool__(self) -> bool:
        return bool(self._by_tool)

    def specs(self) -> list[ToolSpec]:
        return [spec for _, spec in self._by_tool.values()]

    def spec(self, name: str) -> ToolSpec | None:
        found = self._by_tool.get(name)
        return found[1] if found else None

    def run(self, name: str, arguments: str, at: Invocation) -> Ran:
        """Run the model's call of `name` with its raw JSON `arguments`."""
        began = time.monotonic()
        found = self._by_tool.get(name)
        if found is None:
            known = ", ".join(sorted(self._by_tool)) or "none"
            out = ToolOutput.error(f"there is no tool {name!r}; the tools are: {known}")
            return Ran(name, "", out, 0.0, 0)
        provider, spec = found
        if spec.timeout:
            at = replace(at, timeout=spec.timeout)
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("the arguments must be a JSON object")
            error = jsonschema.exceptions.best_match(self._validator(spec).iter_errors(args))
            if error is not None:
                raise error
        except (ValueError, jsonschema.ValidationError) as exc:
            reason = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            out = ToolOutput.error(f"bad arguments for {name}: {one_line(reason, 300)}")
            return Ran(name, provider.name, out, 0.0, 0)
        out = self._call(provider, name, args, at)
        size = len(out.text.encode("utf-8"))
        text = scrub(out.text)
        if len(text) > MAX_OUTPUT_CHARS:
            whole = f"{len(out.text):,} characters in all"
            text = text[:MAX_OUTPUT_CHARS] + f"\n[output cut: {whole}]"
        return Ran(name, provider.name, ToolOutput(out.ok, text), time.monotonic() - began, size)

    def _validator(self, spec: ToolSpec) -> Any:
        """The validator of a tool's arguments, made on its first call (as jsonschema.validate
        would make it on every call: checking the schema alone took ~1 ms)."""
        found = self._validators.get(spec.name)
        if found is None:
            kind = jsonschema.validators.validator_for(spec.parameters)
            kind.check_schema(spec.parameters)
            found = self._validators[spec.name] = kind(spec.parameters)
        return found

    def _call(
        self, provider: ToolProvider, name: str, args: dict[str, Any], at: Invocation
    ) -> ToolOutput:
        """The provider's call, bounded by the timeout even when the provider itself is not:
        a call past it is abandoned on its thread and reported as timed out."""
        box: list[ToolOutput] = []

        def call() -> None:
            try:
                box.append(provider.call(name, args, at))
            except Exception as exc:  # a tool that raises is an output, not a crash
                box.append(ToolOutput.error(f"{name} failed: {type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=call, name=f"tool-{name}", daemon=True)
        thread.start()
        thread.join(at.timeout + 1.0)
        if not box:
            log.warning("tool %s did not answer within %.0fs", name, at.timeout)
            return ToolOutput.error(f"{name} did not answer within {at.timeout:g}s")
        return box[0]

    def close(self) -> None:
        for provider in {id(p): p for p, _ in self._by_tool.values()}.values():
            provider.close()
