"""The OMS's compare-and-set commit: a working order's record is kept in memory, so when another
instance of the group (blue/green) changes it in Redis, the next batch that touches it must see
the change (start over from Redis) instead of acting on what it remembers."""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis

from backend.bus import codec, streams
from backend.messages import ExecReport, Order, OrderEvent
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
        order = Order(client_order_id="x1", account="acc", symbol="BTCUSDT", side="buy", type="limit",
                      quantity=1.0, limit_price=100.0)
        await r.xadd(streams.ORDERS_NEW, codec.fields(order))
        await await_for(lambda: "x1" in getattr(oms, "cache", {}), what="x1 held in memory")
        version, rec = oms.cache["x1"]
        assert rec.state == "PENDING_RISK" and version == 1

        # Another instance decides it (denied by risk) and commits version 2 in Redis.
        other = msgspec.structs.replace(rec, state="DENIED", reason="risk: another instance")
        await r.hset(KEY.format("x1"), mapping={"v": version + 1, "d": msgspec.msgpack.encode(other)})

        # A fill for the order reaches this instance, which still remembers it PENDING_RISK.
        await r.xadd(streams.EXEC_REPORTS, codec.fields(ExecReport(
            client_order_id="x1", venue_order_id="v1", kind="fill", account="acc", symbol="BTCUSDT",
            side="buy", fill_qty=1.0, fill_price=100.0, leaves_qty=0.0, trade_id="t1", ts_ns=1)))
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
