"""The backtest engine: prices -> bars -> a strategy's target positions -> PnL, Sharpe, drawdown.

No look-ahead: the position held over bar t was decided from prices up to the close of bar t-1,
and it trades at that close (paying `fee_bps` on the traded notional).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from backend.backtest.names import PARAMS, STRATEGY_NAMES
from backend.backtest.result import BacktestResult

YEAR_S = 365 * 24 * 3600


def _momentum(close: pd.Series, p: dict[str, Any]) -> pd.Series:
    ret = close.pct_change(int(p.get("window", 5)))
    th = float(p.get("threshold", 0.0))
    return pd.Series(np.where(ret > th, 1.0, np.where(ret < -th, -1.0, 0.0)), index=close.index)


def _meanrev(close: pd.Series, p: dict[str, Any]) -> pd.Series:
    return -_momentum(close, p)


def _hold(close: pd.Series, p: dict[str, Any]) -> pd.Series:
    return pd.Series(1.0, index=close.index)


STRATEGIES: dict[str, Callable[[pd.Series, dict[str, Any]], pd.Series]] = {
    "momentum": _momentum,
    "meanrev": _meanrev,
    "buy-hold": _hold,
}
assert set(STRATEGIES) == set(STRATEGY_NAMES)


MODEL_PREFIX = "model:"


def check(strategy: str, params: dict[str, Any]) -> None:
    """ValueError naming what is wrong with a job's strategy or parameters."""
    if strategy not in STRATEGIES and not (strategy.startswith(MODEL_PREFIX) and len(strategy) > len(MODEL_PREFIX)):
        raise ValueError(
            f"unknown strategy {strategy!r}; known: {', '.join(sorted(STRATEGIES))}, "
            f"or model:NAME (the registry's production model on the stored features)"
        )
    unknown = set(params) - PARAMS
    if unknown:
        raise ValueError(f"unknown parameters {', '.join(sorted(unknown))}; known: {', '.join(sorted(PARAMS))}")
    for k, v in params.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"parameter {k} must be a number, not {v!r}")
    for k in ("window", "quantity", "bar_s", "capital"):
        if k in params and params[k] <= 0:
            raise ValueError(f"parameter {k} must be positive, not {params[k]}")


def _from_signals(signals: pd.DataFrame, sym: str, bar: str, index: pd.DatetimeIndex) -> pd.Series:
    """A model's signals as a target in {-1, 0, 1}: buy long, sell short, neutral keeps the
    position (as the marketplace trades them); each bar takes the last signal known in it."""
    g = signals[signals.symbol == sym]
    if g.empty:
        return pd.Series(0.0, index=index)
    side = g.set_index(pd.to_datetime(g.ts_ns, utc=True)).side.sort_index().replace(0.0, np.nan)
    return side.resample(bar).last().ffill().reindex(index).ffill().fillna(0.0)


def run(
    prices: pd.DataFrame,
    strategy: str,
    params: dict[str, Any],
    *,
    job_id: str = "",
    start_ns: int = 0,
    end_ns: int = 0,
    signals: pd.DataFrame | None = None,
) -> BacktestResult:
    """`prices`: (symbol, ts_ns, price) rows; for a `model:NAME` strategy, `signals`
    (symbol, ts_ns, side in -1/0/1). Returns the result; ValueError if there is no data."""
    check(strategy, params)
    if strategy.startswith(MODEL_PREFIX) and (signals is None or signals.empty):
        raise ValueError(f"no signals from {strategy} in the range: nothing to backtest")
    if prices.empty:
        raise ValueError("no prices in the range: nothing to backtest")
    bar = f"{int(params.get('bar_s', 1) * 1000)}ms"
    qty = float(params.get("quantity", 1.0))
    fee = float(params.get("fee_bps", 1.0)) / 1e4
    capital = float(params.get("capital", 100_000.0))
    pnl_parts, per_symbol, trades = [], {}, 0
    for sym, g in prices.groupby("symbol"):
        close = g.set_index(pd.to_datetime(g.ts_ns, utc=True)).price.sort_index().resample(bar).last().ffill()
        if len(close) < 2:
            continue
        if signals is not None and strategy.startswith(MODEL_PREFIX):
            target = _from_signals(signals, str(sym), bar, close.index) * qty
        else:
            target = STRATEGIES[strategy](close, params).fillna(0.0) * qty
        held = target.shift(1).fillna(0.0)  # decided at the previous close
        traded = held.diff().fillna(held).abs()
        pnl = held * close.diff().fillna(0.0) - fee * traded * close.shift(1).fillna(close)
        trades += int((traded > 0).sum())
        per_symbol[str(sym)] = round(float(pnl.sum()), 6)
        pnl_parts.append(pnl.rename(str(sym)))
    if not pnl_parts:
        raise ValueError("fewer than 2 bars per symbol: nothing to backtest")
    total = pd.concat(pnl_parts, axis=1).fillna(0.0).sum(axis=1)
    equity = capital + total.cumsum()
    rets = total / capital
    bar_s = float(params.get("bar_s", 1))
    sd = float(rets.std())
    sharpe = float(rets.mean() / sd * math.sqrt(YEAR_S / bar_s)) if sd > 0 else 0.0
    peak = equity.cummax()
    mdd = float(((peak - equity) / peak).max())
    return BacktestResult(
        job_id=job_id,
        strategy=strategy,
        symbols=sorted(per_symbol),
        params=params,
        start_ns=start_ns or int(prices.ts_ns.min()),
        end_ns=end_ns or int(prices.ts_ns.max()),
        bars=len(total),
        trades=trades,
        pnl=round(float(total.sum()), 6),
        sharpe=round(sharpe, 4),
        max_drawdown=round(mdd, 6),
        per_symbol=per_symbol,
    )
