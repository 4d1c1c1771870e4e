from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from console.data.snapshot import Snapshot
from console.messages import RequestKillSwitch
from console.modals import ReasonModal
from console.screens.base import BaseScreen, changes
from widgets.histogram import LatencyHistogram
from widgets.sparkline import SlaSparkline

SLA_MS = 1.5


class RiskScreen(BaseScreen):
    TITLE = "risk"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("k", "kill_switch", "Kill switch", id="risk.kill")]

    def compose_body(self) -> ComposeResult:
        with Vertical(id="risk"):
            yield Static(id="pcts", classes="panel")
            yield Static("risk round trip P99 over time", classes="panel-title")
            yield SlaSparkline(sla=SLA_MS, unit=" ms", id="series")
            with Horizontal():
                with Vertical():
                    yield Static("latency histogram", classes="panel-title")
                    yield LatencyHistogram(sla_ms=SLA_MS, id="hist")
                yield Static(id="denials", classes="panel")
            yield Static(id="kill", classes="panel")

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
        self.query_one("#series", SlaSparkline).set_values(snap.risk_series)
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
