"""Tables that fit the terminal: one line per row, whatever its width; a value too long
for its column is cut with an ellipsis rather than wrapped onto lines of its own.

Rich shrinks a table too wide by wrapping its cells, which turns a list of runs into a
block where no row can be read across. Here the widths are chosen first: columns give
way in the order asked (`give`, largest first), each down to its `floor`, and every
cell is one line of at most its column's width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: The space between two columns (a table has none at its edges).
GAP = 2


@dataclass(frozen=True)
class Col:
    title: str
    #: Columns with a larger `give` are cut first; 0 is never cut.
    give: int = 0
    #: Never cut narrower than this, nor than its title.
    floor: int = 8
    justify: Literal["left", "right"] = "left"


def fitted(columns: Sequence[Col], rows: Sequence[Sequence[str | Text]], width: int) -> Table:
    """A table of `rows` no wider than `width` (as far as the columns' floors allow).

    Narrower than the floors allow (`COLUMNS=20`), the table keeps its floors and is
    wider than `width`: Rich left alone would squeeze every column to a letter and an
    ellipsis, titles and run ids included. Print it with `crop=False`."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    widths = [
        max([cell_len(col.title), *(cell_len(row[i].plain) for row in cells)])
        for i, col in enumerate(columns)
    ]
    room = width - GAP * (len(columns) - 1)
    for i in sorted(range(len(columns)), key=lambda i: -columns[i].give):
        excess = sum(widths) - room
        if excess <= 0 or columns[i].give <= 0:
            break
        floor = max(columns[i].floor, cell_len(columns[i].title))  # titles are never cut
        widths[i] = max(min(widths[i], floor), widths[i] - excess)
    total = sum(widths) + GAP * (len(columns) - 1)
    table = Table(
        box=None, pad_edge=False, padding=(0, GAP // 2), width=total if total > width else None
    )
    for col, col_width in zip(columns, widths, strict=True):
        table.add_column(
            col.title, width=col_width, no_wrap=True, overflow="ellipsis", justify=col.justify
        )
    for row in cells:
        table.add_row(*row)
    return table


def console_for(width: int) -> Console:
    """A console as wide as the terminal, or as `COLUMNS` says; printing elsewhere (a
    pipe, a file) with no `COLUMNS`, one wide enough for `width`: nothing to fit, so
    nothing is cut."""
    console = Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(width=max(width, console.width))


def table_width(columns: Sequence[Col], rows: Sequence[Sequence[str]]) -> int:
    """How wide `rows` would be with nothing cut."""
    widths = [
        max([cell_len(col.title), *(cell_len(row[i]) for row in rows)])
        for i, col in enumerate(columns)
    ]
    return sum(widths) + GAP * (len(columns) - 1)


def short_time(value: object) -> str:
    """An ISO 8601 time as `2024-05-01 12:34:56` in UTC; anything else as it is."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: object) -> str | None:
    """`seconds` since something, in words: "4 s ago", "3 min ago", "2 h ago"."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return None
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds // 3600:.0f} h ago"
