"""The OMS's compare-and-set commit: a working order's record is kept in memory, so when another
instance of the group (blue/green) changes it in Redis, the next batch that touches it must see
the change (start over from Redis) instead of acting on what it remembers."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from backend.bus import codec, streams
from backend.messages import ExecOrder, ExecReport, Order, OrderEvent, RiskDecision
from backend.services.oms import KEY, OmsService
from backend.trading.orders import OrderRecord
from tests.conftest import await_for


async def _events(r: aioredis.Redis, coid: str) -> list[str]:
    out = []
    for _, f in await r.xrange(streams.ORDERS_EVENTS):
        ev = codec.decode(codec.payload(f), OrderEvent)
        if ev.client_order_id == coid:
            out.append(ev.state)
    return out


async def test_a_record_changed_by_another_instance_is_not_overwritten(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    oms = OmsService(redis_url=redis_url, instance="oms-a")
    task = asyncio.create_task(oms.run())
    try:
        order = Order(
            client_order_id="x1",
            account="acc",
            symbol="BTCUSDT",
            side="buy",
            type="limit",
            quantity=1.0,
            limit_price=100.0,
        )
        await r.xadd(streams.ORDERS_NEW, codec.fields(order))
        await await_for(lambda: "x1" in getattr(oms, "cache", {}), what="x1 held in memory")
        version, rec = oms.cache["x1"]
        assert rec.state == "PENDING_RISK" and version == 1

        # Another instance decides it (denied by risk) and commits version 2 in Redis.
        other = msgspec.structs.replace(rec, state="DENIED", reason="risk: another instance")
        await r.hset(KEY.format("x1"), mapping={"v": version + 1, "d": msgspec.msgpack.encode(other)})

        # A fill for the order reaches this instance, which still remembers it PENDING_RISK.
        await r.xadd(
            streams.EXEC_REPORTS,
            codec.fields(
                ExecReport(
                    client_order_id="x1",
                    venue_order_id="v1",
                    kind="fill",
                    account="acc",
                    symbol="BTCUSDT",
                    side="buy",
                    fill_qty=1.0,
                    fill_price=100.0,
                    leaves_qty=0.0,
                    trade_id="t1",
                    ts_ns=1,
                )
            ),
        )
        await await_for(lambda: oms.conflicts >= 1, what="the commit to see the changed record")

        async def settled() -> bool:
            groups = await r.xinfo_groups(streams.EXEC_REPORTS)
            return any(g["name"] == b"oms" and g["pending"] == 0 and g["lag"] == 0 for g in groups)

        await await_for(settled, what="the report to be handled and acked")

        raw = await r.hget(KEY.format("x1"), "d")
        stored = codec.decode(raw, OrderRecord)
        assert stored.state == "DENIED" and stored.filled == 0.0  # the other instance's state stands
        assert "FILLED" not in await _events(r, "x1")
        assert "x1" not in oms.cache  # final: no longer held in memory

        # A resubmission of the same client order id is still one order.
        await r.xadd(streams.ORDERS_NEW, codec.fields(order))
        await await_for(lambda: oms.duplicates == 1, what="the resubmission to be recognised")
        assert (await _events(r, "x1")).count("NEW") == 1
    finally:
        oms.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()


async def test_a_batch_whose_commit_failed_is_taken_again_from_redis(redis_url: str) -> None:
    # the batch changes the records it holds in memory; when its commit fails (Redis refused it,
    # or went away), the batch delivered again must not find them as if committed: it was acked
    # as "the order has moved on" and the order stayed PENDING_RISK (or ROUTED) for ever
    r = aioredis.Redis.from_url(redis_url)
    oms = OmsService(redis_url=redis_url, instance="oms-a")
    task = asyncio.create_task(oms.run())
    try:
        order = Order(
            client_order_id="x2",
            account="acc",
            symbol="BTCUSDT",
            side="buy",
            type="limit",
            quantity=1.0,
            limit_price=100.0,
        )
        await r.xadd(streams.ORDERS_NEW, codec.fields(order))
        await await_for(lambda: "x2" in getattr(oms, "cache", {}), what="x2 held in memory")
        decision = RiskDecision(request_id="x2#1", client_order_id="x2", approved=True)
        await r.config_set("min-replicas-to-write", 1)  # Redis refuses every write: the commit fails
        try:
            with pytest.raises(ResponseError, match="NOREPLICAS"):
                await oms.on_decisions(0, [(b"0-1", decision)])
        finally:
            await r.config_set("min-replicas-to-write", 0)
        assert codec.decode(await r.hget(KEY.format("x2"), "d"), OrderRecord).state == "PENDING_RISK"
        await r.xadd(streams.RISK_DECISIONS, codec.fields(decision))  # the decision, delivered again
        await await_for(lambda: _has(r, "x2", "ROUTED"), what="the order routed")
        assert codec.decode(await r.hget(KEY.format("x2"), "d"), OrderRecord).state == "ROUTED"
        routed = [codec.decode(codec.payload(f), ExecOrder) for _, f in await r.xrange(streams.EXEC_ORDERS)]
        assert [(e.client_order_id, e.action) for e in routed if e.client_order_id == "x2"] == [("x2", "new")]
    finally:
        oms.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()


async def _has(r: aioredis.Redis, coid: str, state: str) -> bool:
    return state in await _events(r, coid)
