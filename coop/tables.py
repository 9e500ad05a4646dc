"""Tables that fit where they are read: a terminal of any width, a log file, a Ray job's log.

A number or a header is never cut. Where a table does not fit, it gives up in a fixed order:
first the short headers (`done` for `completed`), then the columns marked optional, last to
first; a one-row table that still does not fit is shown as `name: value` lines. Output that is
not a terminal has no width to fit (see `wide_console`): every table there is whole.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

UNBOUNDED = 100_000
"""The width of output that is not a terminal: lines as long as they need to be."""


@dataclass(frozen=True)
class Col:
    name: str
    short: str = ""  # the header when the full one does not fit
    optional: bool = False  # may be left out on a narrow terminal
    text: bool = False  # free text: it may wrap (numbers and names never do)


def wide_console(file: TextIO | None = None) -> Console:
    """A console on `file` (stdout): a terminal's width, else unbounded."""
    stream = file or sys.stdout
    return Console(file=file, width=None if stream.isatty() else UNBOUNDED)


def fit(
    title: str, cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int
) -> RenderableType:
    """The table of `rows` under `cols`, made to fit `width` (see the module)."""
    keep = list(range(len(cols)))
    for short in (False, True):
        table = _table(title, cols, rows, keep, short)
        if _width(table) <= width:
            return table
    optional = [i for i in keep if cols[i].optional]
    while optional:
        keep.remove(optional.pop())
        table = _table(title, cols, rows, keep, True)
        if _width(table) <= width:
            return table
    if len(rows) == 1:
        lines = [f"{c.name}: {v}" for c, v in zip(cols, rows[0], strict=True)]
        return Text(f"{title}\n" + "\n".join(f"  {line}" for line in lines))
    return _table(title, cols, rows, keep, True)  # narrower than its numbers: it wraps


def _table(
    title: str, cols: Sequence[Col], rows: Sequence[Sequence[str]], keep: list[int], short: bool
) -> Table:
    table = Table(title=title)
    for i in keep:
        col = cols[i]
        table.add_column(
            (col.short or col.name) if short else col.name,
            no_wrap=not col.text,
            overflow="fold" if col.text else "ellipsis",
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table


def _width(table: Table) -> int:
    console = Console(width=UNBOUNDED)
    return Measurement.get(console, console.options, table).maximum
