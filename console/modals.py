"""Modals: a reason prompt, a typed confirmation, the order form, help."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from backend.messages import Side


class ReasonModal(ModalScreen[str | None]):
    """Asks for a reason; with `confirm`, also for the typed confirmation word. With `ask_reason`
    False only the word is asked for (an acknowledgement), and the answer is the word."""

    AUTO_FOCUS = "#reason"

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(
        self,
        title: str,
        confirm: str | None = None,
        placeholder: str = "reason",
        detail: str = "",
        *,
        ask_reason: bool = True,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.confirm = confirm
        self.placeholder = placeholder
        self.detail = detail  # e.g. the evidence digest being signed
        self.ask_reason = ask_reason or not confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            if self.detail:
                yield Label(self.detail, id="dialog-detail")
            if self.ask_reason:
                yield Input(placeholder=self.placeholder, id="reason")
            if self.confirm:
                # the word is said in the label, never as the field's placeholder (it looked filled in)
                yield Label(f"type [b]{self.confirm}[/b] to confirm", id="confirm-label")
                yield Input(id="confirm")
            yield Label("", id="dialog-error")
            with Grid(id="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        if not self.ask_reason:  # AUTO_FOCUS names the reason field, which is not there
            self.query_one("#confirm", Input).focus()

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
        reason = self.query_one("#reason", Input).value.strip() if self.ask_reason else str(self.confirm)
        err = self.query_one("#dialog-error", Label)
        if not reason:
            err.update("a reason is required")
            return
        if self.confirm and self.query_one("#confirm", Input).value.strip() != self.confirm:
            err.update(f"type {self.confirm} exactly to confirm")
            _retype(self.query_one("#confirm", Input))
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


class OrderForm(NamedTuple):
    symbol: str
    side: Side
    qty: float
    limit: float | None  # None: a market order


def _retype(box: Input) -> None:
    """After a validation error: the focus on the bad field with its text selected, so what is
    typed next replaces it."""
    box.focus()
    box.select_all()


class OrderModal(ModalScreen[OrderForm | None]):
    AUTO_FOCUS = "#symbol"  # top to bottom: symbol, side, quantity, limit
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
        qty_box, limit_box = self.query_one("#qty", Input), self.query_one("#limit", Input)
        try:
            qty = float(qty_box.value)
        except ValueError:
            err.update("quantity must be a number")
            _retype(qty_box)
            return
        if not (math.isfinite(qty) and qty > 0):
            err.update("quantity must be a positive number")
            _retype(qty_box)
            return
        raw = limit_box.value.strip()
        try:
            limit = float(raw) if raw else None
        except ValueError:
            err.update("limit price must be a number (or empty for a market order)")
            _retype(limit_box)
            return
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            err.update("limit price must be a positive number (or empty for a market order)")
            _retype(limit_box)
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


LEGEND = (
    "[b]What the screens abbreviate[/b]\n"
    "L1 T0      instances running: 1 on legacy, 0 on target (overview tiles)\n"
    "p 0,2|1,3 of 4  the partitions each instance owns, instance by instance (a partitioned stream)\n"
    "lag        entries on the service's input stream its group has not read yet\n"
    "pend       entries it has read but not acknowledged (a sink holds a batch until it is stored)\n"
    "dlq        entries in its dead-letter stream\n"
    "★          a critical gate: it needs two approvals (gates screen)\n"
    "P1..P5     migration priority: P1 moves first\n"
    "red line   the SLA on a latency plot (risk round trip: 1.5 ms)"
)


class HelpScreen(ModalScreen[None]):
    AUTO_FOCUS = "#help-table"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Label(
                "Keys · [b]esc[/b], [b]?[/b] or [b]q[/b] closes this\n"
                "remap any key by its id (config file, table \\[keymap])",
                id="dialog-title",
            )
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row")
            yield table
            yield Static(LEGEND, id="legend")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "action", "where", "id")
        for row in self.rows:
            t.add_row(*row)

    def action_close(self) -> None:
        self.dismiss(None)


class PromoteForm(NamedTuple):
    version: int
    stage: Literal["staging", "production"]
    reason: str


class PromoteModal(ModalScreen[PromoteForm | None]):
    """Promote a model's version to a stage: the version and stage, a reason, the model's name typed."""

    AUTO_FOCUS = "#version"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="modal.cancel")]

    def __init__(self, name: str, versions: list[int], current: str) -> None:
        super().__init__()
        self.model = name
        self.versions = sorted(versions, reverse=True)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Promote a version of {self.model}", id="dialog-title")
            yield Label(self.current, id="dialog-detail")
            yield Select([(f"v{v}", v) for v in self.versions], value=self.versions[0], id="version", allow_blank=False)
            yield Select(
                [("production", "production"), ("staging", "staging")],
                value="production",
                id="stage",
                allow_blank=False,
            )
            yield Input(placeholder="reason", id="reason")
            yield Label(f"type [b]{self.model}[/b] to confirm", id="confirm-label")
            yield Input(id="confirm")
            yield Label("", id="dialog-error")
            with Grid(id="dialog-buttons"):
                yield Button("Promote", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "reason":
            self.query_one("#confirm", Input).focus()
            return
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        err = self.query_one("#dialog-error", Label)
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            err.update("a reason is required")
            self.query_one("#reason", Input).focus()
            return
        if self.query_one("#confirm", Input).value.strip() != self.model:
            err.update(f"type {self.model} exactly to confirm")
            _retype(self.query_one("#confirm", Input))
            return
        version = self.query_one("#version", Select).value
        stage = cast(Literal["staging", "production"], str(self.query_one("#stage", Select).value))
        self.dismiss(PromoteForm(cast(int, version), stage, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)
