from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from backend.bus.streams import ALERT_MEMORY_PCT
from backend.health import human_bytes
from console.data.snapshot import Snapshot
from console.screens.base import BaseScreen
from widgets.health import HealthTile


class OverviewScreen(BaseScreen):
    AUTO_FOCUS = "#health-scroll"  # scrolls with the arrow keys when it does not fit (80x24)
    TITLE = "overview"

    def compose_body(self) -> ComposeResult:
        from backend.migration import inventory

        inv = inventory.load()
        with Horizontal(id="overview"):
            # scrolls when the tiles do not all fit (80x24): the names are never cut instead
            with VerticalScroll(id="health-scroll"), Grid(id="health-grid"):
                for s in sorted(inv.services, key=lambda s: (s.priority, s.name)):
                    yield HealthTile(id=f"tile-{s.name}")
                for i in inv.infra:
                    yield HealthTile(id=f"tile-infra-{i.name}", classes="infra")
            with Vertical(id="overview-side"):
                yield Static(id="progress", classes="panel")
                yield Static(id="open-gates", classes="panel")
                yield Static(id="alerts", classes="panel")

    def render_snapshot(self, snap: Snapshot) -> None:
        for h in snap.health:
            self.query_one(f"#tile-{h.service}", HealthTile).show_state(
                f"P{h.priority} {h.service}",
                h.state,
                [
                    f"L{h.legacy} T{h.target}  {h.rate:,.0f}/s" + (f"  p {h.partitions}" if h.partitions else ""),
                    f"lag {h.lag} pend {h.pending} dlq {h.dlq}",
                ],
            )
        for name, state in snap.infra:
            lines, shown = [state], "ok" if state in ("ok", "stand-in") else "down"
            if name == "redis" and snap.redis_max:  # memory against maxmemory, amber from the alert level
                pct = 100 * snap.redis_used / snap.redis_max
                lines.append(f"mem {human_bytes(snap.redis_used)}/{human_bytes(snap.redis_max)} {pct:.0f}%")
                shown = "degraded" if shown == "ok" and pct >= ALERT_MEMORY_PCT else shown
            self.query_one(f"#tile-infra-{name}", HealthTile).show_state(name, shown, lines)
        lines = ["[b]Migration progress[/b]"]
        for p, (done, total) in sorted(snap.progress.items()):
            bar = "█" * done + "░" * (total - done)
            lines.append(f"P{p} {bar} {done}/{total}")
        lines += tracker_lines(snap.tracker)
        self.set_text("#progress", "\n".join(lines))
        self.set_text("#open-gates", "[b]Open gates[/b]\n" + ("\n".join(snap.open_gates) or "none"))
        self.set_text("#alerts", "[b]Recent alerts[/b]\n" + ("\n".join(snap.alerts[-8:]) or "none"))


def tracker_lines(fig: dict[str, Any]) -> list[str]:
    """The plan's figures, narrow enough for the side panel."""
    if not fig:
        return []
    ph, p2, tm, sv, fl = fig["phases"], fig["phase2"], fig["time"], fig["services"], fig["fleet"]
    mvp, full = fig["mvp"], fig["full"]
    return [
        "",
        f"[b]Plan[/b] overall {fig['overall_pct']}%",
        f"phases {ph['complete']}/{ph['total']} · Phase 2 {p2['complete']}/{p2['tasks']} tasks",
        f"MVP  {mvp['migrated']}/{mvp['services']} svc · {tm['remaining_mvp']:g}/{mvp['hours_estimated']:g} h left",
        f"full {full['migrated']}/{full['services']} svc · {tm['remaining_full']:g}/{full['hours_estimated']:g} h left",
        f"invested {tm['invested']:g} h",
        f"migrated {sv['migrated']} · moving {sv['in_progress']}",
        f"ready {sv['ready']} · pending {sv['pending']}",
        f"legacy healthy {fl['legacy_healthy']}/{fl['services']} (plan {fl['surveyed_healthy']})",
    ]
