"""A time-series plot (plotext, through textual-plotext): named lines of (time, value) points over
the last `window` seconds, an optional threshold line (an SLA), the x axis in minutes before now.
It takes plain values and draws again only when they changed."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.timer import Timer
from textual_plotext import PlotextPlot

SETTLE_S = 0.25  # a live plot is drawn this long after its last new values, if its screen is in view
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
        background: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        # background: new values are drawn in a worker thread and shown when drawn (a live console:
        # plotext takes a few ms a plot, which a key press must not wait for); otherwise in render()
        self.background = background
        self._text: Text | None = None  # the newest drawing, and the size it was drawn at
        self._text_size: tuple[int, int] = (0, 0)
        self._seq = 0
        self._lock = threading.Lock()
        self._pending: Timer | None = None  # a drawing waiting for the screen to settle
        self.title = title
        self.unit = unit
        self.threshold = threshold
        self.threshold_label = threshold_label
        self.window = window
        self._series: dict[str, list[tuple[float, float]]] = {}
        self._now = 0.0
        self._drawn: tuple[Any, ...] | None = None

    def set_series(self, series: Mapping[str, Points], now: float) -> None:
        """Lines by name (drawn in this order, each its own colour), and the time that is "now";
        the points are kept as given (the caller hands over its lists)."""
        # drawn again at most once a second (the figures come a point a second): a value that
        # changes within its second shows with the next
        key = (
            int(now),
            self.window,
            tuple((n, len(p), p[-1][0] if len(p) else None) for n, p in series.items()),
        )
        if key == self._drawn:
            return
        self._drawn = key
        self._series = dict(series)  # type: ignore[arg-type]  # (time, value) pairs, read as they are
        self._now = now
        self._redraw()

    def set_window(self, seconds: float) -> None:
        if seconds != self.window:
            self.window = seconds
            self._drawn = None
            self._redraw()

    def _redraw(self) -> None:
        self._seq += 1
        if not (self.background and self._text is not None and self.is_mounted):
            self._text = None  # drawn by the next render()
            self.refresh()
            return
        # after a pause, on the screen in view only: a key press that brings the screen up is
        # answered with the drawing in hand, and one that moves on finds no drawing in its way
        if self._pending is not None:
            self._pending.stop()
        self._pending = self.set_timer(SETTLE_S, self._start_drawing)

    def _start_drawing(self) -> None:
        self._pending = None
        if not (self.is_attached and self.screen.is_current):
            self._drawn = None  # drawn when its screen shows it again
            return
        width, height = self.size
        seq, series, now, window = self._seq, self._series, self._now, self.window
        self.run_worker(
            lambda: self._draw_in_thread(seq, (width, height), series, now, window),
            thread=True,
            group=f"plot-{id(self)}",
            exclusive=True,
            exit_on_error=False,
            description="draw a plot",
        )

    def _draw_in_thread(
        self, seq: int, size: tuple[int, int], series: dict[str, list[tuple[float, float]]], now: float, window: float
    ) -> None:
        text = self._draw(size, series, now, window)
        self.app.call_from_thread(self._drawn_in_thread, seq, text, size)

    def _drawn_in_thread(self, seq: int, text: Text, size: tuple[int, int]) -> None:
        if seq == self._seq:  # an older drawing finishing late is not shown over a newer one
            self._text, self._text_size = text, size
            self.refresh()

    def render(self) -> Any:
        size = (self.size.width, self.size.height)
        if self._text is None or self._text_size != size:
            self._text, self._text_size = self._draw(size, self._series, self._now, self.window), size
        return self._text

    def _draw(
        self, size: tuple[int, int], series: dict[str, list[tuple[float, float]]], now: float, window: float
    ) -> Text:
        """The plot as text, `size` cells (plotext, through textual-plotext's Plot); one drawing at
        a time (the worker's and render()'s share the plotext figure)."""
        with self._lock:
            return self._draw_locked(size, series, now, window)

    def _draw_locked(
        self, size: tuple[int, int], series: dict[str, list[tuple[float, float]]], now: float, window: float
    ) -> Text:
        width_cells, height_cells = size
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        start = now - window
        width = max(10, width_cells - 10)
        drawn = 0
        if self.threshold is not None:  # first, so the lines are drawn over it; named in the legend
            label = self.threshold_label or f"limit {self.threshold:g}{self.unit}"
            plt.plot([-window, 0], [self.threshold, self.threshold], label=label, color="red", marker="─")
        for i, (name, points) in enumerate(series.items()):
            xs, ys = bucketed(points, start, now, width)
            if not xs:
                continue
            label = f"{name} {figure(ys[-1])}{self.unit}"
            plt.plot(xs, ys, label=label, color=COLORS[i % len(COLORS)], marker="braille")
            drawn += 1
        plt.xlim(-window, 0)
        parts = 4 if window < 300 else 5  # -60s -45s ..., -5m -4m ..., -15m -12m ...
        ticks = [-window * (parts - i) / parts for i in range(parts + 1)]
        plt.xticks(ticks, [_ago(t) for t in ticks])
        if self.threshold is not None:  # from zero, with the threshold in view, so the line means something
            top = max([self.threshold, *(v for pts in series.values() for t, v in pts if t >= start)])
            plt.ylim(0, top * 1.1)
        title = self.title
        if not drawn:
            title += "  · no data in this window"
        plt.title(title)
        plt.plotsize(width_cells, height_cells)
        plt._set_size(width_cells, height_cells)  # as PlotextPlot.render does (textual-plotext issue 5)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        return Text.from_ansi(plt.build())


def figure(v: float) -> str:
    """A value for a legend: whole thousands with separators, small values to four digits."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _ago(seconds_before: float) -> str:
    s = -seconds_before
    if s == 0:
        return "now"
    return f"-{s / 60:.3g}m" if s >= 60 and s % 60 == 0 else f"-{s:.0f}s"
