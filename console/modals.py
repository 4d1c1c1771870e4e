"""Modals: a reason prompt, a typed confirmation, the order form, help."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select

from backend.messages import Side


class ReasonModal(ModalScreen[str | None]):
    """Asks for a reason; with `confirm`, also for the typed confirmation word."""

    AUTO_FOCUS = "#reason"

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(self, title: str, confirm: str | None = None, placeholder: str = "reason") -> None:
        super().__init__()
        self.title_text = title
        self.confirm = confirm
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Input(placeholder=self.placeholder, id="reason")
            if self.confirm:
                yield Label(f"Type [b]{self.confirm}[/b] to confirm:")
                yield Input(placeholder=self.confirm, id="confirm")
            yield Label("", id="dialog-error")
            with Grid(id="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        # Enter in the reason field moves on to the confirmation, so a fast typist's word
        # never lands in the wrong field
        if self.confirm and event.input.id == "reason":
            self.query_one("#confirm", Input).focus()
            return
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        err = self.query_one("#dialog-error", Label)
        if not reason:
            err.update("a reason is required")
            return
        if self.confirm and self.query_one("#confirm", Input).value.strip() != self.confirm:
            err.update(f"type {self.confirm} exactly to confirm")
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


class OrderForm(NamedTuple):
    symbol: str
    side: Side
    qty: float
    limit: float | None  # None: a market order


class OrderModal(ModalScreen[OrderForm | None]):
    AUTO_FOCUS = "#qty"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(self, symbols: list[str]) -> None:
        super().__init__()
        self.symbols = symbols or ["BTCUSDT"]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("New paper order", id="dialog-title")
            yield Select([(s, s) for s in self.symbols], value=self.symbols[0], id="symbol", allow_blank=False)
            yield Select([("buy", "buy"), ("sell", "sell")], value="buy", id="side", allow_blank=False)
            yield Input(placeholder="quantity", id="qty", type="number")
            yield Input(placeholder="limit price (empty: market)", id="limit", type="number")
            yield Label("", id="dialog-error")
            with Grid(id="dialog-buttons"):
                yield Button("Submit", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        err = self.query_one("#dialog-error", Label)
        try:
            qty = float(self.query_one("#qty", Input).value)
        except ValueError:
            err.update("quantity must be a number")
            return
        if not (math.isfinite(qty) and qty > 0):
            err.update("quantity must be a positive number")
            return
        raw = self.query_one("#limit", Input).value.strip()
        try:
            limit = float(raw) if raw else None
        except ValueError:
            err.update("limit price must be a number (or empty for a market order)")
            return
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            err.update("limit price must be a positive number (or empty for a market order)")
            return
        self.dismiss(
            OrderForm(
                str(self.query_one("#symbol", Select).value),
                cast(Side, str(self.query_one("#side", Select).value)),
                qty,
                limit,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    AUTO_FOCUS = "#help-table"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label("Keys (remap any by its id in the config file, table \\[keymap])", id="dialog-title")
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row")
            yield table

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "action", "where", "id")
        for row in self.rows:
            t.add_row(*row)

    def action_close(self) -> None:
        self.dismiss(None)
