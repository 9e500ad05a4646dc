"""Tables that fit where they are read: never a cut number or header, short headers first,
then optional columns, then `name: value` lines; whole when the output is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from coop.tables import UNBOUNDED, Col, fit, wide_console

COLS = [
    Col("instance"),
    Col("completed", short="done"),
    Col("model calls", short="calls"),
    Col("cost"),
    Col("last seen", short="seen", optional=True),
    Col("can use", optional=True, text=True),
]
ROWS = [
    ["vm:0", "1024", "3072", "$12.3456", "0s ago", "python (bubblewrap), workspace_read"],
    ["vm:1", "998", "2994", "$11.0001", "2s ago", "python (bubblewrap), workspace_read"],
]


def shown(table: object, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(table)
    return out.getvalue()


def test_a_wide_terminal_gets_every_column_with_its_full_header() -> None:
    text = shown(fit("instances", COLS, ROWS, 200), 200)
    for word in ("instance", "completed", "model calls", "last seen", "can use", "$12.3456"):
        assert word in text
    assert "…" not in text


def test_a_narrow_terminal_gets_short_headers_then_loses_optional_columns_never_numbers() -> None:
    text = shown(fit("instances", COLS, ROWS, 60), 60)
    assert "done" in text and "calls" in text  # short headers
    assert "can use" not in text  # the last optional column went first
    assert all(n in text for n in ("1024", "3072", "$12.3456", "$11.0001"))
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60


def test_one_row_that_cannot_fit_becomes_name_value_lines() -> None:
    text = shown(fit("budget", COLS[:4], [ROWS[0][:4]], 20), 20)
    assert "completed: 1024" in text and "cost: $12.3456" in text


def test_output_that_is_not_a_terminal_is_never_squeezed() -> None:
    console = wide_console(io.StringIO())
    assert console.width == UNBOUNDED
    console.print(fit("instances", COLS, ROWS, console.width))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "model calls" in text and "$12.3456" in text and "…" not in text
