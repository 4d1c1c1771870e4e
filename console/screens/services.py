"""Services: the P4/P5 services an operator looks after, one tab each (ptrc's positions, alerting,
the scheduler's jobs, the model registry with serving, backtests, the marketplace, refdata); [ and ]
change tab, the command palette names each. Acknowledging an alert, promoting and rolling back a
model ask for a typed confirmation and post their ActionRequest."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static, Tab, Tabs

from console.data.snapshot import ModelRow, Snapshot
from console.messages import RequestAlertAck, RequestModelPromote, RequestModelRollback
from console.modals import PromoteForm, PromoteModal, ReasonModal
from console.screens.base import BaseScreen, changes
from console.screens.trends import pick
from widgets.keyedtable import KeyedTable
from widgets.timeplot import TimePlot

TABS = {
    "positions": "positions and PnL per account and symbol (ptrc)",
    "alerts": "active alerts, to acknowledge (alerting)",
    "jobs": "scheduled jobs and their last outcome (scheduler)",
    "models": "models, stages, promotion and rollback (modelops, serving)",
    "backtests": "backtest jobs and results (bt-orchestrator)",
    "catalog": "catalog items and subscriptions (marketplace)",
    "instruments": "the instrument master (refdata)",
}
COLUMNS = {
    "positions": ("account", "symbol", "qty", "avg", "mark", "realized", "unrealized", "exposure"),
    "alerts": ("time", "severity", "source", "message", "key"),
    "jobs": ("job", "kind", "schedule", "last slot", "outcome", "at", "trigger", "what"),
    "models": ("model", "versions", "staging", "production", "prod IC", "rollback to", "served"),
    "backtests": ("job", "strategy", "state", "pnl", "sharpe", "max dd", "trades", "reason"),
    "catalog": ("item", "kind", "name", "owner", "signals", "subscribers"),
    "instruments": ("symbol", "tick", "lot", "ccy", "session", "status"),
}
TAB_KEYS = {"services.ack": "alerts", "services.promote": "models", "services.rollback": "models"}


def _f(v: float | None, fmt: str = ",.2f") -> str:
    return "-" if v is None else format(v, fmt)


def _v(v: int | None) -> str:
    return "-" if v is None else f"v{v}"


class ServicesScreen(BaseScreen):
    TITLE = "services"
    AUTO_FOCUS = "#svc-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "tab(-1)", "Prev tab", id="services.prev", show=False),
        Binding("right_square_bracket", "tab(1)", "Next tab", id="services.next"),
        Binding("a", "ack", "Acknowledge", id="services.ack"),
        Binding("P", "promote", "Promote", id="services.promote"),
        Binding("B", "rollback", "Rollback", id="services.rollback"),
    ]

    def compose_body(self) -> ComposeResult:
        # one table whose columns follow the tab: seven tables would be restyled on every visit
        yield Static(id="svc-summary", classes="panel-title")
        yield Tabs(*(Tab(tab.capitalize(), id=tab) for tab in TABS), id="svc-tabs")
        yield KeyedTable(COLUMNS["positions"], id="svc-table")
        # PnL per account over time, under the positions
        yield TimePlot("PnL per account (realized + unrealized)", background=self.tapp.live, id="p-positions-pnl")

    @property
    def tab(self) -> str:
        return self.query_one(Tabs).active or "positions"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The keys of one tab are shown on that tab only (read-only hides the changes everywhere)."""
        if not super().check_action(action, parameters):
            return False
        name = action.split("(")[0]
        for b in self.BINDINGS:
            if isinstance(b, Binding) and b.action == name and b.id in TAB_KEYS:
                return TAB_KEYS[b.id] == self.tab
        return True

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        table = self.query_one(KeyedTable)
        table.set_columns(COLUMNS[self.tab])
        self.query_one("#p-positions-pnl").display = self.tab == "positions"
        snap = self.tapp.snapshot
        if snap is not None and self.ready:
            self.render_snapshot(snap)
        self.refresh_bindings()
        table.focus()

    def action_tab(self, step: int) -> None:
        names = list(TABS)
        self.query_one(Tabs).active = names[(names.index(self.tab) + step) % len(names)]

    def select(self, item: str) -> None:
        """Open a tab (the command palette: "services: alerts")."""
        if item in TABS:
            self.query_one(Tabs).active = item

    def render_snapshot(self, snap: Snapshot) -> None:
        m = self.matches
        self.set_text(
            "#svc-summary",
            f"{len(snap.positions)} positions · {len(snap.alert_rows)} active alerts · {len(snap.jobs)} jobs · "
            f"{len(snap.models)} models · {len(snap.backtests)} backtests · {len(snap.catalog)} catalog items · "
            f"{len(snap.instruments)} instruments",
        )
        tab = self.tab
        tables: dict[str, Callable[[], list[tuple[str, tuple[str | Text, ...]]]]] = {
            "positions": lambda: [
                (
                    f"{p.account}/{p.symbol}",
                    (
                        p.account,
                        p.symbol,
                        f"{p.qty:g}",
                        f"{p.avg_price:,.6g}",
                        f"{p.mark:,.6g}",
                        f"{p.realized:,.2f}",
                        f"{p.unrealized:,.2f}",
                        f"{p.exposure:,.2f}",
                    ),
                )
                for p in snap.positions
                if m(p.account, p.symbol)
            ],
            "alerts": lambda: [
                (a.key, (a.time, _severity(a.severity), a.source, a.message, a.key))
                for a in snap.alert_rows
                if m(a.key, a.source, a.message, a.severity)
            ],
            "jobs": lambda: [
                (j.name, (j.name, j.kind, j.schedule, j.slot, _outcome(j.outcome), j.at, j.trigger, j.what))
                for j in snap.jobs
                if m(j.name, j.kind, j.outcome)
            ],
            "models": lambda: [
                (
                    x.name,
                    (
                        x.name,
                        ", ".join(f"v{v}" for v in x.versions),
                        _v(x.staging),
                        _v(x.production),
                        _f(x.production_ic, ".3f"),
                        _v(x.previous),
                        x.served or "-",
                    ),
                )
                for x in snap.models
                if m(x.name)
            ],
            "backtests": lambda: [
                (
                    b.job_id,
                    (
                        b.job_id,
                        b.strategy,
                        b.state,
                        _f(b.pnl),
                        _f(b.sharpe),
                        _f(b.max_drawdown, ".2%"),
                        "-" if b.trades is None else str(b.trades),
                        b.reason,
                    ),
                )
                for b in snap.backtests
                if m(b.job_id, b.strategy, b.state)
            ],
            "catalog": lambda: [
                (c.id, (c.id, c.kind, c.name, c.owner, c.signals or "-", ", ".join(c.subscribers) or "none"))
                for c in snap.catalog
                if m(c.id, c.name, c.owner, *c.subscribers)
            ],
            "instruments": lambda: [
                (i.symbol, (i.symbol, f"{i.tick_size:g}", f"{i.lot_size:g}", i.currency, i.session, i.status))
                for i in snap.instruments
                if m(i.symbol, i.status)
            ],
        }
        self.query_one(KeyedTable).set_rows(tables[tab]())  # the tab in view only
        if tab == "positions":
            plot = self.query_one("#p-positions-pnl", TimePlot)
            plot.set_window(self.tapp.plot_window)
            plot.set_series(pick(snap.series, "pnl:"), snap.now)

    def _selected(self, tab: str) -> str | None:
        """The key of the selected row when `tab` is the tab in view."""
        return self.query_one(KeyedTable).selected_key if self.tab == tab else None

    def _model(self) -> ModelRow | None:
        name, snap = self._selected("models"), self.tapp.snapshot
        return next((x for x in snap.models if x.name == name), None) if snap and name else None

    @changes
    def action_ack(self) -> None:
        key = self._selected("alerts")
        if key is None:
            self.notify("no alert selected", severity="warning")
            return

        def done(word: str | None) -> None:
            if word:
                self.post_message(RequestAlertAck(key))

        self.app.push_screen(ReasonModal(f"Acknowledge alert {key}", confirm="ACK", ask_reason=False), done)

    @changes
    def action_promote(self) -> None:
        model = self._model()
        if model is None or not model.versions:
            self.notify("no model with versions selected", severity="warning")
            return
        now = f"now: staging {_v(model.staging)}, production {_v(model.production)}"

        def done(form: PromoteForm | None) -> None:
            if form:
                self.post_message(RequestModelPromote(model.name, form.version, form.stage, form.reason))

        self.app.push_screen(PromoteModal(model.name, model.versions, now), done)

    @changes
    def action_rollback(self) -> None:
        model = self._model()
        if model is None:
            self.notify("no model selected", severity="warning")
            return
        if model.previous is None:  # refused here, before the modal: what modelops would say
            self.notify(
                f"{model.name}: nothing to roll back to (one version has been in production)",
                title="rollback refused",
                severity="warning",
            )
            return

        def done(reason: str | None) -> None:
            if reason:
                self.post_message(RequestModelRollback(model.name, reason))

        self.app.push_screen(
            ReasonModal(
                f"Roll back {model.name} in production",
                confirm=model.name,
                detail=f"production goes from {_v(model.production)} back to {_v(model.previous)}",
            ),
            done,
        )


def _severity(s: str) -> Text:
    return Text(s, style={"critical": "bold red", "warning": "yellow"}.get(s, ""))


def _outcome(s: str) -> Text:
    return Text({"failed": "✘ failed", "ok": "✔ ok"}.get(s, s), style={"failed": "red", "ok": "green"}.get(s, ""))
