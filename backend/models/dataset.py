"""The training set: feature rows joined to labels that only use prices from *after* the row.

A row at time t gets the label log(p(t + h) / p(t)), both prices as of their time (the last price
at or before it, `merge_asof` backward). A row is labelled only when a price at or after t + h has
been seen, so the label is realised, and nothing at or after `end_ns` is used: no look-ahead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LABEL = "fwd_logret"


def label_rows(
    features: pd.DataFrame, prices: pd.DataFrame, horizon_ns: int, end_ns: int | None = None
) -> pd.DataFrame:
    """`features` (symbol, ts_ns, <feature columns>) + `prices` (symbol, ts_ns, price) ->
    the labelled rows, in time order, with a `fwd_logret` column."""
    if features.empty or prices.empty:
        return features.iloc[0:0].assign(**{LABEL: pd.Series(dtype=float)})
    if end_ns is not None:
        prices = prices[prices.ts_ns < end_ns]
        features = features[features.ts_ns + horizon_ns < end_ns]
    prices = prices.sort_values("ts_ns", kind="stable")
    last_seen = prices.groupby("symbol").ts_ns.max()
    rows = features.sort_values("ts_ns", kind="stable").copy()
    rows = rows[rows.ts_ns + horizon_ns <= rows.symbol.map(last_seen).fillna(-1)]
    if rows.empty:
        return rows.assign(**{LABEL: pd.Series(dtype=float)})
    p = prices[["symbol", "ts_ns", "price"]]
    now = (
        pd.merge_asof(rows[["symbol", "ts_ns"]].reset_index(), p, on="ts_ns", by="symbol", direction="backward")
        .set_index("index")
        .price
    )
    fut_keys = rows[["symbol", "ts_ns"]].assign(ts_ns=rows.ts_ns + horizon_ns)
    fut = (
        pd.merge_asof(
            fut_keys.sort_values("ts_ns", kind="stable").reset_index(), p, on="ts_ns", by="symbol", direction="backward"
        )
        .set_index("index")
        .price
    )
    rows[LABEL] = np.log(fut.reindex(rows.index) / now.reindex(rows.index))
    rows = rows[np.isfinite(rows[LABEL])]
    return rows.reset_index(drop=True)
