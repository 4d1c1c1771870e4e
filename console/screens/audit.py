from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from console.data.snapshot import Snapshot
from console.screens.base import BaseScreen

LEGEND = (
    "signed: ✓ who signed, valid · ✗ invalid, why (counts for nothing) · unsigned (counts for nothing)\n"
    "chain: #n = entry n of the hash-chained gate log (ops.gates) · — = a migration move or kill switch "
    "toggle, signed one by one, not chained (anchored)"
)


class AuditScreen(BaseScreen):
    TITLE = "audit"
    AUTO_FOCUS = "#log"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="audit"):
            yield Static(id="verdict", classes="panel-title")
            yield Static(LEGEND, id="legend")
            yield DataTable(id="log", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#log", DataTable).add_columns(
            "chain", "time", "gate / service", "kind", "what", "operator", "signed", "reason / note"
        )
        super().on_mount()

    def render_snapshot(self, snap: Snapshot) -> None:
        ok = snap.audit_verdict.startswith("chain OK") and "ANCHOR" not in snap.audit_verdict
        self.set_text("#verdict", f"[{'green' if ok else 'red'}]{snap.audit_verdict or 'not verified'}[/]")
        t = self.query_one("#log", DataTable)
        rows = [r for r in snap.audit if self.matches(*r)]
        if t.row_count != len(rows):
            t.clear()
            for row in reversed(rows):
                # a row is (time, gate/service, kind, what, operator, reason, signed, chain): shown
                # with the chain first and the signature before the reason, so both stay in view
                cells = (*row[:6], *[""] * (6 - len(row[:6])))
                signed = row[6] if len(row) > 6 and row[6] else "unsigned"  # never blank
                t.add_row(row[7] if len(row) > 7 else "?", *cells[:5], signed, cells[5])
