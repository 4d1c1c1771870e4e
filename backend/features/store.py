"""The online store (latest features per symbol in Redis) and the offline store (Parquet by date,
one file per flush, compacted to one per closed day by the scheduler), with point-in-time
retrieval: for each query time, the latest row at or before it."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from backend.compaction import CompactionResult, compact_dir, compactor_lock, drop_replaced, store_lock
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
    root = offline_dir(data_dir)
    if not root.exists():
        return pd.DataFrame(columns=["symbol", "ts_ns"])
    with store_lock(root):  # the end-of-day compaction cannot swap files under the read
        files = drop_replaced(sorted(root.glob("date=*/*.parquet")))
        frames = [pd.read_parquet(f) for f in files]
    if not frames:
        return pd.DataFrame(columns=["symbol", "ts_ns"])
    df = pd.concat(frames, ignore_index=True)
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


def _span(files: list[Path]) -> str:
    """`<first>_<last>` of the flush times that start the file names (`<ns>-<id>.parquet`)."""
    stamps = sorted(int(m[1]) for f in files if (m := re.match(r"^(?:compact-)?(\d+)", f.name)))
    return f"{stamps[0]}_{stamps[-1]}" if stamps else "0_0"


def compact_offline(data_dir: Path, through: str) -> CompactionResult:
    """The scheduler's end-of-day compaction of the offline store: each date partition up to
    `through` ("YYYY-MM-DD", inclusive) becomes one file (backend.compaction's protocol)."""
    root = offline_dir(data_dir)
    res = CompactionResult(through=through, store="features")
    if not root.exists():
        return res
    with compactor_lock(root) as res.cleaned:
        for ddir in sorted(root.glob("date=*")):
            if ddir.name[len("date=") :] > through:
                res.skipped_open += 1
                continue
            compact_dir(root, ddir, ["ts_ns", "symbol"], _span, res)
    return res
