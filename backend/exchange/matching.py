"""The paper venue (live-gateway's `venue = "paper"`): the exchange's matching engine
(`backend.exchange.engine`) against a synthetic book at the live price.

The book: on every price update of a symbol (the last trade price from md.ticks) a synthetic
market maker quotes both sides at that price, on the symbol's tick (the instrument master's):
an ask and a bid of `liquidity` each (unlimited when None). So:

- a market order, or a limit order that is marketable on arrival, fills at the last price (the
  resting quote's price), never at its own limit: a buy limit at 100,000 with the price at 3,213
  fills at 3,213;
- a limit order that does not cross rests in the book; when the price later moves through it,
  the new quote takes it at the order's own price (it is the resting, maker side), at most
  `liquidity` per update, so a large order fills partially over several updates;
- IOC fills what it can at once and cancels the rest; FOK fills whole at once or is canceled;
  what a market order cannot fill (only with `liquidity` set) is canceled, as on Binance.
- Quantities must be positive and finite (risk checks them against the lot size); prices and
  quantities come back on the tick and on a step of 1e-8.

Paper orders of one venue do not trade with each other: each fills against the market.

Ids are unique across engines: venue order ids are `<venue>-<session>-<n>` and trade ids
`<venue order id>-<fill number>`, where the session names this engine among every engine that
ever numbered orders for the venue (the live-gateway takes it from a Redis counter, so a second
instance during a blue/green cutover and a restarted one never reuse an id; a working order
restored from the book keeps its id and fill count).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal

from backend.exchange.accounts import Accounts
from backend.exchange.book import BUY, SELL
from backend.exchange.engine import Engine, Execution, OrderRec, Reject
from backend.exchange.filters import SymbolFilters, for_symbols, split_symbol
from backend.messages import ExecReport, Order

PAPER_STEP = Decimal("1e-8")
UNLIMITED = 10**18  # steps: the market maker's quote without a liquidity limit
USERS, MAKER = "paper", "paper-mm"


@dataclass
class Working:
    order: Order
    venue_order_id: str
    filled: float = 0.0
    notional: float = 0.0
    fills: int = 0
    created_ns: int = field(default_factory=time.time_ns)
    rec: OrderRec | None = None

    @property
    def leaves(self) -> float:
        return max(0.0, self.order.quantity - self.filled)


class MatchingEngine:
    def __init__(
        self,
        venue: str = "paper",
        liquidity: float | None = None,
        session: str | None = None,
        instruments: list | None = None,
    ) -> None:
        self.venue = venue
        self.session = session or default_session()
        self.liquidity = liquidity
        self.working: dict[str, Working] = {}
        self.done: dict[str, ExecReport] = {}  # last report of finished orders (for queries)
        self.prices: dict[str, float] = {}
        self.engine = Engine(
            {}, Accounts(unlimited=(USERS, MAKER)), maker_fee=Decimal(0), taker_fee=Decimal(0), keep_prints=False
        )
        self._instruments = instruments
        self._quoted: dict[str, int] = {}
        self._ids = itertools.count(1)

    # -- symbols and the synthetic quotes ------------------------------------------------------
    def filters(self, symbol: str) -> SymbolFilters:
        """The symbol's filters: its tick from the instrument master (1e-8 for a symbol the master
        does not list: the prints are taken as they come), a step of 1e-8."""
        f = self.engine.filters.get(symbol)
        if f is None:
            master = self._instruments if self._instruments is not None else _master()
            if any(i.symbol == symbol for i in master):
                f = for_symbols([symbol], {}, master, step=PAPER_STEP)[symbol]
            else:
                base, quote = split_symbol(symbol)
                f = SymbolFilters(symbol, base, quote, PAPER_STEP, PAPER_STEP, Decimal(0), Decimal(10**15))
            self.engine.add_symbol(f)
        return f

    def _requote(self, symbol: str) -> list[Execution]:
        px = self.prices.get(symbol)
        if px is None or not math.isfinite(px) or px <= 0:
            return []
        f = self.filters(symbol)
        ticks = f.nearest_ticks(px)
        size = UNLIMITED if self.liquidity is None else max(1, int(Decimal(repr(self.liquidity)) / f.step))
        self._quoted[symbol] = ticks
        return self.engine.quote(MAKER, symbol, [(SELL, ticks, size), (BUY, ticks, size)])

    def on_price(self, symbol: str, price: float) -> list[ExecReport]:
        self.prices[symbol] = price
        return self._reports(self._requote(symbol))

    # -- orders --------------------------------------------------------------------------------
    def place(self, order: Order) -> list[ExecReport]:
        c = order.client_order_id
        if c in self.working or c in self.done:
            st = self.status(c)
            return [st] if st else []
        w = Working(order, f"{self.venue}-{self.session}-{next(self._ids)}")
        if self.prices.get(order.symbol) is None:
            return [self._reject(w, f"no market price for {order.symbol} yet")]
        if not (math.isfinite(order.quantity) and order.quantity > 0):
            return [self._reject(w, f"quantity must be a positive number, not {order.quantity:g}")]
        limit = order.limit_price
        if order.type == "limit" and (limit is None or not math.isfinite(limit) or limit <= 0):
            return [self._reject(w, f"a limit order needs a positive limit price, not {limit}")]
        return self._enter(w)

    def restore(self, w: Working) -> list[ExecReport]:
        """A working order from the saved book, back in the book with what it has left."""
        return self._enter(w, restored=True)

    def _enter(self, w: Working, restored: bool = False) -> list[ExecReport]:
        o = w.order
        f = self.filters(o.symbol)
        if o.symbol in self.prices and o.symbol not in self._quoted:
            self._requote(o.symbol)
        steps = f.nearest_steps(w.leaves if restored else o.quantity)
        tif = o.time_in_force if o.time_in_force in ("IOC", "FOK") else "GTC"
        ticks = f.nearest_ticks(o.limit_price) if o.type == "limit" and o.limit_price else None
        self.working[o.client_order_id] = w
        try:
            rec, execs = self.engine.place(
                USERS,
                o.symbol,
                BUY if o.side == "buy" else SELL,
                "LIMIT" if ticks else "MARKET",
                steps,
                ticks,
                tif,
                client_order_id=o.client_order_id,
            )
        except Reject as exc:
            self.working.pop(o.client_order_id, None)
            return [self._reject(w, exc.msg)]
        w.rec = rec
        reps = self._reports(execs)
        return reps[1:] if restored and reps and reps[0].kind == "accepted" else reps

    def cancel(self, client_order_id: str, reason: str = "canceled") -> list[ExecReport]:
        w = self.working.get(client_order_id)
        if w is None:
            return []
        if w.rec is not None and w.rec.is_open:
            self.engine.cancel(w.rec)
        return [self._finish(w, "canceled", reason)]

    def status(self, client_order_id: str) -> ExecReport | None:
        w = self.working.get(client_order_id)
        if w is not None:
            return self._report(w, "status")
        return self.done.get(client_order_id)

    # -- reports -------------------------------------------------------------------------------
    def _report(self, w: Working, kind: str, **kw: object) -> ExecReport:
        o = w.order
        leaves = w.leaves
        if w.rec is not None:
            leaves = self.engine.filters[o.symbol].qty_float(w.rec.leaves)
        return ExecReport(
            client_order_id=o.client_order_id,
            venue_order_id=w.venue_order_id,
            kind=kind,  # type: ignore[arg-type]
            account=o.account,
            symbol=o.symbol,
            side=o.side,
            cum_qty=w.filled,
            leaves_qty=leaves,
            ts_ns=time.time_ns(),
            **kw,  # type: ignore[arg-type]
        )

    def _reject(self, w: Working, reason: str) -> ExecReport:
        rep = self._report(w, "rejected", reason=reason)
        self.done[w.order.client_order_id] = rep
        return rep

    def _finish(self, w: Working, kind: str, reason: str = "") -> ExecReport:
        self.working.pop(w.order.client_order_id, None)
        rep = self._report(w, kind, reason=reason)
        self.done[w.order.client_order_id] = rep
        return rep

    def _reports(self, execs: list[Execution]) -> list[ExecReport]:
        out: list[ExecReport] = []
        for e in execs:
            if e.order.account != USERS:
                continue
            w = self.working.get(e.order.client_order_id)
            if w is None:
                continue
            if e.exec_type == "NEW":
                out.append(self._report(w, "accepted"))
            elif e.exec_type == "TRADE" and e.fill is not None:
                f = self.engine.filters[w.order.symbol]
                qty, px = f.qty_float(e.fill.qty), f.price_float(e.fill.price)
                w.filled += qty
                w.notional += qty * px
                w.fills += 1
                rep = self._report(w, "fill", trade_id=f"{w.venue_order_id}-{w.fills}", fill_qty=qty, fill_price=px)
                if e.status == "FILLED":
                    rep = msgspec_replace(rep, leaves_qty=0.0)
                    self.working.pop(w.order.client_order_id, None)
                    self.done[w.order.client_order_id] = rep
                out.append(rep)
            elif e.exec_type in ("EXPIRED", "CANCELED"):
                o = w.order
                if o.type == "market":
                    why = "market: no more liquidity at the last price; rest canceled"
                elif o.time_in_force == "FOK" and e.executed == 0:
                    why = "FOK: not fillable in full at once"
                else:
                    why = f"{o.time_in_force}: rest canceled"
                out.append(self._finish(w, "canceled", reason=why))
        return out


def msgspec_replace(rep: ExecReport, **kw: object) -> ExecReport:
    import msgspec

    return msgspec.structs.replace(rep, **kw)


_MASTER: list | None = None


def _master() -> list:
    """The shipped instrument master (ticks of the known symbols), read once."""
    global _MASTER
    if _MASTER is None:
        from backend.refdata.master import load_file

        try:
            _MASTER = load_file(None)
        except Exception:  # noqa: BLE001
            _MASTER = []
    return _MASTER


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
