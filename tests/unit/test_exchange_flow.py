"""The local exchange's flow looks like its market: each symbol its own share of the trades and
its own trade sizes (log-normal notionals around its median), not the same ~0.5 units everywhere
(the console showed ~39,500 BTC and ~39,500 DOGE of volume alike)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from backend.exchange.feed import TradeFeed
from backend.marketdata.symbols import FLOWS


def test_each_symbol_trades_like_its_market() -> None:
    feed = TradeFeed()
    trades = feed.generate(60_000, 0)
    qty: dict[str, list[float]] = defaultdict(list)
    usd: dict[str, float] = defaultdict(float)
    for sym, ev in trades:
        q, p = float(ev.q), float(ev.p)
        qty[sym].append(q)
        usd[sym] += q * p
        step = float(feed.filters[sym].step)
        assert q > 0 and abs(q / step - round(q / step)) < 1e-6, (sym, q, step)  # on the step
    volume = {s: sum(v) for s, v in qty.items()}
    # BTC: a fraction of a coin per trade; DOGE: hundreds
    assert statistics.median(qty["BTCUSDT"]) < 0.1 < 100 < statistics.median(qty["DOGEUSDT"])
    assert volume["DOGEUSDT"] > 1000 * volume["BTCUSDT"]
    # ... while BTC carries the most money and the most trades, as on a real venue
    assert max(usd, key=usd.__getitem__) == "BTCUSDT" and usd["BTCUSDT"] > 10 * usd["DOGEUSDT"]
    assert max(qty, key=lambda s: len(qty[s])) == "BTCUSDT"
    # each symbol's median notional near its own median (log-normal around it)
    for sym, flow in FLOWS.items():
        med = statistics.median(q * float(feed.prices[feed.config.symbols.index(sym)]) for q in qty[sym])
        assert flow.median_usd / 2 < med < flow.median_usd * 2, (sym, med, flow.median_usd)
