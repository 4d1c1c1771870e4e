from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from backend.messages import FINAL_STATES
from console.data.snapshot import Snapshot
from console.messages import RequestOrderCancel, RequestOrderSubmit
from console.modals import OrderForm, OrderModal
from console.screens.base import BaseScreen, changes
from widgets.blotter import BlotterTable


class OrdersScreen(BaseScreen):
    TITLE = "orders"
    AUTO_FOCUS = "#blotter"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_order", "New order", id="orders.new"),
        Binding("x", "cancel_order", "Cancel order", id="orders.cancel"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="orders"):
            with Vertical(id="blotter-box"):
                yield Static(id="follow", classes="panel-title")
                yield BlotterTable(id="blotter")
            yield Static(id="history", classes="panel")

    def render_snapshot(self, snap: Snapshot) -> None:
        t = self.query_one(BlotterTable)
        rows = [
            (
                o.client_order_id,
                (
                    o.time,
                    o.state,
                    o.client_order_id,
                    o.account,
                    o.symbol,
                    o.side,
                    f"{o.qty:g}",
                    o.price,
                    f"{o.filled:g}",
                    o.reason[:40],
                ),
            )
            for o in snap.orders
            if self.matches(o.client_order_id, o.symbol, o.state, o.account)
        ]
        t.set_rows(rows)
        self.set_text(
            "#follow",
            "following newest"
            if t.follow
            else (f"[reverse] {t.new_since_pause} new [/] " if t.new_since_pause else "")
            + "held on the selected order (scroll to the top to follow)",
        )
        key = self._selected()
        hist = snap.order_history.get(key or "", [])
        self.set_text("#history", f"[b]{key or 'no order selected'}[/b]\n" + "\n".join(hist[-20:]))

    def _selected(self) -> str | None:
        return self.query_one(BlotterTable).selected_key

    @changes
    def action_new_order(self) -> None:
        snap = self.tapp.snapshot
        symbols = [m.symbol for m in snap.market] if snap else []

        def done(form: OrderForm | None) -> None:
            if form:
                self.post_message(RequestOrderSubmit(*form))

        self.app.push_screen(OrderModal(symbols), done)

    @changes
    def action_cancel_order(self) -> None:
        key = self._selected()
        if key is None:
            self.notify("no order selected", severity="warning")
            return
        snap = self.tapp.snapshot
        order = next((o for o in snap.orders if o.client_order_id == key), None) if snap else None
        if order is not None and order.state in FINAL_STATES:
            self.notify(f"{key} is {order.state}: nothing left to cancel", title="cancel refused", severity="warning")
            return
        self.post_message(RequestOrderCancel(key))
