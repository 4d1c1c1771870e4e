"""`tradeops bench normalizer`: raw ticks preloaded in md.ticks.raw, the normalizer running as its
own process; the throughput it sustains, and the same for a pass-through consumer (decode and
re-publish only) in the same invocation, so the ratio shows what validation and bars cost."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import numpy as np

from backend.bench.harness import BenchStack
from backend.bus import codec, replies, streams
from backend.bus.entries import decode_entries
from backend.bus.publish import queue_fields
from backend.errors import TradeopsError
from backend.marketdata.raw import RawBatchBuilder
from backend.marketdata.symbols import DEFAULT_SYMBOLS, START_PRICES
from backend.messages import RawTickBatch, TickBatch
from backend.runtime.spawn import stop_process, wait_healthy

NAME = "normalizer"
HELP = "normalizer throughput (ticks/s) against a pass-through baseline"
DEFAULT_SECONDS = 3.0
ASSUMED_RATE = 1_500_000  # ticks/s, to size the preload for --seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=5000, help="ticks per raw batch (default 5000)")
    p.add_argument("--ticks", type=int, default=None, help="ticks to preload (default: enough for --seconds at 1.5M/s)")


def raw_batches(total: int, batch: int, start_ns: int) -> list[bytes]:
    """Encoded raw batches over the default symbols with rising trade ids."""
    rng = np.random.default_rng(7)
    n_sym = len(DEFAULT_SYMBOLS)
    b = RawBatchBuilder("bench")
    base = [START_PRICES[s] for s in DEFAULT_SYMBOLS]
    for i in range(batch):
        k = i % n_sym
        price = base[k] * (1 + rng.normal(0, 1e-4))
        b.add(
            DEFAULT_SYMBOLS[k],
            i // n_sym,
            f"{price:.4f}",
            f"{rng.uniform(0.001, 2):.5f}",
            start_ns,
            start_ns,
            bool(i & 1),
            start_ns,
        )
    template = b.build()
    tids0 = np.frombuffer(template.trade_id, np.int64)
    per_sym = (batch + n_sym - 1) // n_sym
    out = []
    for j in range(max(1, total // batch)):
        ts = np.full(batch, start_ns + j * 10_000_000, np.int64)  # 10 ms of exchange time a batch
        out.append(
            codec.encode(
                RawTickBatch(
                    source="bench",
                    n=batch,
                    symbols=template.symbols,
                    sym=template.sym,
                    trade_id=(tids0 + j * per_sym).tobytes(),
                    price=template.price,
                    price_offsets=template.price_offsets,
                    qty=template.qty,
                    qty_offsets=template.qty_offsets,
                    trade_ns=ts.tobytes(),
                    event_ns=ts.tobytes(),
                    recv_ns=ts.tobytes(),
                    buyer_maker=template.buyer_maker,
                )
            )
        )
    return out


def _preload(stack: BenchStack, payloads: list[bytes]) -> None:
    r = stack.r
    assert r is not None
    r.delete(streams.MD_TICKS_RAW, streams.MD_TICKS, "bench.passthrough", "normalizer:hwm")
    for i in range(0, len(payloads), 200):
        pipe = r.pipeline(transaction=False)
        for p in payloads[i : i + 200]:
            queue_fields(pipe, streams.MD_TICKS_RAW, {codec.FIELD: p})
        pipe.execute()


def _wait_drained(stack: BenchStack, group: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    r = stack.r
    assert r is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TradeopsError(f"{group} exited with {proc.returncode} during the benchmark")
        for g in r.xinfo_groups(streams.MD_TICKS_RAW):
            if g["name"].decode() == group and g["lag"] == 0 and g["pending"] == 0:
                return
        time.sleep(0.01)
    raise TimeoutError(f"{group} did not drain md.ticks.raw within {timeout:.0f}s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    total = args.ticks or int(args.seconds * ASSUMED_RATE)
    # exchange time spans 10 ms a batch, ending now, so bars close as the run goes
    start_ns = time.time_ns() - (total // args.batch) * 10_000_000
    payloads = raw_batches(total, args.batch, start_ns)
    total = len(payloads) * args.batch
    with BenchStack() as stack:
        # the baseline first: decode + re-publish only
        _preload(stack, payloads)
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend.bench.passthrough", stack.url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_drained(stack, "normalizer", timeout=60 + total / 100_000, proc=proc)  # its stand-in
        finally:
            stop_process(proc)
        # both rates come from the output streams' entry ids (ms), measured the same way
        base_rate = _rate_by_ids(stack, "bench.passthrough", total, args.batch)

        # the normalizer
        r = stack.r
        assert r is not None
        _preload(stack, payloads)
        r.xgroup_destroy(streams.MD_TICKS_RAW, "normalizer")  # the stand-in's, gone with the stream
        proc = stack.start("normalizer", wait=False)
        _wait_drained(stack, "normalizer", timeout=60 + total / 100_000, proc=proc)
        assert stack.r is not None
        batches, skipped = decode_entries(
            replies.entries(stack.r.xrange(streams.MD_TICKS)), TickBatch, stream=streams.MD_TICKS
        )
        out_ticks = sum(b.n for _, b in batches)
        rate = _rate_by_ids(stack, streams.MD_TICKS, out_ticks, args.batch * 64)
        wait_healthy(r, "normalizer", "normalizer-bench", proc=proc)
        bars = r.xlen(streams.MD_BARS_1S) + r.xlen(streams.MD_BARS_1M)
        stack.stop("normalizer-bench")  # closes nothing more: bars so far are those it emitted
        dlq = r.xlen(streams.dlq(streams.MD_TICKS_RAW))
    return {
        "ticks": total,
        "ticks_per_s": round(rate),
        "baseline_ticks_per_s": round(base_rate),
        "ratio": round(rate / base_rate, 3) if base_rate else None,
        "bars_emitted": bars,
        "dlq": dlq,
        "ticks_out": out_ticks,
        "batch": args.batch,
        "skipped_undecodable": skipped,
    }


def _rate_by_ids(stack: BenchStack, stream: str, total: int, per_entry: int) -> float:
    """Ticks/s between the first and the last output entry (entry ids are ms timestamps); the
    ticks of the first entry were processed before the clock starts, so they are not counted."""
    r = stack.r
    assert r is not None
    first = replies.entries(r.xrange(stream, count=1))[0][0]
    last = replies.entries(r.xrevrange(stream, count=1))[0][0]
    t0, t1 = int(first.split(b"-")[0]), int(last.split(b"-")[0])
    entries = r.xlen(stream)
    if t1 <= t0:
        raise TradeopsError(f"too few ticks to time ({total} in {entries} output entries): raise --ticks")
    counted = total - total / max(1, entries)
    return counted / max(1e-3, (t1 - t0) / 1000)
