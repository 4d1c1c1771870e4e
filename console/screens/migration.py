from __future__ import annotations

from typing import Any, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Static

from backend.migration.state import ALLOWED, refusal
from console.actions import Move, snapshot_blockers
from console.data.snapshot import Snapshot
from console.messages import RequestMigrate
from console.modals import ReasonModal
from console.screens.base import BaseScreen, changes
from widgets.depgraph import DependencyGraph
from widgets.priority import PriorityColumn
from widgets.sheet import SheetView
from widgets.steps import StepsView

START_FROM = ALLOWED["start"]
VIEWS = ("sheet", "steps", "graph")  # what `v` cycles through beside the dependencies
MOVE = {"cut over": "cutover", "roll back": "rollback"}


class MigrationScreen(BaseScreen):
    TITLE = "migration"
    AUTO_FOCUS = "#col-1"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "move('start')", "Start", id="migration.start"),
        Binding("c", "move('cutover')", "Cut over", id="migration.cutover"),
        Binding("r", "move('rollback')", "Roll back", id="migration.rollback"),
        Binding("v", "view", "View", id="migration.view"),
        Binding("left", "column(-1)", "◀", show=False, id="migration.left"),
        Binding("right", "column(1)", "▶", show=False, id="migration.right"),
    ]

    _deps_for: tuple[object, ...] | None = None
    _column: str = "#col-1"  # the column last focused: the selection while a modal or the filter has the focus
    _refused: tuple[str, list[str]] | None = None  # the last refused start, shown until the selection moves
    _detail: tuple[str, dict[int, list[str]], int, dict[str, str]] | None = None  # what the detail view shows

    def compose_body(self) -> ComposeResult:
        with Vertical(id="migration"):
            with Horizontal(id="board"):
                for p in range(1, 6):
                    yield PriorityColumn(p, id=f"col-{p}")
            with Horizontal(id="migration-detail"):
                yield Static(id="deps", classes="panel")
                with ContentSwitcher(initial="sheet", id="detail-view"):
                    yield SheetView(id="sheet")
                    yield StepsView(id="steps")
                    yield DependencyGraph(id="graph")

    def render_snapshot(self, snap: Snapshot) -> None:
        for p, cards in snap.board.items():
            self.query_one(f"#col-{p}", PriorityColumn).set_cards(cards)
        self.show_deps()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, PriorityColumn) and event.widget.id:
            self._column = f"#{event.widget.id}"
            self.show_deps()

    def selected(self) -> str | None:
        return self.query_one(self._column, PriorityColumn).selected

    def select(self, service: str) -> None:
        """Focus `service`'s card (the command palette)."""
        for col in self.query(PriorityColumn):
            if service in col.services:
                col.index = col.services.index(service)
                col.focus()
                self._column = f"#{col.id}"
                self.show_deps()
                return

    def _states(self) -> dict[str, str]:
        snap = self.tapp.snapshot
        return {n: s for cards in (snap.board.values() if snap else []) for n, s, _ in cards}

    def show_deps(self) -> None:
        from backend.migration import inventory

        svc = self.selected()
        if not svc:
            self.set_text("#deps", "select a service (tab / arrows)")
            return
        snap = self.tapp.snapshot
        states = self._states()
        gates = tuple((g.id, g.status) for g in snap.gates) if snap else ()
        steps = tuple(tuple(r) for r in snap.checklists.get(svc, ())) if snap else ()
        key = (svc, tuple(sorted(states.items())), gates, self._refused, bool(snap and snap.sheets), steps)
        if key == self._deps_for:
            return  # same service, board and gates: nothing to redo
        self._deps_for = key
        inv = inventory.load()
        spec = inv.service(svc)
        levels = snap.levels if snap and snap.levels else inv.levels()
        level = next((lv for lv, names in levels.items() if svc in names), 0)
        self._detail = (svc, levels, level, states)
        self.show_detail()
        after = ", ".join(f"{d} ({states.get(d, '?')})" for d in spec.migrate_after) or "none"
        needs = ", ".join(spec.needs) or "none"
        users = ", ".join(inv.needed_by(svc)) or "none"
        state = states.get(svc, "planned")
        why = snapshot_blockers(snap, svc) if snap else []
        if self._refused and self._refused[0] == svc and why:
            head = f"[b]{svc}: start refused[/b] ({state})"
            self.set_text("#deps", head + "\n" + "\n".join(f"• {w}" for w in why))
            return
        if state in START_FROM:
            nxt = ("[b]blocked:[/b] " + "; ".join(why)) if why else "[green]nothing blocks a start[/] (s)"
        else:
            moves = [f"{k} {a}" for a, k in (("cut over", "c"), ("roll back", "r")) if state in ALLOWED[MOVE[a]]]
            nxt = f"{state}: " + (", ".join(moves) if moves else "no move from here")
        est, logged = snap.hours.get(svc, (spec.hours, 0.0)) if snap else (spec.hours, 0.0)
        rows = snap.checklists.get(svc, []) if snap else []
        done = f" · steps {sum(1 for r in rows if r[2])}/{len(rows)}" if rows else ""
        self.set_text(
            "#deps",
            f"[b]{svc}[/b] P{spec.priority} · {spec.task} · risk {spec.risk} · {logged:g}/{est:g}h{done}"
            f" · [b]{state}[/b]\nlevel {level} of {len(levels)} · needs: {needs}\nneeded by: {users}"
            f"\nmigrate after: {after}\n{nxt}",
        )

    def _view_title(self, svc: str, what: str) -> str:
        return f"{svc}: {what} (v: {' · '.join(v for v in VIEWS if v != what)})"

    def show_steps(self, svc: str, snap: Snapshot | None) -> None:
        """The selected service's migration checklist and its hours."""
        rows = snap.checklists.get(svc, []) if snap else []
        hours = snap.hours.get(svc, (0.0, 0.0)) if snap else (0.0, 0.0)
        self.query_one("#steps", StepsView).show(self._view_title(svc, "steps"), rows, hours)

    def show_graph(self, svc: str, level: int, states: dict[str, str], inv: Any) -> None:
        """What the selected service needs and what needs it, drawn; what breaks if it moves."""
        spec = inv.service(svc)
        down = inv.needed_by(svc)
        breaks, todo = [], list(down)
        while todo:  # everything downstream, the direct ones first
            name = todo.pop(0)
            if name not in breaks:
                breaks.append(name)
                todo.extend(inv.needed_by(name))
        self.query_one("#graph", DependencyGraph).show(
            self._view_title(svc, "graph"),
            svc,
            f"L{level} · {states.get(svc, 'planned')}",
            [f"{d} ({states.get(d, '?')})" for d in spec.needs],
            [f"{d} ({states.get(d, '?')})" for d in down],
            breaks,
        )

    def action_view(self) -> None:
        """Cycle the detail beside the dependencies: the sheet, the checklist, the graph."""
        sw = self.query_one("#detail-view", ContentSwitcher)
        sw.current = VIEWS[(VIEWS.index(sw.current or VIEWS[0]) + 1) % len(VIEWS)]
        self.show_detail()

    def show_detail(self) -> None:
        """Fill only the view in sight (the others when `v` brings them up): a visit costs one."""
        if self._detail is None:
            return
        from backend.migration import inventory

        svc, levels, level, states = self._detail
        snap = self.tapp.snapshot
        view = self.query_one("#detail-view", ContentSwitcher).current or VIEWS[0]
        if view == "sheet":
            self.show_sheet(svc, levels, snap.sheets.get(svc, []) if snap else [])
        elif view == "steps":
            self.show_steps(svc, snap)
        else:
            self.show_graph(svc, level, states, inventory.load())

    def show_sheet(self, svc: str, levels: dict[int, list[str]], sections: list[tuple[str, list[str]]]) -> None:
        """The selected service's sheet, after the dependency levels with its own marked."""
        lv = [f"{'▶' if svc in names else ' '} {n}: {', '.join(names)}" for n, names in levels.items()]
        body = [*sections[:2], (f"Dependency levels ({len(levels)})", lv), *sections[2:]]
        if not sections:
            body = [("Sheet", ["loading"])]
        self.query_one("#sheet", SheetView).show(self._view_title(svc, "sheet"), body)

    def on_list_view_highlighted(self) -> None:
        self._refused = None
        self.show_deps()

    def action_column(self, step: int) -> None:
        cols = list(self.query(PriorityColumn))
        cur = self.query_one(self._column, PriorityColumn)
        cols[(cols.index(cur) + step) % len(cols)].focus()

    @changes
    def action_move(self, action: Move) -> None:
        svc = self.selected()
        if not svc or self.tapp.snapshot is None:
            self.notify("no service selected", severity="warning")
            return
        state = self._states().get(svc, "planned")
        if state not in ALLOWED[action]:
            self.notify(
                refusal(svc, action, state),
                title="move refused",
                severity="error",
            )
            return
        if action == "start":
            why = snapshot_blockers(self.tapp.snapshot, svc)
            if why:
                self.notify(f"cannot start {svc}: " + "; ".join(why), title="move refused", severity="error")
                self._refused = (svc, why)
                self.show_deps()
                return
        confirm = svc if action in ("cutover", "rollback") else None

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestMigrate(svc, action, reason))

        self.app.push_screen(ReasonModal(f"{action} {svc}", confirm=confirm), done)
