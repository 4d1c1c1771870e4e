from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from console.data.snapshot import Snapshot
from console.modals import ReasonModal
from console.screens.base import BaseScreen
from widgets.priority import PriorityColumn


class MigrationScreen(BaseScreen):
    TITLE = "migration"
    AUTO_FOCUS = "#col-1"
    BINDINGS = [
        Binding("s", "move('start')", "Start", id="migration.start"),
        Binding("c", "move('cutover')", "Cut over", id="migration.cutover"),
        Binding("r", "move('rollback')", "Roll back", id="migration.rollback"),
        Binding("left", "column(-1)", "◀", show=False, id="migration.left"),
        Binding("right", "column(1)", "▶", show=False, id="migration.right"),
    ]

    _deps_for: tuple[object, ...] | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="migration"):
            with Horizontal(id="board"):
                for p in range(1, 6):
                    yield PriorityColumn(p, id=f"col-{p}")
            yield Static(id="deps", classes="panel")

    def render_snapshot(self, snap: Snapshot) -> None:
        for p, cards in snap.board.items():
            self.query_one(f"#col-{p}", PriorityColumn).set_cards(cards)
        self.show_deps()

    def selected(self) -> str | None:
        col = self.focused if isinstance(self.focused, PriorityColumn) else self.query_one("#col-1", PriorityColumn)
        return col.selected

    def show_deps(self) -> None:
        from backend.migration import inventory

        svc = self.selected()
        if not svc:
            self.set_text("#deps", "select a service (tab / arrows)")
            return
        board = self.app.snapshot.board if self.app.snapshot else {}
        states = {n: s for cards in board.values() for n, s, _ in cards}
        gates = tuple((g.id, g.status) for g in self.app.snapshot.gates) if self.app.snapshot else ()
        key = (svc, tuple(sorted(states.items())), gates)
        if key == self._deps_for:
            return  # same service, board and gates: the blockers (a read of the bus) still hold
        self._deps_for = key
        spec = inventory.load().service(svc)
        deps = ", ".join(f"{d} ({states.get(d, '?')})" for d in spec.depends_on) or "none"
        users = ", ".join(inventory.load().dependents(svc)) or "none"
        try:
            why = self.app.actions.blockers(svc)
        except Exception:  # noqa: BLE001 - the dependency view must not break the board
            why = []
        self.set_text("#deps", f"[b]{svc}[/b] P{spec.priority} · {spec.task} · risk {spec.risk} · {spec.hours:g}h\n"
                      f"depends on: {deps}\nneeded by: {users}\n"
                      + ("[b]blocked:[/b] " + "; ".join(why) if why else "[green]nothing blocks a start[/]"))

    def on_list_view_highlighted(self) -> None:
        self.show_deps()

    def action_column(self, step: int) -> None:
        cols = list(self.query(PriorityColumn))
        cur = self.focused if isinstance(self.focused, PriorityColumn) else cols[0]
        cols[(cols.index(cur) + step) % len(cols)].focus()

    def action_move(self, action: str) -> None:
        svc = self.selected()
        if not svc:
            self.notify("no service selected", severity="warning")
            return
        if action == "start":
            why = self.app.actions.blockers(svc)
            if why:
                self.notify(f"cannot start {svc}: " + "; ".join(why), title="move refused", severity="error")
                self.set_text("#deps", f"[b]{svc}: start refused[/b]\n" + "\n".join(f"• {w}" for w in why))
                return
        confirm = svc if action in ("cutover", "rollback") else None

        def done(reason: str | None) -> None:
            if reason:
                self.app.run_action_worker("migrate", svc, action, reason)
        self.app.push_screen(ReasonModal(f"{action} {svc}", confirm=confirm), done)
