"""Plain-text tables for CLI output."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def render(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    print(render(headers, rows))
