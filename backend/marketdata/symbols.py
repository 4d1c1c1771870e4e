"""The default instrument universe of the local exchange and the normalizer, with start prices
and how each trades (the local exchange's flow should look like its market, not the same size
everywhere)."""

from typing import NamedTuple

START_PRICES: dict[str, float] = {
    "BTCUSDT": 65000.0,
    "ETHUSDT": 3200.0,
    "SOLUSDT": 150.0,
    "BNBUSDT": 580.0,
    "XRPUSDT": 0.52,
    "ADAUSDT": 0.45,
    "DOGEUSDT": 0.12,
    "AVAXUSDT": 35.0,
    "LINKUSDT": 14.0,
    "DOTUSDT": 7.0,
}

DEFAULT_SYMBOLS: list[str] = list(START_PRICES)


class Flow(NamedTuple):
    """How a symbol trades on the local exchange."""

    share: float
    """Its share of all trades (weights, normalised over the symbols traded)."""
    median_usd: float
    """The median trade's notional, in USDT; sizes are log-normal around it."""
    sigma: float
    """The spread of log(notional): a heavy tail of large trades."""


FLOWS: dict[str, Flow] = {
    # roughly as on a large spot venue: BTC and ETH take most trades and the largest tickets;
    # small coins trade in many small tickets of many units each
    "BTCUSDT": Flow(0.28, 900.0, 1.8),
    "ETHUSDT": Flow(0.18, 600.0, 1.7),
    "SOLUSDT": Flow(0.10, 300.0, 1.6),
    "BNBUSDT": Flow(0.07, 350.0, 1.5),
    "XRPUSDT": Flow(0.09, 200.0, 1.6),
    "ADAUSDT": Flow(0.05, 120.0, 1.5),
    "DOGEUSDT": Flow(0.10, 100.0, 1.7),
    "AVAXUSDT": Flow(0.04, 150.0, 1.5),
    "LINKUSDT": Flow(0.05, 150.0, 1.5),
    "DOTUSDT": Flow(0.04, 100.0, 1.5),
}
DEFAULT_FLOW = Flow(0.04, 100.0, 1.5)
"""A symbol not listed: a small market."""
