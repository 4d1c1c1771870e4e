"""The online store (latest features per symbol in Redis) and the offline store (Parquet by date
and symbol), with point-in-time retrieval: for each query time, the latest row at or before it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from backend.fileio import atomic_path

ONLINE_KEY = "features:online:{symbol}"
"""Hash: `ts_ns` (when the row's bar closed) and one field per feature (repr of the float)."""


def online_key(symbol: str) -> str:
    return ONLINE_KEY.format(symbol=symbol)


def queue_online(pipe: Any, symbol: str, ts_ns: int, values: Mapping[str, float]) -> None:
    """Queue the write of one symbol's latest features into the online store."""
    pipe.hset(online_key(symbol), mapping={"ts_ns": ts_ns, **{k: repr(float(v)) for k, v in values.items()}})


def parse_online(symbol: str, raw: Mapping[bytes, bytes]) -> tuple[int, dict[str, float]]:
    """(ts_ns, values) of an online hash as read; ValueError naming what is wrong."""
    if not raw:
        raise ValueError(f"no online features for {symbol} ({online_key(symbol)} is empty)")
    values: dict[str, float] = {}
    ts_ns = None
    for k, v in raw.items():
        name, text = k.decode(), v.decode(errors="replace")
        try:
            if name == "ts_ns":
                ts_ns = int(text)  # exact: a float has no room for nanoseconds
            else:
                values[name] = float(text)
        except ValueError:
            raise ValueError(f"online features for {symbol}: {name} = {text!r} is not a number") from None
    if ts_ns is None or ts_ns <= 0:
        raise ValueError(f"online features for {symbol} have no ts_ns")
    return ts_ns, values


def offline_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "store" / "features"


def write_offline(data_dir: Path, rows: list[dict[str, Any]], name: str) -> None:
    if not rows:
        return
    df = pd.DataFrame(rows)
    day = time.strftime("%Y-%m-%d", time.gmtime(int(df.ts_ns.iloc[0]) / 1e9))
    out = offline_dir(data_dir) / f"date={day}" / f"{name}.parquet"
    with atomic_path(out) as tmp:  # training may read the store while we write it
        df.to_parquet(tmp, index=False)


def read_offline(data_dir: Path, symbols: list[str] | None = None) -> pd.DataFrame:
    files = sorted(offline_dir(data_dir).rglob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=["symbol", "ts_ns"])
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if symbols:
        df = df[df.symbol.isin(symbols)]
    return df.drop_duplicates(["symbol", "ts_ns"]).sort_values("ts_ns", kind="stable").reset_index(drop=True)


def as_of(features: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join: for each (symbol, ts_ns) query, the latest feature row with
    ts_ns <= the query's (never a row from the future)."""
    f = features.sort_values("ts_ns")
    q = queries.sort_values("ts_ns")
    return pd.merge_asof(q, f, on="ts_ns", by="symbol", direction="backward")


def historical(data_dir: Path, symbols: list[str], start_ns: int, end_ns: int) -> pd.DataFrame:
    df = read_offline(data_dir, symbols)
    return df[(df.ts_ns >= start_ns) & (df.ts_ns < end_ns)].reset_index(drop=True)
