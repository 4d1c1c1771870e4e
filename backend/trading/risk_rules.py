"""Pre-trade risk checks, per account and symbol, from config. A denial names the rule and the
numbers. The book (positions, open orders, order times, last prices) is kept by the risk service.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import msgspec

from backend.messages import ExecReport, Instrument, Order


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_order_notional: float = 1_000_000.0
    """Largest quantity x price of one order."""
    max_position: float = 1_000_000.0
    """Largest absolute position per symbol after the order fills."""
    max_quantity: float = 100_000.0
    """Fat-finger limit on one order's quantity."""
    price_band_pct: float = 5.0
    """A limit price further than this from the last trade is denied."""
    max_orders_per_s: float = 20_000.0
    """Order rate limit per account (sliding one-second window)."""
    max_open_orders: int = 100_000
    """Working orders per account."""


class RiskConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limits: Limits = msgspec.field(default_factory=Limits)
    accounts: dict[str, Limits] = {}
    """Per-account limits replacing the defaults."""
    symbols: dict[str, dict[str, float]] = {}
    """Per-symbol overrides: {"BTCUSDT": {"max_quantity": 5, "max_position": 10}}."""
    restricted: list[str] = []
    """Symbols no order may trade."""
    require_price: bool = True
    """Deny orders for a symbol with no trade seen yet (no price to check against)."""


@dataclass
class Decision:
    approved: bool
    rule: str = ""
    reason: str = ""


@dataclass
class Book:
    positions: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    open_orders: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    recent: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    prices: dict[str, float] = field(default_factory=dict)
    seen_fills: set[str] = field(default_factory=set)
    status: dict[str, str] = field(default_factory=dict)  # refdata: symbol -> trading/halted/delisted
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)  # refdata: symbol -> (tick, lot)

    def on_instrument(self, inst: Instrument) -> None:
        self.status[inst.symbol] = inst.status
        self.steps[inst.symbol] = (inst.tick_size, inst.lot_size)

    def on_report(self, rep: ExecReport) -> None:
        if rep.kind == "fill" and rep.trade_id and rep.trade_id not in self.seen_fills:
            self.seen_fills.add(rep.trade_id)
            sign = 1.0 if rep.side == "buy" else -1.0
            self.positions[(rep.account, rep.symbol)] += sign * rep.fill_qty
        if rep.kind in ("canceled", "expired", "rejected") or (rep.kind == "fill" and rep.leaves_qty <= 1e-12):
            self.open_orders[rep.account].discard(rep.client_order_id)


class RiskEngine:
    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.book = Book()
        self.kill_switch = False
        self.denials: dict[str, int] = defaultdict(int)

    def limits(self, account: str, symbol: str) -> tuple[Limits, dict[str, float]]:
        return self.config.accounts.get(account, self.config.limits), self.config.symbols.get(symbol, {})

    def reduces_risk(self, o: Order) -> bool:
        pos = self.book.positions.get((o.account, o.symbol), 0.0)
        return (pos > 0 and o.side == "sell" and o.quantity <= pos + 1e-12) or (
            pos < 0 and o.side == "buy" and o.quantity <= -pos + 1e-12
        )

    def check(self, o: Order, now: float | None = None) -> Decision:
        d = self._check(o, time.monotonic() if now is None else now)
        if d.approved:
            self.book.open_orders[o.account].add(o.client_order_id)
        else:
            self.denials[d.rule] += 1
        return d

    def _check(self, o: Order, now: float) -> Decision:
        lim, sym = self.limits(o.account, o.symbol)
        if self.kill_switch and not self.reduces_risk(o):
            return Decision(False, "kill_switch", "kill switch is on: only risk-reducing orders pass")
        if o.symbol in self.config.restricted:
            return Decision(False, "restricted_symbol", f"{o.symbol} is restricted")
        st = self.book.status.get(o.symbol, "trading")
        if st != "trading":
            return Decision(False, "instrument_status", f"{o.symbol} is {st} (refdata)")
        steps = self.book.steps.get(o.symbol)
        if steps is not None:
            tick, lot = steps
            if not _on_step(o.quantity, lot):
                return Decision(
                    False,
                    "lot_size",
                    f"quantity {o.quantity:g} is not a multiple of {o.symbol}'s lot size {lot:g} (refdata)",
                )
            if o.limit_price is not None and not _on_step(o.limit_price, tick):
                return Decision(
                    False, "tick_size", f"limit {o.limit_price:g} is not on {o.symbol}'s tick size {tick:g} (refdata)"
                )
        max_qty = sym.get("max_quantity", lim.max_quantity)
        if o.quantity > max_qty:
            return Decision(False, "max_quantity", f"quantity {o.quantity:g} > max {max_qty:g} (fat finger)")
        last = self.book.prices.get(o.symbol)
        if last is None and self.config.require_price:
            return Decision(False, "no_price", f"no trade seen for {o.symbol}: price unknown")
        ref = o.limit_price if o.limit_price is not None else last
        if ref is not None:
            notional = o.quantity * ref
            if notional > lim.max_order_notional:
                return Decision(
                    False, "max_order_notional", f"notional {notional:,.2f} > max {lim.max_order_notional:,.2f}"
                )
        if o.limit_price is not None and last:
            dev = abs(o.limit_price - last) / last * 100
            if dev > lim.price_band_pct:
                return Decision(
                    False,
                    "price_band",
                    f"limit {o.limit_price:g} is {dev:.2f}% from last {last:g} (band {lim.price_band_pct:g}%)",
                )
        pos = self.book.positions.get((o.account, o.symbol), 0.0)
        after = pos + (o.quantity if o.side == "buy" else -o.quantity)
        max_pos = sym.get("max_position", lim.max_position)
        if abs(after) > max_pos and abs(after) > abs(pos):
            return Decision(False, "max_position", f"position would be {after:g} (now {pos:g}), max {max_pos:g}")
        q = self.book.recent[o.account]
        while q and q[0] <= now - 1.0:
            q.popleft()
        if len(q) >= lim.max_orders_per_s:
            return Decision(False, "rate_limit", f"{len(q)} orders in the last second, max {lim.max_orders_per_s:g}/s")
        q.append(now)
        n_open = len(self.book.open_orders[o.account])
        if n_open >= lim.max_open_orders:
            return Decision(False, "max_open_orders", f"{n_open} open orders, max {lim.max_open_orders}")
        return Decision(True)


def _on_step(value: float, step: float) -> bool:
    """Whether `value` is a whole number of `step`s (to a millionth of a step: floats)."""
    n = value / step
    return abs(n - round(n)) < 1e-6
