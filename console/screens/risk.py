from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from console.data.series import WINDOWS_S
from console.data.snapshot import Snapshot
from console.messages import RequestKillSwitch
from console.modals import ReasonModal
from console.screens.base import BaseScreen, changes
from console.screens.trends import named
from widgets.histogram import LatencyHistogram
from widgets.timeplot import TimePlot, window_label

SLA_MS = 1.5


class RiskScreen(BaseScreen):
    AUTO_FOCUS = "#risk"  # scrolls with the arrow keys when it does not fit (80x24)
    TITLE = "risk"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "kill_switch", "Kill switch", id="risk.kill"),
        Binding("w", "window", "Window", id="risk.window"),
    ]

    def compose_body(self) -> ComposeResult:
        # scrolls when it does not fit (80x24): the kill switch's state comes first, never cut
        with VerticalScroll(id="risk"):
            yield Static(id="pcts", classes="panel")
            yield Static(id="kill", classes="panel")
            yield TimePlot(
                "risk round trip P50/P99, ms",
                unit=" ms",
                threshold=SLA_MS,
                threshold_label="SLA 1.5 ms",
                background=self.tapp.live,
                id="series",
            )
            with Horizontal(id="risk-lower"):
                with Vertical():
                    yield Static("latency histogram", classes="panel-title")
                    yield LatencyHistogram(sla_ms=SLA_MS, id="hist")
                yield Static(id="denials", classes="panel")

    def render_snapshot(self, snap: Snapshot) -> None:
        p = snap.risk_pcts

        def fmt(k: str) -> str:
            v = p.get(k)
            if v is None:
                return f"{k} —"
            return f"{k} [{'red' if v > SLA_MS else 'green'}]{v:.3f} ms[/]"

        self.set_text(
            "#pcts",
            f"[b]Risk round trip[/b] (OMS -> risk -> OMS)   {fmt('p50')}   {fmt('p90')}   "
            f"{fmt('p99')}   SLA {SLA_MS} ms",
        )
        plot = self.query_one("#series", TimePlot)
        plot.set_window(self.tapp.plot_window)
        plot.title = f"risk round trip P50/P99, ms, last {window_label(self.tapp.plot_window)}"
        plot.set_series(named(snap.series, P50="risk_rt_p50", P99="risk_rt_p99"), snap.now)
        self.query_one("#hist", LatencyHistogram).set_buckets(snap.risk_hist)
        d = "\n".join(f"{k}: {v}" for k, v in sorted(snap.denials.items(), key=lambda kv: -kv[1])) or "none"
        self.set_text("#denials", f"[b]Denials by rule[/b]\n{d}")
        self.set_text(
            "#kill",
            "[b]Kill switch:[/b] "
            + ("[reverse red] ON [/] new orders blocked" if snap.kill_switch else "off")
            + "   (k: toggle, typed confirmation)",
        )

    @changes
    def action_kill_switch(self) -> None:
        on = not (self.tapp.snapshot.kill_switch if self.tapp.snapshot else False)
        word = "KILL" if on else "RESUME"

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestKillSwitch(on, reason))

        self.app.push_screen(ReasonModal(f"Turn the kill switch {'ON' if on else 'off'}", confirm=word), done)

    def action_window(self) -> None:
        app = self.tapp
        i = WINDOWS_S.index(app.plot_window) if app.plot_window in WINDOWS_S else 0
        app.plot_window = WINDOWS_S[(i + 1) % len(WINDOWS_S)]
        if app.snapshot is not None:
            self.show(app.snapshot)
