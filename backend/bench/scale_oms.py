"""The OMS half of `tradeops bench scale`: the order path split by account into 1, 2 and 4
partitions (`[partitions] "orders.new" = k`), with k instances each of oms, risk and live-gateway
(paper venue), each size on a fresh Redis (or the local cluster, flushed).

Figures, as for the normalizer: throughput (a backlog of orders published at once, from the first
XADD until every partition of every stream of the path is drained: every order final), the P99
of a paced flow (an order's send to its final event, from the OMS's timestamps and the sender's),
CPU seconds per million orders (the instances, and Redis), and per account `lost` (an order sent
without a final state), `duplicated` (an order taken in twice, or ending twice) and
`out_of_order` (an account's orders taken in, on its partition of orders.events, in another order
than they were sent). `--kill` SIGKILLs one OMS instance under the paced flow: its partitions go
to the others when its lease lapses (they take its pending entries over, in order)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import redis

from backend.bench.harness import BenchStack, wait_until
from backend.bench.risk import PRICES, SYMBOLS
from backend.bench.scale import cpu_seconds, figures, kill_primary_of
from backend.bus import codec, partitions, replies, streams
from backend.bus.publish import queue
from backend.errors import TradeopsError
from backend.marketdata import ticks as tickcols
from backend.messages import FINAL_STATES, Order, OrderEvent, Tick

NAME = "scale"
ACCOUNTS = 64
SERVICES = ("oms", "risk", "live-gateway")
GROUPS = {  # the path's group-consumed streams, and who consumes each
    streams.ORDERS_NEW: "oms",
    streams.RISK_REQUESTS: "risk",
    streams.RISK_DECISIONS: "oms",
    streams.EXEC_ORDERS: "live-gateway",
    streams.EXEC_REPORTS: "oms",
}
_event = codec.decoder(OrderEvent)
CONFIG = """
[services.oms.admission]  # a backlog measures throughput: nothing refused as overloaded
max_intake_age_ms = 600000
max_in_flight = 1000000
max_answer_ms = 600000
"""


class Orders:
    """Market orders over ACCOUNTS accounts, numbered per account (`a07-000123`)."""

    def __init__(self) -> None:
        self.next = dict.fromkeys(range(ACCOUNTS), 0)
        self.sent_ns: dict[str, int] = {}
        self.i = 0

    def make(self, count: int) -> list[Order]:
        out = []
        now = time.time_ns()
        for _ in range(count):
            a = self.i % ACCOUNTS
            n = self.next[a]
            self.next[a] = n + 1
            s = SYMBOLS[self.i % len(SYMBOLS)]
            c = f"a{a:02d}-{n:06d}"
            out.append(
                Order(
                    client_order_id=c,
                    account=f"acct-{a:02d}",
                    symbol=s,
                    side="buy" if n % 2 else "sell",  # flat positions: risk approves them all
                    type="market",
                    quantity=0.01,
                    sent_ns=now,
                    source="bench",
                )
            )
            self.sent_ns[c] = now
            self.i += 1
        return out

    @property
    def sent(self) -> int:
        return self.i


def _publish(stack: BenchStack, orders: list[Order]) -> None:
    """XADD the orders, each to its account's partition (publish routes by the process's layout),
    500 to a pipeline; tried again while a cluster fails over."""
    r = stack.r
    assert r is not None
    for start in range(0, len(orders), 500):
        chunk = orders[start : start + 500]
        for attempt in range(200):
            try:
                pipe = r.pipeline(transaction=False)
                for o in chunk:
                    queue(pipe, streams.ORDERS_NEW, o)
                pipe.execute()
                break
            except (redis.RedisError, OSError):
                stack.retries += 1
                time.sleep(min(0.5, 0.02 * 2**attempt))
        else:
            raise TradeopsError("could not publish orders for a minute")


def _seed_prices(stack: BenchStack, tagged: bool) -> None:
    r = stack.r
    assert r is not None
    batch = tickcols.from_ticks([Tick(s, 1, PRICES[s], 1.0, time.time_ns()) for s in SYMBOLS])
    queue(r, partitions.name(streams.MD_TICKS, 0, 1, tagged=tagged), batch)


def _drained(stack: BenchStack, k: int, tagged: bool) -> bool:
    r = stack.r
    assert r is not None
    for stream, group in GROUPS.items():
        for name in partitions.names(stream, k, tagged=tagged):
            try:
                groups = [g for g in r.xinfo_groups(name) if replies.text(g["name"]) == group]
            except redis.ResponseError:  # not created yet
                return False
            if not groups or groups[0]["lag"] or groups[0]["pending"]:
                return False
    return True


def _owned(stack: BenchStack, k: int, instances: dict[str, list[str]]) -> bool:
    r = stack.r
    assert r is not None
    from backend.bus.leases import lease_key

    for service, names in instances.items():
        owners = [r.get(lease_key(service, p, k)) for p in range(k)]
        if any(o is None for o in owners):
            return False
        if {replies.text(o).split("/")[0] for o in owners if o is not None} != set(names):
            return False
    return True


def _check(stack: BenchStack, orders: Orders, k: int, tagged: bool, paced: set[str]) -> dict[str, Any]:
    """Per account, from every partition of orders.events: lost, duplicated, out of order; and
    the paced orders' latency (sent -> final event)."""
    r = stack.r
    assert r is not None
    news: dict[str, int] = defaultdict(int)
    finals: dict[str, int] = defaultdict(int)
    final_ns: dict[str, int] = {}
    states: dict[str, int] = defaultdict(int)
    ooo = 0
    for name in partitions.names(streams.ORDERS_EVENTS, k, tagged=tagged):
        last: dict[str, int] = {}
        start = "-"
        while True:
            page = replies.entries(r.xrange(name, min=start, count=5000))
            if not page:
                break
            for _, f in page:
                ev = _event.decode(codec.payload(f))
                c = ev.client_order_id
                if ev.state == "NEW":
                    news[c] += 1
                    a, n = ev.account, int(c.rsplit("-", 1)[1])
                    if n < last.get(a, -1):
                        ooo += 1
                    last[a] = n
                elif ev.state in FINAL_STATES:
                    finals[c] += 1
                    final_ns.setdefault(c, ev.ts_ns)
                    states[ev.state] += 1
            start = "(" + replies.text(page[-1][0])
    lost = sum(1 for c in orders.sent_ns if finals.get(c, 0) == 0)
    dup = sum(max(0, n - 1) for n in news.values()) + sum(max(0, n - 1) for n in finals.values())
    lat = [(final_ns[c] - orders.sent_ns[c]) / 1e6 for c in paced if c in final_ns]
    return {
        "lost": lost,
        "duplicated": dup,
        "out_of_order": ooo,
        "states": dict(sorted(states.items())),
        "latency_ms": lat,
    }


def size(args: argparse.Namespace, k: int, cluster: Any = None, kill_primary: bool = False) -> dict[str, Any]:
    """One size of the order path: k partitions, k instances of each of its services; with
    `kill_primary`, the cluster's primary serving partition 0 is SIGKILLed under the paced flow
    (its replica takes over: what the replication lag lost is counted, as `lost`)."""
    url = None if cluster is None else f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}/0"
    tagged = cluster is not None
    partitions.use({streams.ORDERS_NEW: k})  # this process routes orders as the services read them
    try:
        with BenchStack(redis_url=url) as stack:
            cfg = Path(stack.data_dir) / "scale-oms.toml"
            cfg.write_text(f'[partitions]\n"{streams.ORDERS_NEW}" = {k}\n{CONFIG}')
            _seed_prices(stack, tagged)
            instances = {s: [f"{s}-{j}" for j in range(k)] for s in SERVICES}
            procs = {i: stack.start(s, instance=i, config=cfg) for s, names in instances.items() for i in names}
            if k > 1 or tagged:  # one partition on one Redis: no leases, the one instance reads it
                wait_until(lambda: _owned(stack, k, instances), 30, "every partition of the order path owned", NAME)
            if cluster is not None:
                server_pids = [n.pid for n in cluster.nodes]
            else:
                server_pids = [stack.server.proc.pid] if stack.server and stack.server.proc else []
            pids = [p.pid for p in procs.values()]
            orders = Orders()

            # 1. a backlog, drained: throughput and CPU per million orders
            backlog = orders.make(args.orders)
            cpu0, redis0 = cpu_seconds(pids), cpu_seconds(server_pids)
            t0 = time.monotonic()
            _publish(stack, backlog)
            wait_until(lambda: _drained(stack, k, tagged), 120 + args.orders / 500, "the order backlog drained", NAME)
            took = time.monotonic() - t0
            cpu = cpu_seconds(pids) - cpu0
            redis_cpu = cpu_seconds(server_pids) - redis0
            drained = orders.sent
            paced: set[str] = set()

            # 2. a paced flow: latency (and, with --kill, an OMS instance killed under it)
            chunk = max(1, args.order_rate // 50)  # 50 publishes a second
            end = time.monotonic() + args.seconds
            killed: dict[str, Any] = {}
            sent_at = began = time.monotonic()
            kill_t = 0.0
            while time.monotonic() < end:
                batch = orders.make(chunk)
                paced.update(o.client_order_id for o in batch)
                _publish(stack, batch)
                half = time.monotonic() > end - args.seconds / 2
                if kill_primary and not killed and half:
                    killed = kill_primary_of(stack, cluster, partitions.name(streams.ORDERS_NEW, 0, k, tagged=True))
                    killed["at_s"] = round(time.monotonic() - began, 2)
                    kill_t = time.monotonic()
                elif args.kill and k > 1 and not killed and half and not kill_primary:
                    victim = instances["oms"][-1]
                    os.kill(procs[victim].pid, signal.SIGKILL)
                    stack.procs.pop(victim, None)
                    killed = {"instance": victim, "at_s": round(time.monotonic() - began, 2)}
                    kill_t = time.monotonic()
                sent_at += chunk / args.order_rate
                time.sleep(max(0.0, sent_at - time.monotonic()))
            wait_until(lambda: _drained(stack, k, tagged), 90, "the paced orders drained", NAME)
            if killed:
                killed["recovered_s"] = round(time.monotonic() - kill_t, 2)
                killed["publish_retries"] = stack.retries
            result = _check(stack, orders, k, tagged, paced)
            lat = np.array(result.pop("latency_ms") or [0.0])
            rate = args.order_rate
            return figures("orders", k, drained, orders.sent, took, rate, lat, cpu, redis_cpu, result, killed)
    finally:
        partitions.use({})
