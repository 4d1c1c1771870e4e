from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from console.data.snapshot import Snapshot
from console.screens.base import BaseScreen


class AuditScreen(BaseScreen):
    TITLE = "audit"
    AUTO_FOCUS = "#log"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="audit"):
            yield Static(id="verdict", classes="panel-title")
            yield DataTable(id="log", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#log", DataTable).add_columns(
            "time", "gate / service", "kind", "what", "operator", "reason / note"
        )
        super().on_mount()

    def render_snapshot(self, snap: Snapshot) -> None:
        ok = snap.audit_verdict.startswith("chain OK")
        self.set_text("#verdict", f"[{'green' if ok else 'red'}]{snap.audit_verdict or 'not verified'}[/]")
        t = self.query_one("#log", DataTable)
        rows = [r for r in snap.audit if self.matches(*r)]
        if t.row_count != len(rows):
            t.clear()
            for row in reversed(rows):
                t.add_row(*row)
