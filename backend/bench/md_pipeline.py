"""`tradeops bench md-pipeline`: the local exchange -> gateway -> normalizer -> sink-ticks, every
part its own process, at a fixed trade rate. Delivered and lost trades (by the venue's trade ids),
latency from the exchange timestamp to the normalized tick on the bus, rows in the sink."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.bench.harness import BenchStack, wait_until
from backend.bus import replies, streams
from backend.bus.entries import Skips, decode_entries, decode_value
from backend.errors import TradeopsError
from backend.marketdata import ticks as tickcols
from backend.messages import Heartbeat, TickBatch
from backend.runtime.commands import exchange_command
from backend.runtime.spawn import stop_process

NAME = "md-pipeline"
HELP = "exchange -> gateway -> normalizer -> sink at a fixed rate: loss, latency, sink rows"
DEFAULT_SECONDS = 10.0
WARMUP_S = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=20_000, help="trades per second (default 20000)")


def start_exchange(data_dir: Path, rate: float) -> subprocess.Popen[str]:
    """The local exchange at `rate` trades/s, its stdout piped (it says when it is up and, on
    SIGTERM, the last trade id it sent per symbol)."""
    exchange = subprocess.Popen(
        exchange_command(data_dir, rate, news_every=3600), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    first = exchange.stdout.readline() if exchange.stdout else ""
    if not first.startswith("exchange up"):
        stop_process(exchange)
        raise TradeopsError(f"md-pipeline: the exchange did not start: {first!r}")
    return exchange


def stop_exchange(exchange: subprocess.Popen[str]) -> dict[str, int]:
    """SIGTERM the exchange (it drains its subscribers first): the last trade id sent per symbol."""
    try:
        exchange.terminate()
        out, _ = exchange.communicate(timeout=20)
    finally:
        if exchange.poll() is None:
            stop_process(exchange)
    down = [ln for ln in out.splitlines() if ln.startswith("exchange down: ")]
    if not down:
        raise TradeopsError("md-pipeline: the exchange did not say what it sent")
    return json.loads(down[-1].removeprefix("exchange down: "))["last_ids"]


def wait_gateway_flushed(r: Any, instance: str, closed_ns: int, timeout: float = 30) -> None:
    """The gateway may still be reading trades the exchange sent before it closed: wait until it
    has dropped the connection (it flushes its batch first) or its published count has stayed put
    across two heartbeats taken after the exchange closed (at `closed_ns`)."""
    seen: list[tuple[int, int]] = []  # (heartbeat ts, published) after the close

    def flushed() -> bool:
        raw = r.hget(f"health:gateway:{instance}", "d")
        hb = decode_value(raw, Heartbeat) if raw else None
        if hb is None or hb.ts_ns <= closed_ns:
            return False
        if not hb.extra.get("connected"):
            return True
        if not seen or seen[-1][0] != hb.ts_ns:
            seen.append((hb.ts_ns, int(hb.extra.get("published", 0))))
        return len(seen) >= 2 and seen[-1][1] == seen[-2][1]

    wait_until(flushed, timeout, "the gateway to read the exchange's last trades", NAME)


def gateway_caught_up(r: Any, instance: str) -> bool:
    """The gateway instance is connected, has had live trades since it started and backfills no
    gap (no symbol's live trades wait for the venue's trade history, which the exchange serves:
    stopping it now would leave the gap missing)."""
    raw = r.hget(f"health:gateway:{instance}", "d")
    hb = decode_value(replies.blob(raw), Heartbeat) if raw else None
    return (
        hb is not None
        and hb.state == "running"
        and bool(hb.extra.get("connected"))
        and int(hb.extra.get("received") or 0) > 0
        and not hb.extra.get("backfilling")
    )


def wait_group_drained(r: Any, stream: str, group: str, timeout: float = 60) -> None:
    """Until the group has read everything on the stream and acked it."""

    def drained() -> bool:
        groups = {g["name"].decode(): g for g in r.xinfo_groups(stream)}
        g = groups.get(group)
        return g is not None and g["lag"] == 0 and g["pending"] == 0

    wait_until(drained, timeout, f"{group} to drain {stream}", NAME)


def delivered_ids(
    r: Any, stream: str = streams.MD_TICKS, skips: Skips | None = None
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Every trade id on md.ticks by symbol (repeats kept), and per batch the latency from the
    trade's exchange time to its normalization (ms); entries that are not batches skipped
    (counted in `skips`)."""
    ids: dict[str, list[np.ndarray]] = {}
    lat: list[np.ndarray] = []
    batches, _ = decode_entries(r.xrange(stream), TickBatch, stream=stream, skips=skips)
    for _, b in batches:
        c = tickcols.columns(b)
        for k, sym in enumerate(b.symbols):
            sel = c["sym"] == k
            if sel.any():
                ids.setdefault(sym, []).append(c["trade_id"][sel])
        lat.append((b.normalized_ns - c["trade_ns"]) / 1e6)
    return {s: np.concatenate(p) for s, p in ids.items()}, lat


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.rate <= 0:
        raise TradeopsError("--rate must be positive")
    with BenchStack() as stack:
        r = stack.r
        assert r is not None
        config = stack.data_dir / "config.toml"
        config.write_text("[services.sink-ticks]\nflush_s = 2.0\n")
        stack.start("normalizer", config=config)
        stack.start("sink-ticks", config=config)
        exchange = start_exchange(stack.data_dir, args.rate)
        try:
            stack.start("gateway", config=config)
            t_start = time.monotonic()
            time.sleep(args.seconds)
        finally:
            last_ids = stop_exchange(exchange)
        closed_ns = time.time_ns()
        wait_gateway_flushed(r, "gateway-bench", closed_ns)
        wait_group_drained(r, streams.MD_TICKS_RAW, "normalizer")
        elapsed = time.monotonic() - t_start
        hb_raw = r.hget("health:gateway:gateway-bench", "d")
        hb = decode_value(replies.blob(hb_raw), Heartbeat) if hb_raw else None
        feed = hb.latency_ms if hb else {}

        skips = Skips()
        ids, lat = delivered_ids(r, skips=skips)
        delivered = sum(len(v) for v in ids.values())
        lost = 0
        for sym, every in ids.items():
            got = np.unique(every)
            expected = last_ids[sym] - int(got.min()) + 1
            lost += expected - len(got)
        all_lat = np.concatenate(lat) if lat else np.zeros(1)
        skip = int(min(len(all_lat) - 1, args.rate * WARMUP_S)) if len(all_lat) > 1 else 0
        steady = all_lat[skip:]
        stack.stop("gateway-bench")
        stack.stop("sink-ticks-bench")  # flushes what it holds
        from backend.marketdata import store  # pandas: loaded by this benchmark only

        sink_rows = len(store.read_ticks(stack.data_dir))
    return {
        "rate": args.rate,
        "seconds": round(elapsed, 2),
        "delivered": delivered,
        "lost": int(lost),
        "p50_ms": round(float(np.percentile(steady, 50)), 3),
        "p99_ms": round(float(np.percentile(steady, 99)), 3),
        "max_ms": round(float(steady.max()), 3),
        "sink_rows": sink_rows,
        "feed_p50_ms": feed.get("feed_delay_p50"),
        "feed_p99_ms": feed.get("feed_delay_p99"),
        "skipped_undecodable": skips.total,
    }
