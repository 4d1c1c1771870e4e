"""Trends: the figures an operator watches, as plots over the last minutes (w: the window)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static

from backend.bus.streams import ALERT_MEMORY_PCT
from console.data.series import WINDOWS_S
from console.data.snapshot import Snapshot
from console.screens.base import BaseScreen
from widgets.timeplot import TimePlot, window_label

SLA_MS = 1.5
MOST_LINES = 6  # lines per plot: the largest by their newest value


def pick(series: dict[str, list[tuple[float, float]]], prefix: str, most: int = MOST_LINES) -> dict[str, list]:
    """The series named `prefix` + a name, by that name, the `most` largest (by newest value) only."""
    found = {k[len(prefix) :]: v for k, v in series.items() if k.startswith(prefix) and v}
    keep = sorted(found, key=lambda k: -abs(found[k][-1][1]))[:most]
    return {k: found[k] for k in sorted(keep)}


def named(series: dict[str, list[tuple[float, float]]], **names: str) -> dict[str, list]:
    """Series by their label, from `label=series name` (those with no points left out)."""
    return {label: series[key] for label, key in names.items() if series.get(key)}


class TrendsScreen(BaseScreen):
    AUTO_FOCUS = "#trends"  # scrolls with the arrow keys when it does not fit (80x24)
    TITLE = "trends"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("w", "window", "Window", id="trends.window")]

    def compose_body(self) -> ComposeResult:
        yield Static(id="window", classes="panel-title")
        with VerticalScroll(id="trends"), Grid(id="plots"):
            yield TimePlot(
                "risk round trip, ms", unit=" ms", threshold=SLA_MS, threshold_label="SLA 1.5 ms", id="p-risk"
            )
            yield TimePlot("OMS intake to accepted, ms", unit=" ms", id="p-oms")
            yield TimePlot("ticks/s per symbol", id="p-ticks")
            yield TimePlot("PnL per account", id="p-pnl")
            yield TimePlot("exposure per account", id="p-exposure")
            yield TimePlot("Redis memory, MiB", unit=" MiB", id="p-redis")
            yield TimePlot("stream lag per service, entries", id="p-lag")

    def render_snapshot(self, snap: Snapshot) -> None:
        window = self.tapp.plot_window
        self.set_text(
            "#window",
            f"last {window_label(window)}  (w: {' / '.join(window_label(w) for w in WINDOWS_S)})",
        )
        s = snap.series
        plots = {
            "#p-risk": named(s, P50="risk_rt_p50", P99="risk_rt_p99"),
            "#p-oms": named(s, P50="oms_p50", P99="oms_p99"),
            "#p-ticks": pick(s, "ticks:"),
            "#p-pnl": pick(s, "pnl:"),
            "#p-exposure": pick(s, "exposure:"),
            "#p-redis": named(s, used="redis_mb"),
            "#p-lag": pick(s, "lag:"),
        }
        redis = self.query_one("#p-redis", TimePlot)
        if snap.redis_max:
            redis.threshold = snap.redis_max / 2**20 * ALERT_MEMORY_PCT / 100
            redis.threshold_label = f"alert at {ALERT_MEMORY_PCT:g}% of maxmemory"
        for sel, lines in plots.items():
            plot = self.query_one(sel, TimePlot)
            plot.set_window(window)
            plot.set_series(lines, snap.now)

    def action_window(self) -> None:
        app = self.tapp
        i = WINDOWS_S.index(app.plot_window) if app.plot_window in WINDOWS_S else 0
        app.plot_window = WINDOWS_S[(i + 1) % len(WINDOWS_S)]
        if app.snapshot is not None:
            self.show(app.snapshot)
