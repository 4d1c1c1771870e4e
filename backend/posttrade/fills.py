"""Which fills ptrc books: only fills of an order the OMS knows, within the order's quantity, each
trade once. Pure: the caller loads what a batch needs (the OMS's orders, what was booked before)
and stores what changed.

- a trade id booked before with the same order and quantity is a true duplicate (a report
  delivered again, or the same fill reported twice): skipped and counted;
- anything else that does not fit is a break, with its reason: a trade id booked before for
  another order or quantity (a venue reusing ids), a fill without a trade id, for an order the
  OMS does not know, for another account, symbol or side than the order's, or beyond the order's
  quantity. Breaks are never booked: the caller dead-letters them and raises an alert.

The OMS commits an order's record before the order is routed (the record and the exec order are
written by one script), so a fill can never arrive before its order's record: a fill for an
unknown order is a break at once, with no retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

from backend.messages import ExecReport, Order

QTY_REL_TOL = 1e-9
"""Relative slack on quantities: partial fills summed in floating point."""
QTY_ABS_TOL = 1e-12


class Booked(msgspec.Struct, array_like=True, frozen=True):
    """A trade as ptrc booked it (kept per trade id)."""

    client_order_id: str
    qty: float


@dataclass(frozen=True)
class Verdict:
    action: Literal["book", "duplicate", "break"]
    reason: str = ""


BOOK = Verdict("book")
DUPLICATE = Verdict("duplicate")


def same_qty(a: float, b: float) -> bool:
    return abs(a - b) <= QTY_ABS_TOL + QTY_REL_TOL * max(abs(a), abs(b))


def within(total: float, quantity: float) -> bool:
    """Whether `total` filled stays within an order of `quantity`."""
    return total <= quantity * (1 + QTY_REL_TOL) + QTY_ABS_TOL


def judge(rep: ExecReport, order: Order | None, filled: float, booked: Booked | None) -> Verdict:
    """What to do with one fill: `order` is the OMS's (None: unknown), `filled` what was booked
    for it before, `booked` what was booked under the fill's trade id before (None: nothing)."""
    tid, coid = rep.trade_id, rep.client_order_id
    if not tid:
        return Verdict("break", f"fill for order {coid!r} has no trade id")
    if booked is not None:
        if booked.client_order_id == coid and same_qty(booked.qty, rep.fill_qty):
            return DUPLICATE
        return Verdict(
            "break",
            f"trade id {tid!r} reused: booked for order {booked.client_order_id!r} "
            f"qty {booked.qty:g}, reported again for order {coid!r} qty {rep.fill_qty:g}",
        )
    if order is None:
        return Verdict(
            "break", f"fill {tid!r} of {rep.fill_qty:g} {rep.symbol} for order {coid!r}, which the OMS does not know"
        )
    wrong = [
        f"{name} {got!r} (the order's is {want!r})"
        for name, got, want in (
            ("account", rep.account, order.account),
            ("symbol", rep.symbol, order.symbol),
            ("side", rep.side, order.side),
        )
        if got != want
    ]
    if wrong:
        return Verdict("break", f"fill {tid!r} for order {coid!r} has " + ", ".join(wrong))
    total = filled + rep.fill_qty
    if not within(total, order.quantity):
        return Verdict(
            "break",
            f"over-fill: fill {tid!r} of {rep.fill_qty:g} takes order {coid!r} to "
            f"{total:g} filled of {order.quantity:g}",
        )
    return BOOK


@dataclass
class Ledger:
    """What ptrc knows for one batch of fills: the OMS's orders (None: unknown), the quantity
    booked per order and the trades booked per trade id, as loaded by the caller; `check` judges a
    fill against them and, when it is booked, records it (so a batch sees its own fills)."""

    orders: dict[str, Order | None] = field(default_factory=dict)
    filled: dict[str, float] = field(default_factory=dict)
    booked: dict[str, Booked | None] = field(default_factory=dict)
    new_trades: dict[str, Booked] = field(default_factory=dict)
    """Booked by this batch: trade id -> trade (the caller stores them)."""
    new_filled: dict[str, float] = field(default_factory=dict)
    """Orders this batch booked fills for -> their quantity booked in all (the caller stores them)."""

    def check(self, rep: ExecReport) -> Verdict:
        coid = rep.client_order_id
        v = judge(rep, self.orders.get(coid), self.filled.get(coid, 0.0), self.booked.get(rep.trade_id))
        if v.action == "book":
            b = Booked(coid, rep.fill_qty)
            self.booked[rep.trade_id] = self.new_trades[rep.trade_id] = b
            self.filled[coid] = self.new_filled[coid] = self.filled.get(coid, 0.0) + rep.fill_qty
        return v
