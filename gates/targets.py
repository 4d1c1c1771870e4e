"""The checks that measure the deployed target instances (kind `target`): the task04 figures are
taken on the `<service>-target` instances the migration deployed (what the supervisor of `tradeops
up` / `tradeops supervise` runs), never on instances started for the measurement.

The probe is paper orders on `orders.new` (the operator's own intake), at a fixed rate for a few
seconds, each tagged with the run's id. They travel the deployed path: the OMS takes them in,
asks risk on `risk.requests`, routes them to live-gateway and the paper venue. What is measured is
what the instances themselves stamp on their way:

- `service = "risk"`: the round trip of each probe order's risk request (the OMS's `sent_ns` on
  the request -> the decision seen on `risk.decisions`), for the decisions the target decided
  (`RiskDecision.instance`);
- `service = "oms"`: intake -> accepted on the OMS's own timestamps (`orders.events`), the orders
  per second that reached a final state, lost and duplicated orders, for the orders the target
  took in (`OrderEvent.instance` on NEW).

Legacy and target instances share their consumer group while a service is being validated
(blue/green), so the evidence says how many probe orders each instance handled, and the target's
heartbeat before and after (its pid, what it processed, the latency its own recorders report).
No target deployed, or one not running, or a path the orders cannot travel: failed, with what is
missing exactly and the command that provides it."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from backend import aio
from backend.bench.load import open_loop
from backend.bus import codec, streams
from backend.bus.broadcast import Broadcast, BroadcastSync, newest_sync
from backend.bus.entries import Skips, decode_entries
from backend.bus.publish import publish_sync
from backend.errors import TradeopsError
from backend.health import read_heartbeats
from backend.marketdata import ticks as tickcols
from backend.messages import (
    FINAL_STATES,
    ExecReport,
    Heartbeat,
    Order,
    OrderEvent,
    Position,
    RiskDecision,
    Side,
    TickBatch,
)
from backend.migration.compose import target_instance
from backend.migration.state import board
from gates.checks import OPS, CheckContext, Result

PATH = ("oms", "risk", "live-gateway")
"""The services every probe order passes through."""
SERVICES = ("oms", "risk")
"""The services a target check measures."""
PREFERRED = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
SOURCE = "gate-probe"
DEPLOYED = ("deploying", "validating", "migrated")


@dataclass
class Probe:
    """What the probe's collector saw of one run's orders."""

    run: str
    sent: int = 0
    elapsed: float = 0.0
    sent_ns: dict[str, int] = field(default_factory=dict)
    new: dict[str, OrderEvent] = field(default_factory=dict)
    news: Counter[str] = field(default_factory=Counter)
    accepted_ns: dict[str, int] = field(default_factory=dict)
    finals: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    refusals: Counter[str] = field(default_factory=Counter)
    """Why probe orders ended rejected or denied (overloaded: refused at the OMS's door)."""
    decisions: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    """risk instance -> (client order id, round trip ms) of each decision it made."""

    def ours(self, coid: str) -> bool:
        return coid.startswith(self.run)


def check(ctx: CheckContext, p: dict[str, Any]) -> Result:
    service = str(p.get("service", ""))
    if service not in SERVICES:
        raise TradeopsError(f"target check: service must be one of {', '.join(SERVICES)}, not {service!r}")
    max_age = float(p.get("max_age_s", 3.0))
    rate, seconds = float(p.get("rate", 100.0)), float(p.get("seconds", 3.0))
    if rate <= 0 or seconds <= 0:
        raise TradeopsError("target check: rate and seconds must be positive")
    beats = read_heartbeats(ctx.r)
    targets, missing = deployed(ctx.r, service, beats, max_age)
    if missing:
        return Result("failed", missing)
    carriers, missing = path(beats, max_age)
    if missing:
        return Result("failed", missing)
    prices = last_prices(ctx.r)
    if not prices:
        return Result(
            "failed",
            {
                "missing": "no prices on md.ticks: risk denies an order on a symbol with no trade seen, "
                "so the probe orders cannot be accepted",
                "provide": "tradeops up (the exchange's market data through gateway and normalizer), "
                "then run the check again",
            },
        )
    symbols = [s for s in PREFERRED if s in prices] or sorted(prices)[:3]
    run = f"gp{uuid.uuid4().hex[:10]}-"
    ages = {b.instance: round((time.time_ns() - b.ts_ns) / 1e9, 2) for b in targets}  # when the probe began
    probe = aio.run(_probe(ctx.r, run, symbols, rate, seconds))
    mine = {b.instance for b in targets}
    after = _after(ctx.r, service, mine, time.time_ns())
    measured = [{**_instance(b, after.get(b.instance)), "heartbeat_age_s": ages[b.instance]} for b in targets]
    out = summarize(service, probe, mine)
    ev: dict[str, Any] = {
        "service": service,
        "measured": measured,
        "path": carriers,
        "probe": {
            "orders": probe.sent,
            "rate": rate,
            "seconds": seconds,
            "run": run.rstrip("-"),
            "account": f"{SOURCE}-*",
            "symbols": symbols,
            "stream": streams.ORDERS_NEW,
        },
        "metric": p["metric"],
        "op": p["op"],
        "threshold": p["threshold"],
        "result": out,
    }
    handled = out["handled_by_target"]
    if not handled:
        others = out["handled_by"] or {}
        who = ", ".join(f"{k}: {v}" for k, v in others.items()) or "no instance"
        return Result(
            "failed",
            {
                **ev,
                "value": None,
                "reason": f"no probe order was handled by {', '.join(sorted(mine))} ({who}): "
                "the target was not measured",
            },
        )
    value = out.get(p["metric"])
    ev["value"] = value
    if value is None:
        return Result("inconclusive", {**ev, "reason": f"the probe gave no {p['metric']}"})
    return Result("passed" if OPS[p["op"]](float(value), float(p["threshold"])) else "failed", ev)


def deployed(r: Any, service: str, beats: list[Heartbeat], max_age: float) -> tuple[list[Heartbeat], dict[str, Any]]:
    """The running target instances of `service` with a fresh heartbeat; else what is missing and
    the command that provides it."""
    now = time.time_ns()
    name = target_instance(service)
    mine = [b for b in beats if b.service == service and b.environment == "target"]
    fresh = [b for b in mine if (now - b.ts_ns) / 1e9 <= max_age]
    running = [b for b in fresh if b.state == "running"]
    if running:
        return running, {}
    st = board(r).get(service)
    state = st.state if st is not None else "unknown"
    seen = [_instance(b) for b in mine]
    if fresh:
        b = fresh[0]
        why = f": {b.reason}" if b.reason else ""
        return [], {
            "missing": f"{b.instance} (pid {b.pid} on {b.host or '?'}) is {b.state}{why}, not running: "
            f"the deployed {service} target cannot be measured",
            "instances": seen,
            "migration_state": state,
            "provide": f"tradeops ps and the log of {b.instance} (tradeops logs {service}) say why; "
            f"run the check again once it is running",
        }
    if state not in DEPLOYED:
        return [], {
            "missing": f"no deployed {service} target: {service} is {state} in the migration, so no {name} "
            "instance runs (the check measures the deployed target, never an instance it starts)",
            "instances": seen,
            "migration_state": state,
            "provide": f"tradeops migrate start {service} --reason '...' (the supervisor of tradeops up or "
            f"tradeops supervise then runs {name}), then run the check again",
        }
    return [], {
        "missing": f"{service} is {state} in the migration but no {name} instance has a heartbeat of the last "
        f"{max_age:g}s" + (f" (stale: {', '.join(i['instance'] for i in seen)})" if seen else ""),
        "instances": seen,
        "migration_state": state,
        "provide": f"tradeops up (or tradeops supervise): the supervisor runs {name}; tradeops ps shows it",
    }


def path(beats: list[Heartbeat], max_age: float) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The running instances of each service on the probe's path; else what is missing."""
    now = time.time_ns()
    out: dict[str, list[str]] = {}
    for svc in PATH:
        out[svc] = sorted(
            f"{b.instance} ({b.environment}, pid {b.pid})"
            for b in beats
            if b.service == svc and b.state == "running" and (now - b.ts_ns) / 1e9 <= max_age
        )
    gone = [s for s, v in out.items() if not v]
    if gone:
        return out, {
            "missing": f"no running {', '.join(gone)}: the probe orders travel oms -> risk -> live-gateway "
            "(paper venue) and could not be carried",
            "path": out,
            "provide": "tradeops up (every service, legacy or migrated), and tradeops migrate start SERVICE "
            "--reason '...' for a target, then run the check again",
        }
    return out, {}


def last_prices(r: Any) -> dict[str, float]:
    """The last price of each symbol on the newest md.ticks batches."""
    newest = newest_sync(r, streams.MD_TICKS, 50)  # oldest first (each partition's, when split)
    prices: dict[str, float] = {}
    batches, _ = decode_entries(newest, TickBatch, stream=streams.MD_TICKS, skips=Skips())
    for _, batch in batches:
        prices.update(tickcols.last_prices(batch))
    return prices


def _order(run: str, symbols: list[str]) -> Any:
    def make(i: int, now_ns: int) -> Order:
        s = symbols[i % len(symbols)]
        # buys and sells alternate per account so the probe leaves its accounts flat
        return Order(
            client_order_id=f"{run}{i}",
            account=f"{SOURCE}-{i % 10}",
            symbol=s,
            side="buy" if (i // 10) % 2 else "sell",
            type="market",
            quantity=0.01,
            sent_ns=now_ns,
            source=SOURCE,
        )

    return make


async def _probe(r: Any, run: str, symbols: list[str], rate: float, seconds: float) -> Probe:
    pr = Probe(run)
    make = _order(run, symbols)

    def sent(i: int, now_ns: int) -> Order:
        o = make(i, now_ns)
        pr.sent_ns[o.client_order_id] = now_ns
        return o

    reader = Broadcast(
        r,
        {streams.ORDERS_EVENTS: "$", streams.RISK_DECISIONS: "$"},
        count=2000,
        block_ms=50,
        min_interval_s=0,
        decode={streams.ORDERS_EVENTS: OrderEvent, streams.RISK_DECISIONS: RiskDecision},
    )
    await reader.start()
    stop = asyncio.Event()

    async def collect() -> None:
        while not stop.is_set():
            got = await reader.read()
            now = time.time_ns()
            for stream, _, msg in got:
                if stream == streams.RISK_DECISIONS:
                    if pr.ours(msg.client_order_id):
                        pr.decisions[msg.instance or "?"].append(
                            (msg.client_order_id, (now - msg.request_sent_ns) / 1e6)
                        )
                    continue
                c = msg.client_order_id
                if not pr.ours(c):
                    continue
                if msg.state == "NEW":
                    pr.news[c] += 1
                    pr.new[c] = msg
                elif msg.state == "ACCEPTED" and c not in pr.accepted_ns:
                    pr.accepted_ns[c] = msg.ts_ns
                if msg.state in FINAL_STATES:
                    pr.finals[c].append(msg.state)
                    if msg.state in ("REJECTED", "DENIED"):
                        by = f" by {msg.instance}" if msg.instance else ""
                        pr.refusals[f"{msg.state}{by}: {msg.reason[:60]}"] += 1

    gc.collect()
    col = asyncio.create_task(collect())
    try:
        t0 = time.monotonic()
        pr.sent = await open_loop(r, streams.ORDERS_NEW, sent, rate, seconds)
        deadline = time.monotonic() + 30
        while len(pr.finals) < pr.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        pr.elapsed = time.monotonic() - t0
    finally:
        stop.set()
        await col
        await reader.close()
    return pr


def summarize(service: str, pr: Probe, mine: set[str]) -> dict[str, Any]:
    """The figures of the probe for the target instances `mine` (and who handled the rest)."""
    done = len(pr.finals)
    common = {
        "sent": pr.sent,
        "completed": done,
        "lost": pr.sent - done,
        "duplicated": sum(1 for v in pr.finals.values() if len(v) > 1) + sum(1 for v in pr.news.values() if v > 1),
        "final_states": dict(Counter(v[0] for v in pr.finals.values())),
        "refused_why": dict(pr.refusals.most_common(5)),
        "seconds": round(pr.elapsed, 2),
    }
    if service == "risk":
        by = {k: len(v) for k, v in sorted(pr.decisions.items())}
        rtt = np.array([ms for k, v in pr.decisions.items() if k in mine for _, ms in v])
        return {
            **common,
            "handled_by": by,
            "handled_by_target": int(sum(n for k, n in by.items() if k in mine)),
            "measured_as": "risk request (sent by the OMS) -> decision seen on risk.decisions, "
            "for the decisions the target made",
            **_percentiles(rtt),
        }
    taken = Counter(ev.instance or "?" for ev in pr.new.values())
    ours = [c for c, ev in pr.new.items() if ev.instance in mine]
    lat = np.array([(pr.accepted_ns[c] - pr.new[c].ts_ns) / 1e6 for c in ours if c in pr.accepted_ns])
    done_ours = sum(1 for c in ours if c in pr.finals)
    return {
        **common,
        "handled_by": dict(sorted(taken.items())),
        "handled_by_target": len(ours),
        "measured_as": "intake -> accepted on the OMS's own timestamps (orders.events), for the orders the "
        "target took in",
        "orders_per_s": round(done_ours / pr.elapsed, 1) if pr.elapsed else 0.0,
        "accepted": len(lat),
        **_percentiles(lat),
    }


def _percentiles(ms: np.ndarray) -> dict[str, float | None]:
    if not len(ms):
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    q = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": round(float(q[0]), 3),
        "p90_ms": round(float(q[1]), 3),
        "p99_ms": round(float(q[2]), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def _after(r: Any, service: str, instances: set[str], since_ns: int, timeout: float = 3.0) -> dict[str, Heartbeat]:
    """The target instances' first heartbeats after the probe (what their recorders say of it)."""
    deadline = time.monotonic() + timeout
    got: dict[str, Heartbeat] = {}
    while True:
        for b in read_heartbeats(r):
            if b.service == service and b.instance in instances and b.ts_ns >= since_ns:
                got[b.instance] = b
        if len(got) == len(instances) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _instance(b: Heartbeat, after: Heartbeat | None = None) -> dict[str, Any]:
    """One instance as the evidence names it: name, pid, host, its heartbeat; after the probe,
    what it processed meanwhile and the latency its own recorders report."""
    out: dict[str, Any] = {
        "instance": b.instance,
        "service": b.service,
        "environment": b.environment,
        "pid": b.pid,
        "host": b.host,
        "state": b.state,
        "heartbeat_age_s": round((time.time_ns() - b.ts_ns) / 1e9, 2),
        "started_ns": b.started_ns,
    }
    if after is not None:
        out["processed_during_probe"] = after.processed - b.processed
        out["recorded_latency_ms"] = dict(after.latency_ms)
        out["pid_unchanged"] = after.pid == b.pid and after.started_ns == b.started_ns
    return out


# -- paper: one paper probe order followed through the deployed services to a stream ------------
PAPER_PATH = ("oms", "risk", "live-gateway", "ptrc")
SIDES: tuple[Side, Side] = ("buy", "sell")
"""The services a paper probe order and its fill pass through on their way to `positions`."""


def paper(ctx: CheckContext, p: dict[str, Any]) -> Result:
    """A paper probe order (and the one closing it) through oms, risk, live-gateway and the paper
    venue, its fill followed on exec.reports and the probe account's position on `positions`
    (what ptrc makes of the fill): the check makes its own traffic instead of waiting for some."""
    timeout = float(p.get("timeout_s", 15.0))
    max_age = float(p.get("max_age_s", 3.0))
    beats = read_heartbeats(ctx.r)
    now = time.time_ns()
    carriers = {
        svc: sorted(
            f"{b.instance} ({b.environment}, pid {b.pid})"
            for b in beats
            if b.service == svc and b.state == "running" and (now - b.ts_ns) / 1e9 <= max_age
        )
        for svc in PAPER_PATH
    }
    gone = [s for s, v in carriers.items() if not v]
    if gone:
        return Result(
            "failed",
            {
                "missing": f"no running {', '.join(gone)}: a paper probe order travels oms -> risk -> live-gateway "
                "(paper venue) and its fill -> ptrc -> positions",
                "path": carriers,
                "provide": "tradeops up (every service), or tradeops migrate start SERVICE --reason '...' for a "
                "target, then run the check again",
            },
        )
    prices = last_prices(ctx.r)
    if not prices:
        return Result(
            "failed",
            {
                "missing": "no prices on md.ticks: risk denies the probe order (no trade seen for its symbol)",
                "provide": "tradeops up (the exchange's market data), then run the check again",
            },
        )
    symbol = next((s for s in PREFERRED if s in prices), sorted(prices)[0])
    run = f"gp{uuid.uuid4().hex[:10]}"
    account = f"{SOURCE}-{run}"
    # from their newest entries now (every partition's, when the order path is split by account)
    watched = (streams.ORDERS_EVENTS, streams.EXEC_REPORTS, streams.POSITIONS)
    watch = BroadcastSync(ctx.r, dict.fromkeys(watched, "$"), block_ms=200)
    watch.start()
    orders = [
        Order(
            client_order_id=f"{run}-{i}",
            account=account,
            symbol=symbol,
            side=side,
            type="market",
            quantity=0.01,
            sent_ns=time.time_ns(),
            source=SOURCE,
        )
        for i, side in enumerate(SIDES)  # the second closes the first: the account ends flat
    ]
    t0 = time.monotonic()
    for o in orders:
        publish_sync(ctx.r, streams.ORDERS_NEW, o)
    seen: dict[str, Any] = {"taken_in_by": {}, "finals": {}, "fills": [], "positions": []}
    want = {o.client_order_id for o in orders}
    deadline = t0 + timeout

    def flat() -> bool:  # both fills booked: ptrc may publish them as one update or two
        return bool(seen["positions"]) and abs(seen["positions"][-1]["quantity"]) < 1e-12

    while time.monotonic() < deadline and (len(seen["fills"]) < len(orders) or not flat()):
        by_stream: dict[str, list[tuple[bytes, Any]]] = {}
        for name, eid, fields in watch.read():
            by_stream.setdefault(name, []).append((eid, fields))
        for name, items in by_stream.items():
            _paper_seen(name, items, want, account, seen, t0)
    ev: dict[str, Any] = {
        "probe": {"orders": [o.client_order_id for o in orders], "account": account, "symbol": symbol},
        "path": carriers,
        "taken_in_by": seen["taken_in_by"],
        "final_states": seen["finals"],
        "fills": seen["fills"],
        "positions": seen["positions"],
        "timeout_s": timeout,
    }
    if len(seen["fills"]) >= len(orders) and flat():
        return Result("passed", ev)
    if len(seen["fills"]) < len(orders):
        ev["missing"] = (
            f"{len(seen['fills'])} of {len(orders)} probe fills on exec.reports in {timeout:g}s "
            f"(final states: {seen['finals'] or 'none'}): the order path did not fill the paper probe orders"
        )
        ev["provide"] = (
            "tradeops order list / tradeops ps say where the orders stopped; tradeops up starts what is missing"
        )
    else:
        ev["missing"] = (
            f"the probe's {len(orders)} fills reached exec.reports but positions has no update for {account} "
            f"booking both in {timeout:g}s (updates seen: {seen['positions'] or 'none'}): ptrc is not turning "
            "fills into positions"
        )
        ev["provide"] = "tradeops ps and tradeops logs ptrc say why"
    return Result("failed", ev)


_events = codec.decoder(OrderEvent)
_reports = codec.decoder(ExecReport)
_positions = codec.decoder(Position)


def _paper_seen(
    stream: str, items: list[tuple[bytes, Any]], want: set[str], account: str, seen: dict[str, Any], t0: float
) -> None:
    """Note what the probe's orders became on `stream`'s new entries `items`."""
    ms = round((time.monotonic() - t0) * 1000, 1)
    dec = {streams.ORDERS_EVENTS: _events, streams.EXEC_REPORTS: _reports, streams.POSITIONS: _positions}[stream]
    for _, f in items:
        try:
            m = dec.decode(codec.payload(f))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if isinstance(m, OrderEvent) and m.client_order_id in want:
            if m.state == "NEW":
                seen["taken_in_by"][m.client_order_id] = m.instance or "?"
            elif m.state in FINAL_STATES:
                seen["finals"][m.client_order_id] = m.state + (f": {m.reason}" if m.reason else "")
        elif isinstance(m, ExecReport) and m.client_order_id in want and m.kind == "fill":
            seen["fills"].append({"order": m.client_order_id, "qty": m.fill_qty, "price": m.fill_price, "after_ms": ms})
        elif isinstance(m, Position) and m.account == account:
            seen["positions"].append({"symbol": m.symbol, "quantity": m.quantity, "after_ms": ms})
