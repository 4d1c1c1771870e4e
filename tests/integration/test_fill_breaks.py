"""Fills on real Redis and real processes: ptrc books only fills of orders the OMS knows, within
their quantity; an unknown order, an over-fill and a trade id reused for another order are
breaks (dead-lettered with the reason, alerted) and leave the positions as they were. The paper
venue's trade ids stay unique across a live-gateway cutover and a restart, and ptrc's positions
are the ones the OMS's orders make."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.md_pipeline import wait_group_drained
from backend.bench.risk import seed_prices
from backend.bus import codec, streams
from backend.bus.publish import queue_fields
from backend.marketdata import ticks as tickcols
from backend.messages import FINAL_STATES, Alert, ExecReport, Order, OrderEvent, Tick
from backend.posttrade.reconcile import differences, expected_positions, reused_trade_ids
from backend.services.alerting import AlertingService, active
from backend.services.oms import read_order
from backend.services.ptrc import PtrcService, read_positions
from backend.trading.orders import OrderRecord, record_key
from tests.conftest import await_for, wait_for


def known(r: redis.Redis, coid: str, side: str, qty: float) -> None:
    """An order as the OMS records it."""
    o = Order(client_order_id=coid, account="acc", symbol="BTCUSDT", side=side, type="market", quantity=qty)
    r.hset(record_key(coid), mapping={"v": 1, "d": codec.encode(OrderRecord(order=o, state="ROUTED"))})


def fill(coid: str, tid: str, qty: float, side: str = "buy") -> dict:
    return codec.fields(
        ExecReport(
            client_order_id=coid,
            venue_order_id=tid.rpartition("-")[0],
            kind="fill",
            account="acc",
            symbol="BTCUSDT",
            side=side,
            trade_id=tid,
            fill_qty=qty,
            fill_price=65000.0,
        )
    )


async def test_fills_nobody_ordered_are_breaks_not_positions(redis_url: str, r: redis.Redis) -> None:
    known(r, "o1", "buy", 0.001)
    known(r, "o2", "sell", 0.001)
    for f in (
        fill("o1", "paper-s1-1-1", 0.001),
        fill("ghost", "paper-s1-9-1", 0.5),  # no such order
        fill("o1", "paper-s1-1-2", 50.0),  # 50 BTC on a 0.001 order
        fill("o2", "paper-s1-1-1", 0.001, side="sell"),  # o1's trade id on another order
        fill("o1", "paper-s1-1-1", 0.001),
    ):  # o1's fill reported again
        queue_fields(r, streams.EXEC_REPORTS, f)  # and to ptrc's copy, where it reads
    ptrc = PtrcService(redis_url=redis_url, instance="ptrc-breaks")
    alerting = AlertingService(redis_url=redis_url, instance="alerting-breaks")
    tasks = [asyncio.create_task(ptrc.run()), asyncio.create_task(alerting.run())]
    try:
        await await_for(
            lambda: r.xlen(streams.dlq(streams.EXEC_REPORTS_PTRC)) == 3 and ptrc.duplicates == 1,
            20,
            what="three breaks and one duplicate",
        )
        await await_for(
            lambda: sum(k.startswith("break:") for k, _ in active(r)) == 3,
            20,
            what="the breaks among the active alerts",
        )
    finally:
        for svc in (ptrc, alerting):
            svc.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert (ptrc.fills, ptrc.breaks) == (1, 3)
    reasons = [f[b"dlq_reason"].decode() for _, f in r.xrange(streams.dlq(streams.EXEC_REPORTS_PTRC))]
    assert reasons == [
        "break: fill 'paper-s1-9-1' of 0.5 BTCUSDT for order 'ghost', which the OMS does not know",
        "break: over-fill: fill 'paper-s1-1-2' of 50 takes order 'o1' to 50.001 filled of 0.001",
        (
            "break: trade id 'paper-s1-1-1' reused: booked for order 'o1' qty 0.001, reported again for order 'o2' "
            "qty 0.001"
        ),
    ]
    alerts = [codec.decode(codec.payload(f), Alert) for _, f in r.xrange(streams.OPS_ALERTS)]
    assert [(a.kind, a.severity, a.key) for a in alerts] == [
        ("break", "critical", "break:ghost:paper-s1-9-1"),
        ("break", "critical", "break:o1:paper-s1-1-2"),
        ("break", "critical", "break:o2:paper-s1-1-1"),
    ]
    assert alerts[0].message == f"fill not booked: {reasons[0].removeprefix('break: ')}"
    pos = read_positions(r)
    assert list(pos) == [("acc", "BTCUSDT")] and pos["acc", "BTCUSDT"].quantity == 0.001


async def test_a_write_ptrc_could_not_confirm_is_taken_from_redis(redis_url: str, r: redis.Redis) -> None:
    # the write of a batch of fills can be made and still fail for ptrc (Redis went away before
    # it answered; here one command of the transaction fails and the others are made): the
    # fill is booked in Redis, ptrc's book must not go on without it (its next write of the
    # position dropped the fill, which the ledger then called a duplicate for ever)
    known(r, "o1", "buy", 0.001)
    known(r, "o2", "buy", 0.001)
    ptrc = PtrcService(redis_url=redis_url, instance="ptrc-unsure")
    task = asyncio.create_task(ptrc.run())
    try:
        await await_for(lambda: ptrc.state == "running", 20, what="ptrc running")
        first = codec.decode(fill("o1", "paper-s1-1-1", 0.001)[codec.FIELD], ExecReport)
        r.set(streams.POSITIONS, "not a stream")  # the transaction's XADD of the position fails
        try:
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await ptrc.on_reports(0, [(b"0-1", first)])
        finally:
            r.delete(streams.POSITIONS)
        assert r.hget("ptrc:trades", "paper-s1-1-1") is not None  # booked in Redis all the same
        queue_fields(r, streams.EXEC_REPORTS, fill("o1", "paper-s1-1-1", 0.001))  # delivered again
        queue_fields(r, streams.EXEC_REPORTS, fill("o2", "paper-s1-2-1", 0.001))
        await await_for(lambda: ptrc.duplicates == 1 and ptrc.fills == 1, 20, what="the second fill booked")
        assert read_positions(r)["acc", "BTCUSDT"].quantity == pytest.approx(0.002)
        assert ptrc.book["acc", "BTCUSDT"].quantity == pytest.approx(0.002)
    finally:
        ptrc.request_stop()
        await asyncio.wait_for(task, 10)


def set_price(r: redis.Redis, px: float) -> None:
    now = time.time_ns()
    r.xadd(streams.MD_TICKS, codec.fields(tickcols.from_ticks([Tick("BTCUSDT", now, px, 1.0, now)])))


def orders_filled(r: redis.Redis, sides: list[str], first: int) -> list[str]:
    coids = []
    for i, side in enumerate(sides, first):
        coid = f"c{i}"
        o = Order(
            client_order_id=coid,
            account="acc-1",
            symbol="BTCUSDT",
            side=side,  # type: ignore[arg-type]
            type="market",
            quantity=0.01,
        )
        r.xadd(streams.ORDERS_NEW, codec.fields(o))
        coids.append(coid)

    def finals() -> dict[str, str]:
        out = {}
        for _, f in r.xrange(streams.ORDERS_EVENTS):
            ev = codec.decode(codec.payload(f), OrderEvent)
            if ev.state in FINAL_STATES:
                out[ev.client_order_id] = ev.state
        return out

    def all_final() -> dict[str, str] | None:
        fs = finals()
        return fs if all(c in fs for c in coids) else None

    got = wait_for(all_final, 30, what=f"orders {coids[0]}..{coids[-1]} final")
    assert {got[c] for c in coids} == {"FILLED"}
    return coids


@pytest.mark.timeout(240)
def test_trade_ids_stay_unique_across_a_live_gateway_cutover_and_restart(redis_url: str, r: redis.Redis) -> None:
    """Legacy fills buys at 65000; the target (after the cutover) sells at 64000; the legacy
    instance restarted (a rollback) sells and buys at 66000. Each instance numbers from 1 in the
    old engine, so the target's first trade id was the legacy's first and ptrc dropped it."""
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        for name in ("risk", "oms", "ptrc"):
            st.start(name)
        st.start("live-gateway", instance="live-gateway-legacy")
        coids = orders_filled(r, ["buy"] * 3, 0)
        set_price(r, 64000.0)  # the target reads the last prices when it starts
        st.start("live-gateway", instance="live-gateway-target", environment="target")
        assert st.stop("live-gateway-legacy") == 0  # drained
        coids += orders_filled(r, ["sell"] * 2, 3)
        set_price(r, 66000.0)
        st.start("live-gateway", instance="live-gateway-legacy")  # back, as after a rollback
        assert st.stop("live-gateway-target") == 0
        coids += orders_filled(r, ["sell"] + ["buy"] * 3, 5)
        wait_group_drained(r, streams.EXEC_REPORTS_PTRC, "ptrc")
        reports = [codec.decode(codec.payload(f), ExecReport) for _, f in r.xrange(streams.EXEC_REPORTS)]
        fills = [x for x in reports if x.kind == "fill"]
        records = {c: read_order(r, c) for c in coids}
        booked = read_positions(r)
    assert len(fills) == 9 and len({x.trade_id for x in fills}) == 9 and reused_trade_ids(reports) == []
    # three engines, three sessions: paper-<session>-<order>-<fill>
    assert len({x.trade_id.split("-")[1] for x in fills}) == 3
    assert [x.fill_price for x in fills] == [65000.0] * 3 + [64000.0] * 2 + [66000.0] * 4
    expected = expected_positions(records, reports)
    assert differences(expected, booked) == []
    pos = booked["acc-1", "BTCUSDT"]
    assert pos.quantity == pytest.approx(0.03) and pos.realized == pytest.approx(2 * 0.01 * -1000 + 0.01 * 1000)
    assert r.xlen(streams.dlq(streams.EXEC_REPORTS)) == 0 and r.xlen(streams.dlq(streams.EXEC_REPORTS_PTRC)) == 0
