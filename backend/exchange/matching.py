"""A matching engine against a live price, shared by the paper venue (live-gateway) and the local
exchange's REST order API.

Market orders fill at the last trade price; limit orders fill only when the price crosses them
(buy: last <= limit, sell: last >= limit) and fill at the limit. Each price update offers at most
`liquidity` quantity per order, so large orders fill partially over several updates. IOC fills
what it can at once and cancels the rest; FOK fills whole at once or is canceled.

Ids are unique across engines: venue order ids are `<venue>-<session>-<n>` and trade ids
`<venue order id>-<fill number>`, where the session names this engine among every engine that
ever numbered orders for the venue (the live-gateway takes it from a Redis counter, so a second
instance during a blue/green cutover and a restarted one never reuse an id; a working order
restored from the book keeps its id and fill count).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

from backend.messages import ExecReport, Order


@dataclass
class Working:
    order: Order
    venue_order_id: str
    filled: float = 0.0
    notional: float = 0.0
    fills: int = 0
    created_ns: int = field(default_factory=time.time_ns)

    @property
    def leaves(self) -> float:
        return max(0.0, self.order.quantity - self.filled)


class MatchingEngine:
    def __init__(self, venue: str = "paper", liquidity: float | None = None, session: str | None = None) -> None:
        self.venue = venue
        self.session = session or default_session()
        self.liquidity = liquidity
        self.working: dict[str, Working] = {}
        self.done: dict[str, ExecReport] = {}  # last report of finished orders (for queries)
        self.prices: dict[str, float] = {}
        self._ids = itertools.count(1)

    def _report(self, w: Working, kind: str, **kw: object) -> ExecReport:
        o = w.order
        return ExecReport(client_order_id=o.client_order_id, venue_order_id=w.venue_order_id,
                          kind=kind, account=o.account, symbol=o.symbol, side=o.side,  # type: ignore[arg-type]
                          cum_qty=w.filled, leaves_qty=w.leaves, ts_ns=time.time_ns(), **kw)  # type: ignore[arg-type]

    def place(self, order: Order) -> list[ExecReport]:
        if order.client_order_id in self.working or order.client_order_id in self.done:
            w = self.working.get(order.client_order_id)
            return [self.status(order.client_order_id)] if w or order.client_order_id in self.done else []
        w = Working(order, f"{self.venue}-{self.session}-{next(self._ids)}")
        price = self.prices.get(order.symbol)
        if price is None:
            rep = self._report(w, "rejected", reason=f"no market price for {order.symbol} yet")
            self.done[order.client_order_id] = rep
            return [rep]
        out = [self._report(w, "accepted")]
        if order.time_in_force == "FOK":
            crossing = self._crosses(order, price)
            avail = self.liquidity if self.liquidity is not None else order.quantity
            if not crossing or avail < order.quantity:
                rep = self._report(w, "canceled", reason="FOK: not fillable in full at once")
                self.done[order.client_order_id] = rep
                return out + [rep]
        self.working[order.client_order_id] = w
        out += self._match(w, price)
        if order.time_in_force in ("IOC", "FOK") and order.client_order_id in self.working:
            out.append(self._finish(w, "canceled", reason=f"{order.time_in_force}: rest canceled"))
        return out

    def cancel(self, client_order_id: str, reason: str = "canceled") -> list[ExecReport]:
        w = self.working.get(client_order_id)
        if w is None:
            return []
        return [self._finish(w, "canceled", reason=reason)]

    def status(self, client_order_id: str) -> ExecReport | None:
        w = self.working.get(client_order_id)
        if w is not None:
            return self._report(w, "status")
        return self.done.get(client_order_id)

    def on_price(self, symbol: str, price: float) -> list[ExecReport]:
        self.prices[symbol] = price
        out: list[ExecReport] = []
        for w in [w for w in self.working.values() if w.order.symbol == symbol]:
            out += self._match(w, price)
        return out

    @staticmethod
    def _crosses(o: Order, price: float) -> bool:
        if o.type == "market" or o.limit_price is None:
            return True
        return price <= o.limit_price if o.side == "buy" else price >= o.limit_price

    def _match(self, w: Working, price: float) -> list[ExecReport]:
        o = w.order
        if not self._crosses(o, price) or w.leaves <= 0:
            return []
        px = price if o.type == "market" or o.limit_price is None else o.limit_price
        qty = w.leaves if self.liquidity is None else min(w.leaves, self.liquidity)
        w.filled += qty
        w.notional += qty * px
        w.fills += 1
        rep = self._report(w, "fill", trade_id=f"{w.venue_order_id}-{w.fills}", fill_qty=qty, fill_price=px)
        out = [rep]
        if w.leaves <= 1e-12:
            del self.working[o.client_order_id]
            self.done[o.client_order_id] = rep
        return out

    def _finish(self, w: Working, kind: str, reason: str = "") -> ExecReport:
        self.working.pop(w.order.client_order_id, None)
        rep = self._report(w, kind, reason=reason)
        self.done[w.order.client_order_id] = rep
        return rep


_engines = itertools.count(1)


def default_session() -> str:
    """A session for an engine with no shared counter (the local exchange): its start time in
    microseconds, its pid and its number in the process, in base 36, so a restarted engine
    numbers from a new session."""
    return f"{_b36(time.time_ns() // 1000)}_{_b36(os.getpid())}_{_b36(next(_engines))}"


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if not n:
            return out
