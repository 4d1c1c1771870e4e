"""`tradeops bench oms`: orders end to end through oms, risk, live-gateway and paper fills, each its
own process, under open-loop load: throughput, intake -> accepted latency (the OMS's own
timestamps), lost and duplicated orders, and how many ended in each final state. Past the OMS's
capacity orders are refused at once (REJECTED, reason `overloaded`): `rejected_overloaded` counts
them, and the latency figures are the accepted orders'."""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from backend import aio
from backend.bench.harness import BenchStack
from backend.bench.load import collect, open_loop
from backend.bench.risk import PRICES, SYMBOLS, seed_prices
from backend.bus import streams
from backend.bus.entries import Skips
from backend.errors import TradeopsError
from backend.messages import FINAL_STATES, Order, OrderEvent
from backend.trading.admission import OVERLOADED

NAME = "oms"
HELP = "orders end to end (oms, risk, live-gateway, paper fills): rate, latency, loss, duplicates"
DEFAULT_SECONDS = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=1000.0, help="orders per second (default 1000)")


def order(i: int, now_ns: int) -> Order:
    s = SYMBOLS[i % len(SYMBOLS)]
    # alternate buys and sells per account so positions stay flat; every 10th a resting limit
    limit = PRICES[s] * (0.99 if i % 2 else 1.01) if i % 10 == 0 else None
    return Order(
        client_order_id=f"o{i}",
        account=f"acct-{i % 10}",
        symbol=s,
        side="buy" if (i // 10) % 2 else "sell",
        type="limit" if limit else "market",
        quantity=0.01,
        limit_price=limit,
        time_in_force="IOC" if limit else "GTC",
        sent_ns=now_ns,
        source="bench",
    )


async def measure(url: str, rate: float, seconds: float) -> dict[str, Any]:
    new_ns: dict[str, int] = {}
    acc_ns: dict[str, int] = {}
    routed_ns: dict[str, int] = {}
    finals: dict[str, list[str]] = defaultdict(list)
    news: Counter[str] = Counter()
    overloaded: set[str] = set()
    sent_ns: dict[str, int] = {}

    def make(i: int, now_ns: int) -> Order:
        o = order(i, now_ns)
        sent_ns[o.client_order_id] = now_ns
        return o

    def on(ev: OrderEvent, _now: int) -> None:
        c = ev.client_order_id
        if ev.state == "NEW":
            news[c] += 1
            new_ns[c] = ev.ts_ns
        elif ev.state == "ROUTED":
            routed_ns[c] = ev.ts_ns
        elif ev.state == "ACCEPTED" and c not in acc_ns:
            acc_ns[c] = ev.ts_ns
        elif ev.state in FINAL_STATES:
            finals[c].append(ev.state)
            if ev.state == "REJECTED" and ev.reason == OVERLOADED:
                overloaded.add(c)

    # the load's own pauses would bunch its orders: what is alive now is out of the collector's way
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    skips = Skips()
    col = asyncio.create_task(collect(url, streams.ORDERS_EVENTS, on, stop, decode=OrderEvent, skips=skips))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    sent = await open_loop(url, streams.ORDERS_NEW, make, rate, seconds)
    deadline = time.monotonic() + 30
    while len(finals) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - t0
    stop.set()
    await col
    lat = np.array([acc_ns[c] - new_ns[c] for c in acc_ns if c in new_ns], dtype=np.int64) / 1e6
    done = len(finals)
    routed = [c for c in acc_ns if c in new_ns and c in routed_ns]
    to_routed = np.array([routed_ns[c] - new_ns[c] for c in routed], dtype=np.int64) / 1e6
    to_acc = np.array([acc_ns[c] - routed_ns[c] for c in routed], dtype=np.int64) / 1e6
    # with the wait in orders.new before the OMS took the order in (what admission control bounds)
    e2e = np.array([acc_ns[c] - sent_ns[c] for c in acc_ns if c in sent_ns], dtype=np.int64) / 1e6
    return {
        "rate": rate,
        "seconds": round(elapsed, 2),
        "sent": sent,
        "orders_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "accepted_per_s": round(len(lat) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "max_ms": round(float(lat.max()), 3) if len(lat) else None,
        # where the time goes: intake -> routed (the risk round trip) and routed -> accepted
        # (the venue round trip through live-gateway), each with the OMS's own work
        "intake_to_routed_p50_ms": _p(to_routed, 50),
        "routed_to_accepted_p50_ms": _p(to_acc, 50),
        "sent_to_accepted_p50_ms": _p(e2e, 50),
        "sent_to_accepted_p99_ms": _p(e2e, 99),
        "lost": sent - done,
        "duplicated": sum(1 for v in finals.values() if len(v) > 1) + sum(1 for v in news.values() if v > 1),
        "final_states": dict(Counter(v[0] for v in finals.values())),
        "skipped_undecodable": skips.total,
        "rejected_overloaded": len(overloaded),
    }


def _p(ms: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(ms, q)), 3) if len(ms) else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.rate <= 0:
        raise TradeopsError("--rate must be positive")
    with BenchStack() as stack:
        assert stack.r is not None
        seed_prices(stack.r)
        for name in ("risk", "live-gateway", "oms"):
            stack.start(name)
        return aio.run(measure(stack.url, args.rate, args.seconds))
