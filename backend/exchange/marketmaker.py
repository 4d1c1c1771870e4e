"""The local exchange's synthetic liquidity: a market maker that quotes `levels` price levels a
side around the random walk's price (the best ask and bid `spread_bp` apart, the levels `gap_bp`
apart, at least a tick; `notional` quote currency a level, at least one step), requoted as the
price moves (at most every `requote_s` per symbol; the levels sit on a grid, so a small move
replaces only a few), so marketable orders fill at resting prices
and `depth` / `bookTicker` have content. Its account is unlimited: no balances, and it never
trades with itself; its quotes trade with users' resting orders the price moved through."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from backend.exchange.book import BUY, SELL
from backend.exchange.engine import Engine, Execution

ACCOUNT = "mm"


@dataclass
class MakerConfig:
    levels: int = 10
    spread_bp: float = 2.0
    gap_bp: float = 1.0
    notional: float = 50_000.0
    requote_s: float = 0.1


class MarketMaker:
    def __init__(self, engine: Engine, config: MakerConfig | None = None) -> None:
        self.engine = engine
        self.config = config or MakerConfig()
        self.quoted: dict[str, tuple[int, float]] = {}  # symbol -> (mid ticks, when)
        engine.accounts.unlimited.add(ACCOUNT)

    def levels(self, symbol: str, price: float) -> list[tuple[str, int, int]]:
        c = self.config
        f = self.engine.filters[symbol]
        tick = float(f.tick)
        mid = price / tick
        half = max(1.0, mid * c.spread_bp / 2e4)
        gap = max(1, round(mid * c.gap_bp / 1e4))
        size = max(1, int(c.notional / price / float(f.step)))
        # levels on a grid of `gap` ticks: a small move requotes only the levels at the edges
        best_ask = max(gap, math.ceil((mid + half) / gap) * gap)
        best_bid = max(gap, math.floor((mid - half) / gap) * gap)
        out = []
        for k in range(c.levels):
            out.append((SELL, best_ask + k * gap, size))
            if best_bid - k * gap > 0:
                out.append((BUY, best_bid - k * gap, size))
        return out

    def refresh(self, symbol: str, price: float, force: bool = False, now: bool = False) -> list[Execution]:
        """Requote `symbol` around `price` if it moved a tick (or `force`) and the last quote is
        old enough (or `now`: an order is about to meet the quotes); the users' executions that
        the new quotes made."""
        if symbol not in self.engine.filters or not (price > 0):
            return []
        t = time.monotonic()
        mid = round(price / float(self.engine.filters[symbol].tick))
        last = self.quoted.get(symbol)
        if last is not None and not force and (last[0] == mid or (not now and t - last[1] < self.config.requote_s)):
            return []
        self.quoted[symbol] = (mid, t)
        return self.engine.quote(ACCOUNT, symbol, self.levels(symbol, price))
