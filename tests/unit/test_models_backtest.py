"""P5 pure parts: the ridge model, point-in-time labels, the backtest engine, and their bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backend.backtest import engine
from backend.models import linear
from backend.models.dataset import LABEL, label_rows

S = 1_000_000_000


def test_fit_recovers_a_real_signal_and_scores_rows() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 2))
    y = 0.02 * x[:, 0] + rng.normal(scale=0.005, size=400)  # feature a predicts, b is noise
    model, m = linear.fit(x, y, ["a", "b"], ridge=1.0)
    assert m["ic"] > 0.9 and m["hit_rate"] > 0.85 and m["n_test"] == 100
    assert abs(model.coef[0]) > 20 * abs(model.coef[1])
    again = linear.LinearModel.from_bytes(model.to_bytes())
    assert again.score({"a": 1.0, "b": 0.0}) == pytest.approx(model.score({"a": 1.0, "b": 0.0}))
    assert again.score({"a": 2.0, "b": 0.0}) > 1.0 > 0 > again.score({"a": -2.0, "b": 0.0})
    with pytest.raises(KeyError, match="b"):
        again.score({"a": 1.0})


def test_bad_artifacts_and_too_little_data_are_named() -> None:
    with pytest.raises(ValueError, match="artifact is not JSON"):
        linear.LinearModel.from_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a linear-ridge artifact"):
        linear.LinearModel.from_bytes(b'{"features": ["a"]}')
    with pytest.raises(ValueError, match="1 features but 1 means, 1 stds, 2 coefficients"):
        linear.LinearModel(features=["a"], mean=[0], std=[1], coef=[1, 2], intercept=0, pred_std=1)
    with pytest.raises(ValueError, match="only 5 labelled rows"):
        linear.fit(np.zeros((5, 1)), np.zeros(5), ["a"])


def test_labels_use_only_prices_after_the_row_and_never_past_the_end() -> None:
    prices = pd.DataFrame({"symbol": "X", "ts_ns": np.arange(0, 11) * S, "price": 100.0 + np.arange(0, 11)})
    feats = pd.DataFrame({"symbol": "X", "ts_ns": np.arange(0, 11) * S + S // 2, "f": 1.0})
    rows = label_rows(feats, prices, 2 * S)
    # row at 0.5 s: price now 100 (t=0), at 2.5 s: 102 (t=2); the last rows have no realised label
    assert rows.ts_ns.tolist() == [k * S + S // 2 for k in range(8)]
    assert rows[LABEL].iloc[0] == pytest.approx(np.log(102 / 100))
    # a price that arrives after end_ns is never seen: fewer rows, same labels for the rest
    cut = label_rows(feats, prices, 2 * S, end_ns=6 * S)
    assert cut.ts_ns.max() + 2 * S < 6 * S and len(cut) == 3
    assert cut[LABEL].tolist() == pytest.approx(rows[LABEL].iloc[:3].tolist())
    assert label_rows(feats.iloc[0:0], prices, S).empty


def test_engine_pnl_drawdown_trades_without_look_ahead() -> None:
    up = pd.DataFrame({"symbol": "X", "ts_ns": np.arange(0, 10) * S, "price": 100.0 + np.arange(10)})
    res = engine.run(up, "buy-hold", {"quantity": 2, "fee_bps": 0})
    # position taken at the first close, held over the 9 rises after it
    assert res.pnl == pytest.approx(2 * 9) and res.trades == 1 and res.max_drawdown == 0
    zigzag = up.assign(price=[100, 101, 100, 101, 100, 101, 100, 101, 100, 101])
    mom = engine.run(zigzag, "momentum", {"window": 1, "quantity": 1, "fee_bps": 0})
    rev = engine.run(zigzag, "meanrev", {"window": 1, "quantity": 1, "fee_bps": 0})
    assert mom.pnl < 0 < rev.pnl and rev.sharpe > 0 > mom.sharpe and mom.max_drawdown > 0
    assert rev.trades >= 8


def test_engine_trades_a_models_signals_and_holds_through_neutral_ones() -> None:
    up = pd.DataFrame({"symbol": "X", "ts_ns": np.arange(0, 10) * S, "price": 100.0 + np.arange(10)})
    long = pd.DataFrame({"symbol": "X", "ts_ns": [0, 3 * S], "side": [1.0, 0.0]})  # neutral keeps it
    res = engine.run(up, "model:alpha", {"fee_bps": 0}, signals=long)
    assert res.pnl == pytest.approx(9) and res.trades == 1
    flip = pd.DataFrame({"symbol": "X", "ts_ns": [0, 4 * S], "side": [1.0, -1.0]})
    res = engine.run(up, "model:alpha", {"fee_bps": 0}, signals=flip)
    assert res.pnl == pytest.approx(4 - 5) and res.trades == 2
    with pytest.raises(ValueError, match="no signals from model:alpha"):
        engine.run(up, "model:alpha", {}, signals=long.iloc[0:0])


@pytest.mark.parametrize(
    "strategy,params,message",
    [
        ("nope", {}, "unknown strategy 'nope'; known: buy-hold, meanrev, momentum, or model:NAME"),
        ("model:", {}, "unknown strategy 'model:'"),
        ("momentum", {"windw": 3}, "unknown parameters windw"),
        ("momentum", {"window": "x"}, "parameter window must be a number"),
        ("momentum", {"window": -1}, "parameter window must be positive"),
    ],
)
def test_engine_rejects_bad_jobs(strategy: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.check(strategy, params)


def test_engine_without_data_says_so() -> None:
    with pytest.raises(ValueError, match="no prices in the range"):
        engine.run(pd.DataFrame(columns=["symbol", "ts_ns", "price"]), "momentum", {})


def test_backtest_over_stored_ticks(tmp_path) -> None:
    from backend.marketdata import store
    from backend.marketdata import ticks as tickcols
    from backend.messages import Tick
    from backend.models import sources

    t0 = 1_700_000_000 * S
    batch = tickcols.from_ticks([Tick("BTCUSDT", i + 1, 100.0 + i % 7, 1.0, t0 + i * S // 5) for i in range(100)])
    store.ParquetStore(store.ticks_dir(tmp_path)).write(store.to_table([("1-0", batch)]), "1-0", "1-0")
    prices = sources.tick_prices(tmp_path, ["BTCUSDT"], t0, t0 + 10 * S)
    assert len(prices) == 50 and prices.ts_ns.iloc[0] == t0 and prices.price.iloc[1] == 101.0
    res = engine.run(prices, "meanrev", {"window": 2, "fee_bps": 0})
    assert res.bars == 10 and res.trades > 0 and res.symbols == ["BTCUSDT"]
    assert sources.tick_prices(tmp_path, ["NOSUCH"]).empty
