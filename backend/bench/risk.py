"""`tradeops bench risk`: the risk round trip (request on risk.requests -> decision back on
risk.decisions) under open-loop load, and a bare echo through the same streams measured in the
same invocation: the physical floor on this machine."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from backend import aio
from backend.bench.harness import BenchStack
from backend.bench.load import collect, open_loop
from backend.bus import publish_sync, streams
from backend.bus.connection import login_env
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.marketdata import ticks as tickcols
from backend.messages import Order, RiskDecision, RiskRequest, Tick
from backend.runtime.spawn import stop_process, wait_healthy

NAME = "risk"
HELP = "risk round-trip latency under open-loop load, against a bare echo baseline"
DEFAULT_SECONDS = 10.0
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PRICES = {"BTCUSDT": 65000.0, "ETHUSDT": 3200.0, "SOLUSDT": 150.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second (default 1000)")


def seed_prices(r: Any) -> None:
    now = time.time_ns()
    batch = tickcols.from_ticks([Tick(s, 1, PRICES[s], 1.0, now) for s in SYMBOLS])
    publish_sync(r, streams.MD_TICKS, batch)


def request(i: int, now_ns: int) -> RiskRequest:
    s = SYMBOLS[i % len(SYMBOLS)]
    o = Order(
        client_order_id=f"b{i}",
        account=f"acct-{i % 10}",
        symbol=s,
        side="buy" if i % 2 else "sell",
        type="limit",
        quantity=0.01,
        limit_price=PRICES[s],
    )
    return RiskRequest(request_id=f"b{i}#1", order=o, sent_ns=now_ns)


async def measure(url: str, rate: float, seconds: float, skips: Skips | None = None) -> tuple[int, np.ndarray, int]:
    lat: list[int] = []
    approved = 0

    def on(d: RiskDecision, now: int) -> None:
        nonlocal approved
        lat.append(now - d.request_sent_ns)
        approved += d.approved

    stop = asyncio.Event()
    col = asyncio.create_task(collect(url, streams.RISK_DECISIONS, on, stop, decode=RiskDecision, skips=skips))
    await asyncio.sleep(0.05)
    sent = await open_loop(url, streams.RISK_REQUESTS, request, rate, seconds)
    deadline = time.monotonic() + 5
    while len(lat) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await col
    return sent, np.array(lat, dtype=np.int64) / 1e6, approved


def _summary(ms: np.ndarray) -> dict[str, float]:
    if len(ms) == 0:
        return {
            "p50_ms": float("nan"),
            "p90_ms": float("nan"),
            "p99_ms": float("nan"),
            "p999_ms": float("nan"),
            "max_ms": float("nan"),
        }
    q = np.percentile(ms, [50, 90, 99, 99.9])
    return {
        "p50_ms": round(float(q[0]), 4),
        "p90_ms": round(float(q[1]), 4),
        "p99_ms": round(float(q[2]), 4),
        "p999_ms": round(float(q[3]), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.rate <= 0:
        raise TradeopsError("--rate must be positive")
    skips = Skips()
    with BenchStack() as stack:
        r = stack.r
        assert r is not None
        seed_prices(r)
        # the floor: echo through the same streams, as risk (its group, its Redis user)
        echo = subprocess.Popen(
            [sys.executable, "-m", "backend.bench.echo", stack.url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=login_env("risk", stack.data_dir, dict(os.environ)) if stack.acl else None,
        )
        try:
            wait_healthy(r, "risk", "echo-bench", proc=echo)
            _, base, _ = aio.run(measure(stack.url, args.rate, min(args.seconds, 5.0), skips))
        finally:
            stop_process(echo)
        r.xgroup_destroy(streams.RISK_REQUESTS, "risk")
        r.delete(streams.RISK_DECISIONS, streams.RISK_REQUESTS)
        stack.start("risk")
        sent, lat, approved = aio.run(measure(stack.url, args.rate, args.seconds, skips))
    out: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        **_summary(lat),
        "sent": sent,
        "completed": len(lat),
        "lost": int(sent - len(lat)),
        "approved": int(approved),
        "baseline_p50_ms": _summary(base)["p50_ms"],
        "baseline_p99_ms": _summary(base)["p99_ms"],
        "skipped_undecodable": skips.total,
    }
    out["p50_vs_baseline"] = round(out["p50_ms"] / out["baseline_p50_ms"], 3) if out["baseline_p50_ms"] else None
    return out
