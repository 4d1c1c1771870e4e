"""The matching engine: an order book per symbol (`backend.exchange.book`), price-time priority,
the exchange filters (`backend.exchange.filters`) and balances (`backend.exchange.accounts`).

- A marketable order takes the resting orders at *their* prices, best level first, oldest first
  within a level, across as many levels as it needs (one trade per resting order it meets).
- LIMIT GTC rests what it does not fill; IOC expires the rest; FOK fills whole at once or expires
  without trading; LIMIT_MAKER is rejected if it would take. MARKET fills by `quantity` or spends
  up to `quoteOrderQty`, and expires what the book cannot fill.
- An order locks what it may spend (a limit buy its quote at the limit price, a sell its base);
  each trade moves base and quote between the two accounts and charges each side a commission
  (maker or taker rate) in the asset it receives. What a finished order leaves locked is freed.
- The accounts the Accounts set calls unlimited are the exchange's own market makers: their
  balances are not kept, their finished orders are not remembered, and they never trade with
  themselves (`quote` replaces their resting quotes).

Every call returns the executions it made (`Execution`: an order's state right after one event:
NEW, TRADE, CANCELED, EXPIRED), which the REST answers, the user data stream and the paper venue's
reports are built from; the public trades are kept in `prints` for the market data streams.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from backend.exchange.accounts import Accounts, InsufficientBalance
from backend.exchange.book import BUY, SELL, Book, Resting
from backend.exchange.filters import FilterFailure, SymbolFilters

FEE = Decimal("0.001")  # maker and taker, as Binance's base tier
OPEN = ("NEW", "PARTIALLY_FILLED")


class Reject(FilterFailure):
    """An order or cancel the engine refuses: Binance's code and message."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class OrderRec:
    symbol: str
    order_id: int
    client_order_id: str
    account: str
    side: str
    type: str  # LIMIT, LIMIT_MAKER, MARKET
    tif: str  # GTC, IOC, FOK
    price: int | None  # ticks
    orig_qty: int  # steps (0: a MARKET order by quote quantity)
    quote_qty: Decimal | None = None  # origQuoteOrderQty
    executed: int = 0
    cum_quote: Decimal = Decimal(0)
    status: str = "NEW"
    time_ms: int = 0
    update_ms: int = 0
    locked: Decimal = Decimal(0)
    lock_asset: str = ""
    resting: Resting | None = None
    trades: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def leaves(self) -> int:
        return max(0, self.orig_qty - self.executed)


@dataclass(frozen=True)
class Fill:
    """One side of one trade, as the account that made it sees it."""

    symbol: str
    trade_id: int
    order_id: int
    account: str
    price: int
    qty: int
    quote: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool


@dataclass(frozen=True)
class Execution:
    """An order right after one event: `exec_type` NEW, TRADE, CANCELED or EXPIRED, with the
    order's status and totals at that moment, and the fill for a TRADE."""

    order: OrderRec
    exec_type: str
    status: str
    executed: int
    cum_quote: Decimal
    time_ms: int
    fill: Fill | None = None
    reason: str = ""


@dataclass(frozen=True)
class Print:
    """A public trade (the market data streams' `trade`)."""

    symbol: str
    trade_id: int
    price: int
    qty: int
    time_ms: int
    buyer_maker: bool
    taker_order: int = 0


@dataclass
class Engine:
    filters: dict[str, SymbolFilters]
    accounts: Accounts = field(default_factory=Accounts)
    maker_fee: Decimal = FEE
    taker_fee: Decimal = FEE
    trade_ids: Callable[[str], int] | None = None  # symbol -> next trade id (the feed's sequence)
    first_order_id: int = 1
    keep_prints: bool = True

    def __post_init__(self) -> None:
        self.books = {s: Book(s) for s in self.filters}
        self.orders: dict[tuple[str, int], OrderRec] = {}
        self.open: dict[str, dict[int, OrderRec]] = {}  # account -> order id -> open order
        self.by_account: dict[str, list[OrderRec]] = {}
        self.fills: dict[tuple[str, str], list[Fill]] = {}  # (account, symbol) -> fills, oldest first
        self.prints: list[Print] = []
        self._order_ids = itertools.count(self.first_order_id)
        self._trade_counters: dict[str, itertools.count[int]] = {}

    def add_symbol(self, f: SymbolFilters) -> None:
        """Trade `f.symbol` from now on (the paper venue learns its symbols from the prices)."""
        self.filters[f.symbol] = f
        self.books.setdefault(f.symbol, Book(f.symbol))

    # -- look-ups ------------------------------------------------------------------------------
    def order(
        self, symbol: str, order_id: int | None = None, client_order_id: str | None = None, account: str | None = None
    ) -> OrderRec | None:
        """An order of `symbol` by id or by client order id (the newest with it), or None."""
        if order_id is not None:
            rec = self.orders.get((symbol, order_id))
            return rec if rec is not None and (account is None or rec.account == account) else None
        if client_order_id is None or account is None:
            return None
        for rec in reversed(self.by_account.get(account, [])):
            if rec.symbol == symbol and rec.client_order_id == client_order_id:
                return rec
        return None

    def open_orders(self, account: str, symbol: str | None = None) -> list[OrderRec]:
        return [o for o in self.open.get(account, {}).values() if symbol is None or o.symbol == symbol]

    def take_prints(self) -> list[Print]:
        out, self.prints = self.prints, []
        return out

    def _next_trade_id(self, symbol: str) -> int:
        if self.trade_ids is not None:
            return self.trade_ids(symbol)
        c = self._trade_counters.get(symbol)
        if c is None:
            c = self._trade_counters[symbol] = itertools.count(1)
        return next(c)

    # -- orders --------------------------------------------------------------------------------
    def place(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str,
        qty: int = 0,
        price: int | None = None,
        tif: str = "GTC",
        quote_qty: Decimal | None = None,
        client_order_id: str = "",
        test: bool = False,
        at_ms: int | None = None,
    ) -> tuple[OrderRec, list[Execution]]:
        """Place an order (quantities in steps, prices in ticks); Reject with Binance's code when
        it breaks a filter, cannot be paid for or repeats an open client order id. `test`
        validates only (`order/test`)."""
        f = self.filters.get(symbol)
        if f is None:
            raise Reject(-1121, "Invalid symbol.")
        if f.status != "TRADING":
            raise Reject(-1013, "Market is closed.")
        book = self.books[symbol]
        if type == "MARKET":
            tif = "IOC"
        if client_order_id and any(
            o.client_order_id == client_order_id and o.symbol == symbol for o in self.open.get(account, {}).values()
        ):
            raise Reject(-2010, "Duplicate order sent.")
        if type != "MARKET" and (qty <= 0 or price is None):
            raise Reject(-1013, "Invalid quantity.")
        if type == "MARKET" and qty <= 0 and (quote_qty is None or quote_qty <= 0):
            raise Reject(-1013, "Invalid quantity.")
        if price is not None and type != "MARKET":
            f.check_notional(price, qty)
        t = now_ms() if at_ms is None else at_ms
        rec = OrderRec(
            symbol,
            0,
            client_order_id,
            account,
            side,
            type,
            tif,
            price if type != "MARKET" else None,
            qty,
            quote_qty if type == "MARKET" and qty <= 0 else None,
            time_ms=t,
            update_ms=t,
        )
        plan = self._plan(book, rec)
        planned = sum(q for _, q, _ in plan)
        cost = sum((f.notional(p, q) for _, q, p in plan), Decimal(0))
        if type == "LIMIT_MAKER" and plan:
            raise Reject(-2010, "Order would immediately match and take.")
        if type == "MARKET":
            if not plan:
                raise Reject(-2010, "Order book is empty; no liquidity for a MARKET order.")
            if cost < f.min_notional:
                raise Reject(-1013, "Filter failure: MIN_NOTIONAL")
        self._check_funds(rec, f, cost, planned)
        if test:
            return rec, []
        rec.order_id = next(self._order_ids)
        self._remember(rec)
        self._lock(rec, f)
        out = [self._exec(rec, "NEW", t)]
        if tif == "FOK" and planned < rec.orig_qty:
            return rec, out + self._finish(rec, "EXPIRED", t)
        for maker, q, p in plan:
            out += self._trade(book, f, rec, maker, q, p, t)
        if rec.status == "FILLED":
            self._close(rec)
        elif rec.type == "MARKET" or rec.tif in ("IOC", "FOK"):
            out += self._finish(rec, "EXPIRED", t)
        elif rec.is_open:
            rec.resting = Resting(rec.order_id, account, side, rec.price, rec.leaves, rec)  # type: ignore[arg-type]
            book.add(rec.resting)
        return rec, out

    def cancel(self, rec: OrderRec, at_ms: int | None = None) -> list[Execution]:
        """Cancel an open order; Reject -2011 when it is not open."""
        if not rec.is_open or (rec.symbol, rec.order_id) not in self.orders:
            raise Reject(-2011, "Unknown order sent.")
        return self._finish(rec, "CANCELED", now_ms() if at_ms is None else at_ms)

    def cancel_all(self, account: str, symbol: str) -> list[Execution]:
        out: list[Execution] = []
        for rec in self.open_orders(account, symbol):
            out += self.cancel(rec)
        return out

    def quote(self, account: str, symbol: str, levels: Iterable[tuple[str, int, int]]) -> list[Execution]:
        """A market maker's quotes on `symbol`: its resting orders there are replaced by one LIMIT
        GTC order per (side, price ticks, qty steps) (a quote already resting whole stays); a
        quote that crosses other accounts' resting orders trades with them at their prices first."""
        t = now_ms()
        out: list[Execution] = []
        want = [(side, price, qty) for side, price, qty in levels if qty > 0 and price > 0]
        keep = {(side, price, qty) for side, price, qty in want}
        for rec in self.open_orders(account, symbol):
            if (rec.side, rec.price, rec.leaves) in keep and rec.executed == 0:
                keep.discard((rec.side, rec.price, rec.leaves))  # the same quote: it keeps its place
            else:
                self._finish(rec, "CANCELED", t)
        for side, price, qty in want:
            if (side, price, qty) not in keep:
                continue
            _, ex = self.place(account, symbol, side, "LIMIT", qty, price, "GTC", at_ms=t)
            out += [e for e in ex if e.order.account != account]
        return out

    # -- internals -----------------------------------------------------------------------------
    def _plan(self, book: Book, rec: OrderRec) -> list[tuple[Resting, int, int]]:
        """What `rec` would take: (resting order, quantity, price), in matching order."""
        f = self.filters[rec.symbol]
        limit = rec.price if rec.type != "MARKET" else None
        by_quote = rec.quote_qty is not None
        left_qty = rec.orig_qty
        left_quote = rec.quote_qty or Decimal(0)
        skip_self = rec.account in self.accounts.unlimited
        plan: list[tuple[Resting, int, int]] = []
        for price, queue in book.crossing(rec.side, limit):
            for r in queue:
                if skip_self and r.account == rec.account:
                    continue
                q = min(r.leaves, int(left_quote / f.notional(price, 1)) if by_quote else left_qty)
                if q <= 0:
                    return plan
                plan.append((r, q, price))
                if by_quote:
                    left_quote -= f.notional(price, q)
                else:
                    left_qty -= q
                    if left_qty <= 0:
                        return plan
        return plan

    def _check_funds(self, rec: OrderRec, f: SymbolFilters, cost: Decimal, planned: int) -> None:
        acc = self.accounts
        if rec.account in acc.unlimited:
            return
        if not acc.known(rec.account):
            raise Reject(-2010, "Account has insufficient balance for requested action.")
        if rec.side == BUY:
            need = cost if rec.type == "MARKET" else f.notional(rec.price, rec.orig_qty)  # type: ignore[arg-type]
            have = acc.balance(rec.account, f.quote)[0]
        else:
            need = f.qty_dec(planned if rec.type == "MARKET" and rec.quote_qty is not None else rec.orig_qty)
            have = acc.balance(rec.account, f.base)[0]
        if have < need:
            raise Reject(-2010, "Account has insufficient balance for requested action.")

    def _remember(self, rec: OrderRec) -> None:
        self.orders[(rec.symbol, rec.order_id)] = rec
        self.open.setdefault(rec.account, {})[rec.order_id] = rec
        if rec.account not in self.accounts.unlimited:
            self.by_account.setdefault(rec.account, []).append(rec)

    def _lock(self, rec: OrderRec, f: SymbolFilters) -> None:
        if rec.type == "MARKET":
            return
        if rec.side == BUY:
            rec.lock_asset, rec.locked = f.quote, f.notional(rec.price, rec.orig_qty)  # type: ignore[arg-type]
        else:
            rec.lock_asset, rec.locked = f.base, f.qty_dec(rec.orig_qty)
        try:
            self.accounts.lock(rec.account, rec.lock_asset, rec.locked)
        except InsufficientBalance:
            raise Reject(-2010, "Account has insufficient balance for requested action.") from None

    def _exec(self, rec: OrderRec, kind: str, t: int, fill: Fill | None = None, reason: str = "") -> Execution:
        return Execution(rec, kind, rec.status, rec.executed, rec.cum_quote, t, fill, reason)

    def _trade(
        self, book: Book, f: SymbolFilters, taker: OrderRec, r: Resting, qty: int, price: int, t: int
    ) -> list[Execution]:
        maker: OrderRec = r.ref  # type: ignore[assignment]
        tid = self._next_trade_id(f.symbol)
        book.reduce(r, qty)
        out = []
        quote = f.notional(price, qty)
        for rec, is_maker in ((taker, False), (maker, True)):
            rate = self.maker_fee if is_maker else self.taker_fee
            buyer = rec.side == BUY
            base_amt = f.qty_dec(qty)
            fee_asset = f.base if buyer else f.quote
            fee = ((base_amt if buyer else quote) * rate).quantize(Decimal("1e-8"))
            acc = self.accounts
            if rec.account not in acc.unlimited:
                pay_asset, pay = (f.quote, quote) if buyer else (f.base, base_amt)
                if rec.type == "MARKET":
                    acc.spend_free(rec.account, pay_asset, pay)
                else:
                    acc.spend_locked(rec.account, pay_asset, pay)
                    rec.locked -= pay
                acc.credit(rec.account, fee_asset, (base_amt if buyer else quote) - fee)
            else:
                fee = Decimal(0)
            rec.executed += qty
            rec.cum_quote += quote
            rec.update_ms = t
            rec.trades += 1
            rec.status = "FILLED" if (rec.quote_qty is None and rec.executed >= rec.orig_qty) else "PARTIALLY_FILLED"
            fill = Fill(f.symbol, tid, rec.order_id, rec.account, price, qty, quote, fee, fee_asset, t, buyer, is_maker)
            if rec.account not in acc.unlimited:
                self.fills.setdefault((rec.account, f.symbol), []).append(fill)
            if rec is maker and rec.status == "FILLED":
                self._close(rec)
            out.append(self._exec(rec, "TRADE", t, fill))
        if self.keep_prints:
            self.prints.append(Print(f.symbol, tid, price, qty, t, taker.side == SELL, taker.order_id))
        return out

    def _close(self, rec: OrderRec) -> None:
        """An order that is finished: its lock freed, out of the book and the open orders."""
        if rec.resting is not None:
            if rec.resting.leaves > 0:
                self.books[rec.symbol].remove(rec.resting)
            rec.resting = None
        if rec.locked > 0:
            self.accounts.unlock(rec.account, rec.lock_asset, rec.locked)
            rec.locked = Decimal(0)
        self.open.get(rec.account, {}).pop(rec.order_id, None)
        if rec.account in self.accounts.unlimited:
            self.orders.pop((rec.symbol, rec.order_id), None)

    def _finish(self, rec: OrderRec, status: str, t: int, reason: str = "") -> list[Execution]:
        if status == "EXPIRED" and rec.quote_qty is not None and rec.executed > 0:
            status = "FILLED"  # a quote-quantity order that spent what the book let it spend
        rec.status = status
        rec.update_ms = t
        self._close(rec)
        return [self._exec(rec, status, t, reason=reason)]
