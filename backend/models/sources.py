"""Where training and backtests read history from: the feature rows and the prices.

Features: the feature store's offline retrieval (`backend.features.store.historical`, Parquet
written by feast-pipeline), or the `features` stream's history (rows not yet flushed offline),
whichever holds more (`best_feature_rows`). Prices: closes of the 1 s bars on
`md.bars.1s` (a bar's close is known at its end), else the stored ticks from sink-ticks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from backend.bus import streams
from backend.bus.entries import Skips, decode_with
from backend.bus.history import xrange_between
from backend.messages import Bar, FeatureRow

_row = msgspec.msgpack.Decoder(FeatureRow)
_bar = msgspec.msgpack.Decoder(Bar)
BAR_NS = {"1s": 1_000_000_000, "1m": 60_000_000_000}


async def feature_rows(
    r: Any, symbols: list[str], start_ns: int = 0, end_ns: int = 0, skips: Skips | None = None
) -> pd.DataFrame:
    """Feature rows (symbol, ts_ns, one column per feature) in time order; undecodable entries
    are skipped, counted in `skips` (the feature pipeline dead-letters its own bad input)."""
    recs: list[dict[str, Any]] = []
    rows, _ = decode_with(await xrange_between(r, streams.FEATURES), _row.decode, stream=streams.FEATURES, skips=skips)
    for _, row in rows:
        if symbols and row.symbol not in symbols:
            continue
        if (start_ns and row.ts_ns < start_ns) or (end_ns and row.ts_ns >= end_ns):
            continue
        recs.append({"symbol": row.symbol, "ts_ns": row.ts_ns, **row.values})
    df = pd.DataFrame.from_records(recs)
    if df.empty:
        return pd.DataFrame(columns=["symbol", "ts_ns"])
    return df.sort_values("ts_ns", kind="stable").reset_index(drop=True)


async def best_feature_rows(
    r: Any,
    data_dir: Path,
    symbols: list[str],
    start_ns: int = 0,
    end_ns: int = 0,
    source: str = "auto",
    skips: Skips | None = None,
) -> tuple[pd.DataFrame, str]:
    """Feature rows and where they came from: 'offline' (the feature store's Parquet), 'stream'
    (the `features` stream's history) or 'auto': whichever holds more rows for the range (the
    offline store lags by its flush interval; the stream is trimmed by MAXLEN)."""
    offline = stream = None
    if source in ("auto", "offline"):
        offline = await asyncio.to_thread(offline_feature_rows, data_dir, symbols, start_ns, end_ns)
    if source in ("auto", "stream"):
        stream = await feature_rows(r, symbols, start_ns, end_ns, skips)
    if stream is None or (offline is not None and len(offline) >= len(stream)):
        return offline, "offline"
    return stream, "stream"


def offline_feature_rows(data_dir: Path, symbols: list[str], start_ns: int = 0, end_ns: int = 0) -> pd.DataFrame:
    """Feature rows from the feature store's offline Parquet, in time order."""
    from backend.features.store import historical

    df = historical(data_dir, symbols, start_ns or 0, end_ns or 2**63 - 1)
    if df.empty:
        return pd.DataFrame(columns=["symbol", "ts_ns"])
    return df.sort_values("ts_ns", kind="stable").reset_index(drop=True)


async def bar_prices(r: Any, symbols: list[str], interval: str = "1s", skips: Skips | None = None) -> pd.DataFrame:
    """(symbol, ts_ns, price): each bar's close, stamped at the bar's end (undecodable entries
    skipped, counted in `skips`)."""
    stream = streams.MD_BARS_1S if interval == "1s" else streams.MD_BARS_1M
    recs = []
    bars, _ = decode_with(await xrange_between(r, stream), _bar.decode, stream=stream, skips=skips)
    for _, bar in bars:
        if symbols and bar.symbol not in symbols:
            continue
        recs.append((bar.symbol, bar.start_ns + BAR_NS[bar.interval], bar.close))
    return pd.DataFrame.from_records(recs, columns=["symbol", "ts_ns", "price"])


def tick_prices(
    data_dir: Path, symbols: list[str], start_ns: int | None = None, end_ns: int | None = None
) -> pd.DataFrame:
    """(symbol, ts_ns, price) from the stored ticks."""
    from backend.marketdata.store import read_ticks

    df = read_ticks(data_dir, symbols or None, start_ns or None, end_ns or None)
    if df.empty:
        return pd.DataFrame(columns=["symbol", "ts_ns", "price"])
    ts = df["ts"].to_numpy(dtype="datetime64[ns]").astype("int64")
    return pd.DataFrame({"symbol": df.symbol.astype(str), "ts_ns": ts, "price": df.price.astype(float)})
