"""Positions and PnL from fills; features computed from closed bars only; point-in-time joins."""

from __future__ import annotations

import pandas as pd
import pytest

from backend.features.compute import SymbolHistory, compute, definitions
from backend.features.store import as_of
from backend.messages import Bar
from backend.posttrade.book import Pos


def test_average_cost_realized_and_unrealized_pnl() -> None:
    p = Pos()
    p.fill("buy", 2, 100.0)
    p.fill("buy", 2, 110.0)
    assert p.quantity == 4 and p.avg_price == 105.0
    p.fill("sell", 1, 120.0)
    assert p.realized == pytest.approx(15.0) and p.quantity == 3
    p.fill("sell", 5, 90.0)  # closes 3 at -15 each and flips short 2 at 90
    assert p.realized == pytest.approx(15.0 - 45.0) and p.quantity == -2 and p.avg_price == 90.0
    p.mark = 80.0
    assert p.unrealized == pytest.approx(20.0) and p.exposure == pytest.approx(160.0)


def bar(i: int, close: float, volume: float = 1.0) -> Bar:
    return Bar("BTCUSDT", "1s", i * 10**9, close, close, close, close, volume, close, 1)


def test_features_use_only_closed_bars_and_run_once_per_bar() -> None:
    closes = [100.0, 101.0, 102.0, 99.0, 100.0, 103.0]
    h = SymbolHistory(40)
    rows = [h.add(bar(i, c)) for i, c in enumerate(closes)]
    assert h.add(bar(5, 1.0)) is None  # a repeat of the last bar
    import math

    assert rows[-1]["ret_1"] == pytest.approx(math.log(103 / 100))
    assert rows[-1]["ret_5"] == pytest.approx(math.log(103 / 100))
    # no look-ahead: the features at bar 3 are the same whatever comes after it
    assert compute([bar(i, c) for i, c in enumerate(closes[:4])]) == rows[3]
    assert {d.name for d in definitions()} == set(rows[-1])


def test_point_in_time_join_never_takes_a_future_row() -> None:
    f = pd.DataFrame({"symbol": ["A", "A", "A"], "ts_ns": [10, 20, 30], "x": [1.0, 2.0, 3.0]})
    q = pd.DataFrame({"symbol": ["A", "A", "A"], "ts_ns": [5, 20, 29]})
    got = as_of(f, q)
    assert got.x.isna().tolist() == [True, False, False]
    assert got.x.tolist()[1:] == [2.0, 2.0]
