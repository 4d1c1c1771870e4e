"""A time-series plot (plotext, through textual-plotext): named lines of (time, value) points over
the last `window` seconds, an optional threshold line (an SLA), the x axis in minutes before now.
It takes plain values and draws again only when they changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual_plotext import PlotextPlot

COLORS = ("cyan", "orange", "green", "magenta", "blue", "yellow", "white", "gray")
Points = Sequence[tuple[float, float]] | Sequence[Sequence[float]]


def window_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def bucketed(points: Points, start: float, now: float, buckets: int) -> tuple[list[float], list[float]]:
    """The points inside [start, now] as seconds before `now`, at most `buckets` of them: the
    largest value in each slice of time (a spike stays in view however many points there are)."""
    width = (now - start) / max(1, buckets)
    xs: list[float] = []
    ys: list[float] = []
    last_slot = None
    for t, v in points:
        if t < start or t > now:
            continue
        slot = int((t - start) / width) if width > 0 else 0
        if slot == last_slot:
            if v > ys[-1]:
                ys[-1] = v
            continue
        last_slot = slot
        xs.append(t - now)
        ys.append(v)
    return xs, ys


class TimePlot(PlotextPlot):
    """Lines over time. `set_series({name: [(t, v), ...]}, now)`; `window` is how far back it shows."""

    DEFAULT_CSS = """
    TimePlot { height: 1fr; min-height: 6; width: 1fr; }
    """

    def __init__(
        self,
        title: str = "",
        *,
        unit: str = "",
        threshold: float | None = None,
        threshold_label: str = "",
        window: float = 300.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.title = title
        self.unit = unit
        self.threshold = threshold
        self.threshold_label = threshold_label
        self.window = window
        self._series: dict[str, list[tuple[float, float]]] = {}
        self._now = 0.0
        self._drawn: tuple[Any, ...] | None = None

    def set_series(self, series: Mapping[str, Points], now: float) -> None:
        """Lines by name (drawn in this order, each its own colour), and the time that is "now"."""
        key = (
            now,
            self.window,
            tuple((n, len(p), tuple(p[-1]) if len(p) else ()) for n, p in series.items()),
        )
        if key == self._drawn:
            return
        self._drawn = key
        self._series = {n: [(float(t), float(v)) for t, v in p] for n, p in series.items()}
        self._now = now
        self.refresh()

    def set_window(self, seconds: float) -> None:
        if seconds != self.window:
            self.window = seconds
            self._drawn = None
            self.refresh()

    def render(self) -> Any:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        start = self._now - self.window
        width = max(10, self.size.width - 10)
        drawn = 0
        if self.threshold is not None:  # first, so the lines are drawn over it; named in the legend
            label = self.threshold_label or f"limit {self.threshold:g}{self.unit}"
            plt.plot([-self.window, 0], [self.threshold, self.threshold], label=label, color="red", marker="─")
        for i, (name, points) in enumerate(self._series.items()):
            xs, ys = bucketed(points, start, self._now, width)
            if not xs:
                continue
            label = f"{name} {figure(ys[-1])}{self.unit}"
            plt.plot(xs, ys, label=label, color=COLORS[i % len(COLORS)], marker="braille")
            drawn += 1
        plt.xlim(-self.window, 0)
        parts = 4 if self.window < 300 else 5  # -60s -45s ..., -5m -4m ..., -15m -12m ...
        ticks = [-self.window * (parts - i) / parts for i in range(parts + 1)]
        plt.xticks(ticks, [_ago(t) for t in ticks])
        if self.threshold is not None:  # from zero, with the threshold in view, so the line means something
            top = max([self.threshold, *(v for pts in self._series.values() for t, v in pts if t >= start)])
            plt.ylim(0, top * 1.1)
        title = self.title
        if not drawn:
            title += "  · no data in this window"
        plt.title(title)
        return super().render()


def figure(v: float) -> str:
    """A value for a legend: whole thousands with separators, small values to four digits."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _ago(seconds_before: float) -> str:
    s = -seconds_before
    if s == 0:
        return "now"
    return f"-{s / 60:.3g}m" if s >= 60 and s % 60 == 0 else f"-{s:.0f}s"
