"""A symbol's exchange filters (Binance's PRICE_FILTER, LOT_SIZE, MIN_NOTIONAL) from the
instrument master (`backend.refdata`): the tick and the step, parsing a price or a quantity
onto them (ints: a price in ticks, a quantity in steps), and rendering them back as Binance does
(strings with 8 decimals, always on the tick and the step).

A symbol the master does not list gets a tick from its price's magnitude and a step of 1e-8.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from backend.messages import Instrument

UNIT = 10**8  # every amount is rendered in units of 1e-8
NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
NUMBER_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
MIN_NOTIONAL = Decimal("5")  # quote currency, as Binance's USDT pairs
MAX_QTY = Decimal("9000000")


class FilterFailure(Exception):
    """An order that breaks a filter: `code` and `msg` are Binance's answer."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def fmt8(units: int) -> str:
    """An amount in units of 1e-8 as Binance renders it: '65000.01000000'."""
    sign = "-" if units < 0 else ""
    q, r = divmod(abs(units), UNIT)
    return f"{sign}{q}.{r:08d}"


def dec8(d: Decimal) -> str:
    """A Decimal rendered with 8 decimals (balances, quote amounts, commissions)."""
    return f"{d.quantize(Decimal('1e-8'), rounding='ROUND_DOWN'):.8f}"


def _units(x: Decimal) -> int:
    u = x * UNIT
    if u != u.to_integral_value() or u <= 0:
        raise ValueError(f"{x} is not a positive multiple of 1e-8")
    return int(u)


@dataclass(frozen=True)
class SymbolFilters:
    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_notional: Decimal = MIN_NOTIONAL
    max_qty: Decimal = MAX_QTY
    status: str = "TRADING"

    @property
    def tick_units(self) -> int:
        return _units(self.tick)

    @property
    def step_units(self) -> int:
        return _units(self.step)

    # -- rendering -----------------------------------------------------------------------------
    def price_str(self, ticks: int) -> str:
        return fmt8(ticks * self.tick_units)

    def qty_str(self, steps: int) -> str:
        return fmt8(steps * self.step_units)

    def price_dec(self, ticks: int) -> Decimal:
        return ticks * self.tick

    def qty_dec(self, steps: int) -> Decimal:
        return steps * self.step

    def price_float(self, ticks: int) -> float:
        return float(ticks * self.tick)

    def qty_float(self, steps: int) -> float:
        return float(steps * self.step)

    def notional(self, ticks: int, steps: int) -> Decimal:
        return (ticks * steps) * (self.tick * self.step)

    # -- parsing -------------------------------------------------------------------------------
    def ticks_of(self, price: Decimal) -> int:
        """A price on the tick, in ticks; FilterFailure (PRICE_FILTER) when it is off the tick or
        not positive."""
        n = price / self.tick
        if price <= 0 or n != n.to_integral_value():
            raise FilterFailure(-1013, "Filter failure: PRICE_FILTER")
        return int(n)

    def steps_of(self, qty: Decimal) -> int:
        """A quantity on the step, in steps; FilterFailure (LOT_SIZE) when it is off the step, under
        one step or over the maximum."""
        if qty <= 0:
            raise FilterFailure(-1013, "Invalid quantity.")
        n = qty / self.step
        if n != n.to_integral_value() or qty > self.max_qty:
            raise FilterFailure(-1013, "Filter failure: LOT_SIZE")
        return int(n)

    def nearest_ticks(self, price: float) -> int:
        """A float price (a trade print) snapped to the nearest tick, at least one tick."""
        return max(1, round(Decimal(repr(price)) / self.tick))

    def nearest_steps(self, qty: float) -> int:
        return max(1, round(Decimal(repr(qty)) / self.step))

    def check_notional(self, ticks: int, steps: int) -> None:
        if self.notional(ticks, steps) < self.min_notional:
            raise FilterFailure(-1013, "Filter failure: MIN_NOTIONAL")

    # -- exchangeInfo --------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "symbol": self.symbol,
            "status": self.status,
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt8(self.tick_units),
                    "maxPrice": "1000000.00000000",
                    "tickSize": fmt8(self.tick_units),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt8(self.step_units),
                    "maxQty": dec8(self.max_qty),
                    "stepSize": fmt8(self.step_units),
                },
                {
                    "filterType": "MIN_NOTIONAL",
                    "minNotional": dec8(self.min_notional),
                    "applyToMarket": True,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"],
        }


def parse_number(raw: str) -> Decimal | None:
    """A decimal parameter as Binance accepts it (digits, an optional fraction), or None."""
    if not NUMBER.match(raw):
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


def magnitude_tick(price: float) -> Decimal:
    """A tick for a symbol the master does not list: about six significant digits."""
    d = min(8, max(2, 6 - int(math.log10(max(price, 1e-6)))))
    return Decimal(1).scaleb(-d)


def split_symbol(symbol: str, quote: str = "USDT") -> tuple[str, str]:
    for q in (quote, "USDT", "USDC", "BTC", "ETH", "BNB"):
        if symbol.endswith(q) and len(symbol) > len(q):
            return symbol[: -len(q)], q
    return symbol, quote


def from_instrument(inst: Instrument) -> SymbolFilters:
    base, quote = split_symbol(inst.symbol, inst.currency)
    return SymbolFilters(
        inst.symbol,
        base,
        quote,
        Decimal(repr(inst.tick_size)),
        Decimal(repr(inst.lot_size)),
        status="TRADING" if inst.status == "trading" else "HALT",
    )


def for_symbols(
    symbols: Iterable[str],
    prices: dict[str, float],
    instruments: Iterable[Instrument] | None = None,
    step: Decimal | None = None,
) -> dict[str, SymbolFilters]:
    """Filters for `symbols`: from the instrument master (the shipped one by default), or from
    the start price's magnitude for a symbol it does not list. `step` overrides every step (the
    paper venue, whose quantities risk already checked against the lot size)."""
    if instruments is None:
        from backend.refdata.master import load_file

        instruments = load_file(None)
    known = {i.symbol: from_instrument(i) for i in instruments}
    out = {}
    for s in symbols:
        f = known.get(s)
        if f is None:
            base, quote = split_symbol(s)
            f = SymbolFilters(s, base, quote, magnitude_tick(prices.get(s, 100.0)), Decimal("1e-8"))
        if step is not None:
            f = SymbolFilters(f.symbol, f.base, f.quote, f.tick, step, Decimal(0), Decimal(10**15), f.status)
        out[s] = f
    return out
