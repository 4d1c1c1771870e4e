"""A one-line sparkline with an SLA line: values above the SLA are drawn in the error colour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BARS = "▁▂▃▄▅▆▇█"


class SlaSparkline(Widget):
    DEFAULT_CSS = """
    SlaSparkline { height: 1; width: 1fr; }
    """

    values: reactive[tuple[float, ...]] = reactive((), init=False)

    def __init__(self, sla: float | None = None, unit: str = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.sla = sla
        self.unit = unit

    def set_values(self, values: Sequence[float]) -> None:
        self.values = tuple(values)

    def render(self) -> Text:
        vals = self.values[-max(1, self.size.width - 16) :]
        if not vals:
            return Text("no data yet", style="dim")
        if self.sla is not None:  # latency: from zero, so the SLA line means something
            lo, hi = 0.0, max(max(vals), self.sla)
        else:  # prices: the range seen
            lo, hi = min(vals), max(vals)
        span = (hi - lo) or 1.0
        out = Text()
        for v in vals:
            ch = BARS[max(0, min(len(BARS) - 1, int((v - lo) / span * (len(BARS) - 1))))]
            out.append(ch, style="bold red" if self.sla is not None and v > self.sla else "green")
        if self.sla is not None:
            out.append(f"  SLA {self.sla:g}{self.unit}", style="yellow")
        return out
