"""`tradeops bench cutover`: blue/green cutover on the bus, proven under load.

A private stack (embedded Redis in a temporary data dir, the local exchange, and gateway,
normalizer, sink-ticks, risk, live-gateway, oms, ptrc and alerting as processes under the process
supervisor) carries market data at a fixed trade rate and paper orders at a fixed order rate while
normalizer, gateway, live-gateway, risk and oms are cut over (start -> target healthy -> cutover
-> legacy drained and stopped; oms cannot start before risk and live-gateway are migrated) and
oms, live-gateway and gateway are rolled back (legacy back and healthy -> target drained), every
move through backend/migration/cutover.py. While a gateway's two instances overlap both publish
every trade; while a live-gateway's do, both fill orders.

Counted honestly, from the streams, after the load stops and everything has drained:
- ticks: every trade the exchange sent to the gateway (per symbol, from the first id the gateway
  received to the last id the exchange says it sent) must be on md.ticks exactly once, by trade id,
  with nothing dead-lettered (an overlap's second copies are the normalizer's `repeats`);
- orders: every order sent must reach exactly one final state, with one NEW event, and be sent
  to the venue at most once;
- fills and positions: no trade id reported for two orders or quantities, no fill ptrc could not
  book (dead-lettered breaks), and ptrc's positions (quantity and realized PnL) the ones the OMS's
  orders make (backend/posttrade/reconcile.py);
- alerts: the ones still active at the end (none expected: the load breaches no limit).

`cutover_ms` is the longest switch over every cutover and the rollback: from the move recorded to
the instance being replaced drained and stopped (each move's figures are in `moves`).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from types import TracebackType
from typing import Any

import msgspec

from backend import aio
from backend.bench import counting
from backend.bench.harness import BenchStack, wait_until
from backend.bench.load import collect, open_loop
from backend.bench.md_pipeline import (
    gateway_caught_up,
    start_exchange,
    stop_exchange,
    wait_gateway_flushed,
    wait_group_drained,
)
from backend.bench.oms import order
from backend.bus import codec, streams
from backend.bus.entries import Skips, decode_entries, decode_value
from backend.errors import TradeopsError
from backend.messages import FINAL_STATES, Heartbeat, MigrationEvent, OrderEvent
from backend.migration import cutover as switch
from backend.migration import inventory
from backend.migration.gate_status import gate_guards
from backend.migration.state import board, desired_instances, move
from backend.runtime.process import ProcessSupervisor

NAME = "cutover"
HELP = "blue/green cutover under load (md pipeline + orders): lost, duplicated, switch time"
DEFAULT_SECONDS = 20.0
SERVICES = ["gateway", "normalizer", "sink-ticks", "risk", "live-gateway", "oms", "ptrc", "alerting"]
CUT_OVER = ["normalizer", "gateway", "live-gateway", "risk", "oms"]  # dependency order
ROLL_BACK = ["oms", "live-gateway", "gateway"]
OPERATOR = "bench"
REASON = "cutover benchmark under load"
TIMEOUT_S = 60.0  # each side healthy / drained, on a loaded machine

Grant = Callable[[Any, list[str], str], Any]
"""Records proceed decisions for gates (gates.bench.proceed_for_benchmark; backend/ does not
import gates, so the CLI and the tests hand it in)."""

_ev = msgspec.msgpack.Decoder(OrderEvent)
# the bench's orders spread over accounts and symbols: no concentration limit to breach
CONFIG = "[services.sink-ticks]\nflush_s = 2.0\n[services.ptrc]\nmax_concentration = 1.0\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=5000.0, help="trades per second from the exchange (default 5000)")
    p.add_argument("--order-rate", type=float, default=200.0, help="orders per second (default 200)")


def gates_needed(services: list[str]) -> list[str]:
    """The gates guarding the priorities of `services`."""
    inv, guards = inventory.load(), gate_guards()
    return sorted({guards[p] for p in {inv.service(s).priority for s in services} if p in guards})


class CutoverStack:
    """Redis, the exchange and the services under the process supervisor, with the gates the
    moves need; stopped and thrown away on exit."""

    def __init__(
        self,
        rate: float,
        grant: Grant,
        *,
        services: list[str] | None = None,
        config: str = "",
        moved: list[str] | None = None,
    ) -> None:
        self.rate = rate
        self.grant = grant
        self.services = services or SERVICES
        self.moved = moved or CUT_OVER
        self.config_text = CONFIG + config
        self.bench = BenchStack()
        self.exchange: Any = None
        self.sup: ProcessSupervisor | None = None
        self._thread: threading.Thread | None = None
        self.last_ids: dict[str, int] | None = None
        self.skips = Skips()  # entries the counts could not decode, per stream

    @property
    def r(self) -> Any:
        return self.bench.r

    def __enter__(self) -> CutoverStack:
        self.bench.__enter__()
        try:
            self.grant(self.r, gates_needed(self.moved), "blue/green cutover under load, private Redis")
            config = self.bench.data_dir / "config.toml"
            config.write_text(self.config_text)
            self.exchange = start_exchange(self.bench.data_dir, self.rate)
            self.sup = ProcessSupervisor(self.bench.url, self.bench.data_dir, with_exchange=False, config=config)
            self.sup.services = list(self.services)
            self._thread = threading.Thread(target=self.sup.run, name="supervisor", daemon=True)
            self._thread.start()
            for svc in self.services:
                switch.wait_healthy(self.r, svc, "legacy", TIMEOUT_S)
            wait_until(lambda: self.r.xlen(streams.MD_TICKS) > 0, TIMEOUT_S, "the first ticks on md.ticks", NAME)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.sup is not None:
                self.sup.stop()
                if self._thread is not None:
                    self._thread.join(TIMEOUT_S)
                self.sup.shutdown()
        finally:
            if self.exchange is not None and self.exchange.poll() is None:
                self.exchange.kill()
                self.exchange.wait()
            self.bench.__exit__(et, e, tb)

    def pid(self, service: str, environment: str) -> int | None:
        assert self.sup is not None
        inst = self.sup.instances.get(f"{service}-{environment}")
        return inst.pid if inst is not None else None

    def serving(self, service: str) -> str:
        """The instance of `service` that serves now (legacy, or target once cut over)."""
        envs = desired_instances(board(self.r)).get(service, {"legacy"})
        return f"{service}-{'legacy' if 'legacy' in envs else 'target'}"

    def beat(self, instance: str) -> Heartbeat | None:
        service = instance.rsplit("-", 1)[0]
        raw = self.r.hget(streams.HEALTH_KEY.format(service=service, instance=instance), codec.FIELD_STR)
        return decode_value(raw, Heartbeat) if raw else None

    def stop_market_data(self) -> None:
        """Stop the exchange (once the gateway has any gap back from its trade history) and wait
        until everything it sent is through the normalizer."""
        wait_until(
            lambda: gateway_caught_up(self.r, self.serving("gateway")),
            TIMEOUT_S,
            "the gateway to backfill its gap",
            NAME,
        )
        self.last_ids = stop_exchange(self.exchange)
        wait_gateway_flushed(self.r, self.serving("gateway"), time.time_ns())
        wait_group_drained(self.r, streams.MD_TICKS_RAW, "normalizer")

    def count_ticks(self) -> dict[str, Any]:
        """Every trade sent to the gateway exactly once on md.ticks, by trade id."""
        assert self.last_ids is not None, "stop_market_data first"
        ranges = counting.expected_ranges(self.r, self.last_ids, counting.delivered_ids(self.r)[0])
        counts = counting.tick_counts(self.r, ranges)
        hb = self.beat(self.serving("gateway"))
        norm = self.beat(self.serving("normalizer"))
        return {
            **counts,
            "ticks_missed_by_gateway": hb.extra.get("missing_trades", 0) if hb else None,
            "ticks_repeated": norm.extra.get("repeats", 0) if norm else None,
        }

    def count_fills(self, coids: list[str]) -> dict[str, Any]:
        """After the orders are final: every fill's trade id used once, none ptrc could not book,
        and ptrc's positions the ones the OMS's orders (`coids`) make."""
        wait_group_drained(self.r, streams.EXEC_REPORTS_PTRC, "ptrc")
        ptrc = self.beat(self.serving("ptrc"))
        return counting.fill_counts(self.r, coids, ptrc.extra.get("duplicates", 0) if ptrc else None)

    def active_alerts(self) -> list[str]:
        """The alerts still active, as `key: message`."""
        return counting.active_alerts(self.r)

    def recorded_moves(self) -> list[str]:
        """Every move on ops.migration, as `service action: from -> to`."""
        events, _ = decode_entries(
            self.r.xrange(streams.OPS_MIGRATION), MigrationEvent, stream=streams.OPS_MIGRATION, skips=self.skips
        )
        return [f"{ev.service} {ev.action}: {ev.from_state} -> {ev.to_state}" for _, ev in events]


class OrderFlow:
    """Orders at a fixed rate (open loop) and, from orders.events, what became of each."""

    def __init__(self, url: str, rate: float, skips: Skips | None = None) -> None:
        self.url = url
        self.rate = rate
        self.skips = skips if skips is not None else Skips()
        self.sent = 0
        self.news: Counter[str] = Counter()
        self.finals: dict[str, list[str]] = defaultdict(list)
        self._stop_sending = asyncio.Event()
        self._stop_reading = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def _on(self, ev: OrderEvent, _now: int) -> None:
        if ev.state == "NEW":
            self.news[ev.client_order_id] += 1
        elif ev.state in FINAL_STATES:
            self.finals[ev.client_order_id].append(ev.state)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(
                collect(
                    self.url,
                    streams.ORDERS_EVENTS,
                    self._on,
                    self._stop_reading,
                    "0",
                    decode=OrderEvent,
                    skips=self.skips,
                )
            )
        ]
        if self.rate > 0:
            self._tasks.append(
                asyncio.create_task(
                    open_loop(self.url, streams.ORDERS_NEW, order, self.rate, float("inf"), stop=self._stop_sending)
                )
            )

    async def stop(self, timeout: float = TIMEOUT_S) -> None:
        """Stop sending; wait until every order sent is final (or `timeout`), stop reading."""
        self._stop_sending.set()
        if len(self._tasks) > 1:
            self.sent = await self._tasks[1]
        deadline = time.monotonic() + timeout
        while len(self.finals) < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stop_reading.set()
        await self._tasks[0]

    def count(self, r: Any) -> dict[str, Any]:
        """Every order sent one final state, one NEW event, routed and placed once; lost here is
        every order without a final state (lost or not final)."""
        counts = counting.order_counts(r, [f"o{i}" for i in range(self.sent)])
        return {**counts, "orders_lost": self.sent - counts["orders_final"]}


def blue_green(r: Any) -> list[switch.MoveResult]:
    """The moves the benchmark makes: cut over every service of CUT_OVER, roll those of
    ROLL_BACK back."""
    out = []
    for svc in CUT_OVER:
        move(r, svc, "start", OPERATOR, REASON)
        out.append(switch.cutover(r, svc, OPERATOR, REASON, timeout=TIMEOUT_S))
    for svc in ROLL_BACK:
        out.append(switch.rollback(r, svc, OPERATOR, REASON, timeout=TIMEOUT_S))
    return out


async def under_load(
    stack: CutoverStack, order_rate: float, seconds: float, moves: Callable[[], list[switch.MoveResult]]
) -> tuple[OrderFlow, list[switch.MoveResult], float]:
    """Orders flowing (ticks already are) while `moves` runs; the load lasts `seconds` or until
    the moves are done, whichever is later; then the load stops and everything drains."""
    flow = OrderFlow(stack.bench.url, order_rate, stack.skips)
    flow.start()
    t0 = time.monotonic()
    try:
        results = await asyncio.to_thread(moves)
        rest = seconds - (time.monotonic() - t0)
        if rest > 0:
            await asyncio.sleep(rest)  # the load runs for the time asked, after the moves
    finally:
        elapsed = time.monotonic() - t0
        await asyncio.to_thread(stack.stop_market_data)
        await flow.stop()
    return flow, results, elapsed


def measure(
    rate: float,
    order_rate: float,
    seconds: float,
    grant: Grant,
    moves: Callable[[Any], list[switch.MoveResult]] = blue_green,
) -> dict[str, Any]:
    """The whole proof; returns the figures."""
    with CutoverStack(rate, grant) as stack:
        flow, results, elapsed = aio.run(under_load(stack, order_rate, seconds, lambda: moves(stack.r)))
        ticks = stack.count_ticks()
        orders = flow.count(stack.r)
        fills = stack.count_fills([f"o{i}" for i in range(flow.sent)])
        recorded = stack.recorded_moves()
        alerts = stack.active_alerts()
    return {
        "rate": rate,
        "order_rate": order_rate,
        "seconds": round(elapsed, 2),
        **ticks,
        **orders,
        **fills,
        "alerts_active": alerts,
        "cutover_ms": round(max((m.switch_ms for m in results), default=0.0), 1),
        "moves": [m.as_dict() for m in results],
        "recorded": recorded,
        "skipped_undecodable": dict(stack.skips.by_stream),
    }


def run(args: argparse.Namespace, grant: Grant | None = None) -> dict[str, Any]:
    if args.rate <= 0 or args.order_rate <= 0:
        raise TradeopsError("--rate and --order-rate must be positive")
    if grant is None:
        raise TradeopsError("bench cutover needs proceed decisions for its gates: run it as `tradeops bench cutover`")
    return measure(args.rate, args.order_rate, args.seconds, grant)
