"""A latency histogram: one horizontal bar per bucket, buckets past the SLA in the error colour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget


class LatencyHistogram(Widget):
    DEFAULT_CSS = """
    LatencyHistogram { height: auto; min-height: 3; width: 1fr; }
    """

    buckets: reactive[tuple[tuple[float, int], ...]] = reactive((), init=False, layout=True)

    def __init__(self, sla_ms: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.sla_ms = sla_ms

    def set_buckets(self, buckets: Sequence[tuple[float, int]]) -> None:
        """(upper bound in ms, count) per bucket."""
        self.buckets = tuple(buckets)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self.buckets))

    def render(self) -> Text:
        if not self.buckets:
            return Text("no latency samples yet", style="dim")
        peak = max(c for _, c in self.buckets) or 1
        width = max(10, self.size.width - 22)
        out = Text()
        for i, (upper, count) in enumerate(self.buckets):
            bar = "█" * max(0, round(count / peak * width))
            late = self.sla_ms is not None and upper > self.sla_ms
            if upper < 1e9:
                label = f"≤{upper:>7.3f} ms "
            else:
                label = f"> {self.buckets[i - 1][0]:>6.3f} ms " if i else "all        "
            out.append(label, style="dim")
            out.append(bar, style="red" if late else "green")
            out.append(f" {count}")
            if i < len(self.buckets) - 1:
                out.append("\n")
        return out
