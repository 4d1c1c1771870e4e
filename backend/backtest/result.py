"""A backtest's result as bt-orchestrator stores it (JSON in `backtest:job:<id>`): apart from the
engine, so that its readers (the CLI, the console) need not load pandas."""

from __future__ import annotations

from typing import Any

import msgspec


class BacktestResult(msgspec.Struct, kw_only=True):
    job_id: str
    strategy: str
    symbols: list[str]
    params: dict[str, Any]
    start_ns: int
    end_ns: int
    bars: int
    trades: int
    pnl: float
    sharpe: float
    max_drawdown: float
    """Largest fall of equity from a running peak, as a fraction of that peak."""
    per_symbol: dict[str, float]
    finished_ns: int = 0
