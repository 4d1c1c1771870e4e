from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
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
                yield Static(id="check-detail", classes="panel")
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
        elif event.data_table.id == "checklist":
            self.show_check()

    def show_check(self) -> None:
        """The selected check in full: its outcome and every field of its evidence (a failed
        check shows why: the median, the limit, the rows it counted)."""
        snap = self.tapp.snapshot
        gid, cid = self.gate_id(), self.check_id()
        g = next((g for g in snap.gates if g.id == gid), None) if snap else None
        c = next((c for c in g.checks if c[0] == cid), None) if g else None
        if g is None or c is None:
            self.set_text("#check-detail", "no check selected")
            return
        check, kind, required, outcome, brief = c
        fields = g.details.get(check) or ([brief] if brief else [])
        colour = {"passed": "green", "failed": "red"}.get(outcome, "yellow")
        self.set_text(
            "#check-detail",
            f"[b]{check}[/b] ({kind}, {'required' if required else 'optional'}): [{colour}]{outcome}[/]\n"
            + ("\n".join(escape(f) for f in fields) if fields else "no evidence recorded"),
        )

    def show_gate(self) -> None:
        snap = self.tapp.snapshot
        gid = self.gate_id()
        g = next((g for g in snap.gates if g.id == gid), None) if snap else None
        if g is None:
            return
        self.set_text("#gate-title", f"[b]{g.id}[/b] {g.title} — {g.status}")
        self.query_one(Checklist).set_checks(g.checks)
        self.show_check()
        if g.status in ("proceed", "fix", "stop"):
            text = f"decided: {g.status} (its approvals went into the decision; the audit screen shows who and why)"
            if g.approved_by:
                text = f"decided: {g.status} · approvals it counted: {', '.join(g.approved_by)}"
        else:
            text = f"approvals {g.approvals}" + (f" · still needed: {'; '.join(g.needs)}" if g.needs else "")
            if g.approved_by:
                text += f"\napproved by {', '.join(g.approved_by)}"
        if g.evidence:
            text += f"\nevidence digest (what an approval signs): {g.evidence[:32]}"
        text += "".join(f"\n{n}" for n in g.notes)
        self.set_text("#approvals", text)

    def _evidence(self, gid: str) -> str:
        snap = self.tapp.snapshot
        g = next((g for g in snap.gates if g.id == gid), None) if snap else None
        return g.evidence if g else ""

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

        evidence = self._evidence(gid)

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestGateApprove(gid, reason, evidence or None))

        self.app.push_screen(ReasonModal(f"Approve gate {gid}", confirm=gid, detail=_signs(evidence)), done)

    @changes
    def action_decide(self, decision: Decision) -> None:
        gid = self.gate_id()
        if not gid:
            return

        evidence = self._evidence(gid)

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestGateDecide(gid, decision, reason, evidence or None))

        self.app.push_screen(
            ReasonModal(
                f"Decide {decision.upper()} on {gid}",
                confirm=gid if decision == "proceed" else None,
                detail=_signs(evidence),
            ),
            done,
        )


def _signs(evidence: str) -> str:
    """The line the approve and decide modals show: what the operator's key will sign."""
    return f"Your key signs the latest check runs, evidence digest\n[b]{evidence[:32]}[/b]…" if evidence else ""
