from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console.actions import Decision
from console.data.snapshot import Snapshot
from console.messages import RequestGateApprove, RequestGateAttest, RequestGateDecide, RequestGateRun
from console.modals import ReasonModal
from console.screens.base import BaseScreen, changes
from widgets.checklist import Checklist


class GatesScreen(BaseScreen):
    TITLE = "gates"
    AUTO_FOCUS = "#gate-list"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_check", "Run check", id="gates.run"),
        Binding("R", "run_all", "Run all", id="gates.run_all"),
        Binding("t", "attest", "Attest", id="gates.attest"),
        Binding("a", "approve", "Approve", id="gates.approve"),
        Binding("d", "decide('proceed')", "Proceed", id="gates.proceed"),
        Binding("f", "decide('fix')", "Fix", id="gates.fix"),
        Binding("x", "decide('stop')", "Stop", id="gates.stop"),
    ]

    _rows: dict[str, tuple[str, ...]]

    def compose_body(self) -> ComposeResult:
        self._rows = {}
        with Horizontal(id="gates"):
            yield DataTable(id="gate-list", cursor_type="row")
            with Vertical(id="gate-detail"):
                yield Static(id="gate-title", classes="panel-title")
                yield Checklist(id="checklist")
                yield Static(id="approvals", classes="panel")

    def on_mount(self) -> None:
        self.query_one("#gate-list", DataTable).add_columns("gate", "state", "approvals")
        super().on_mount()

    def gate_id(self) -> str | None:
        t = self.query_one("#gate-list", DataTable)
        if not t.row_count:
            return None
        return t.coordinate_to_cell_key(Coordinate(t.cursor_row, 0)).row_key.value

    def render_snapshot(self, snap: Snapshot) -> None:
        t = self.query_one("#gate-list", DataTable)
        for g in snap.gates:
            decided = g.status in ("proceed", "fix", "stop")  # its approvals were used by the decision
            cells = (g.id + (" ★" if g.critical else ""), g.status, "decided" if decided else g.approvals)
            old = self._rows.get(g.id)
            if old is None:
                t.add_row(*cells, key=g.id)
            elif old != cells:  # a table redraws all its rows on any change: change only what did
                for i, (v, was) in enumerate(zip(cells, old, strict=True)):
                    if v != was:
                        t.update_cell_at(Coordinate(t.get_row_index(g.id), i), v)
            self._rows[g.id] = cells
        self.show_gate()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "gate-list":
            self.show_gate()

    def show_gate(self) -> None:
        snap = self.tapp.snapshot
        gid = self.gate_id()
        g = next((g for g in snap.gates if g.id == gid), None) if snap else None
        if g is None:
            return
        self.set_text("#gate-title", f"[b]{g.id}[/b] {g.title} — {g.status}")
        self.query_one(Checklist).set_checks(g.checks)
        if g.status in ("proceed", "fix", "stop"):
            text = f"decided: {g.status} (its approvals went into the decision; the audit screen shows who and why)"
        else:
            text = f"approvals {g.approvals}" + (f" · still needed: {'; '.join(g.needs)}" if g.needs else "")
        self.set_text("#approvals", text)

    def select(self, gate_id: str) -> None:
        """Select a gate (the command palette)."""
        t = self.query_one("#gate-list", DataTable)
        if gate_id in t.rows:
            t.move_cursor(row=t.get_row_index(gate_id))
            t.focus()

    def check_id(self) -> str | None:
        c = self.query_one(Checklist)
        if not c.row_count:
            return None
        return c.coordinate_to_cell_key(Coordinate(c.cursor_row, 0)).row_key.value

    @changes
    def action_run_check(self) -> None:
        gid, cid = self.gate_id(), self.check_id()
        if gid and cid:
            self.post_message(RequestGateRun(gid, cid))

    @changes
    def action_run_all(self) -> None:
        gid = self.gate_id()
        if gid:
            self.post_message(RequestGateRun(gid, None))

    @changes
    def action_attest(self) -> None:
        gid, cid = self.gate_id(), self.check_id()
        if not (gid and cid):
            return

        def done(note: str | None) -> None:
            if note:
                self.post_message(RequestGateAttest(gid, cid, note))

        self.app.push_screen(ReasonModal(f"Attest {gid}/{cid}", placeholder="what you checked"), done)

    @changes
    def action_approve(self) -> None:
        gid = self.gate_id()
        if not gid:
            return

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestGateApprove(gid, reason))

        self.app.push_screen(ReasonModal(f"Approve gate {gid}", confirm=gid), done)

    @changes
    def action_decide(self, decision: Decision) -> None:
        gid = self.gate_id()
        if not gid:
            return

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestGateDecide(gid, decision, reason))

        self.app.push_screen(
            ReasonModal(f"Decide {decision.upper()} on {gid}", confirm=gid if decision == "proceed" else None), done
        )
