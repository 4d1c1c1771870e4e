"""live-gateway's REST venue against the local exchange as against Binance: orders by REST,
executions from the user data stream (polling off), a restart that resyncs what happened while it
was down (nothing missed, nothing reported twice), and a redelivered exec order that is not
placed again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis

from backend.bus import codec, streams
from backend.exchange.feed import FeedConfig
from backend.exchange.marketmaker import MakerConfig
from backend.exchange.server import Exchange
from backend.exchange.venue import VenueConfig
from backend.messages import ExecOrder, ExecReport, Order
from backend.services.live_gateway import REST_KEY, LiveGatewayService
from backend.settings import Settings
from tests.conftest import await_for

KEY, SECRET = "test-key", "test-secret"  # the venue's keys here (the exchange has no default)
OTHER, OTHER_SECRET = "other-key", "other-secret"


def order(coid: str, **kw) -> Order:
    base = dict(client_order_id=coid, account="acc", symbol="ETHUSDT", side="buy", type="market", quantity=0.05)
    base.update(kw)
    return Order(**base)


async def signed(http: httpx.AsyncClient, method: str, path: str, params: dict, key: str, secret: str) -> dict:
    q = urlencode({**params, "timestamp": int(time.time() * 1000)})
    q += "&signature=" + hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    resp = await http.request(method, f"{path}?{q}", headers={"X-MBX-APIKEY": key})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def reports(r: aioredis.Redis) -> list[ExecReport]:
    return [codec.decode(codec.payload(f), ExecReport) for _, f in await r.xrange(streams.EXEC_REPORTS)]


async def far_bid(http: httpx.AsyncClient) -> str:
    """A price 1 % under the last, on the tick: a buy there rests until someone sells to it."""
    best = Decimal((await http.get("/api/v3/ticker/price", params={"symbol": "ETHUSDT"})).json()["price"])
    return str((best * Decimal("0.99")).quantize(Decimal("0.01")))


@pytest.mark.timeout(90)
async def test_executions_come_from_the_user_stream_and_a_restart_resyncs(redis_url: str, tmp_path: Path) -> None:
    cfg = VenueConfig(
        keys={KEY: (SECRET, "local"), OTHER: (OTHER_SECRET, "other")}, maker=MakerConfig(levels=3, notional=100)
    )
    r = aioredis.Redis.from_url(redis_url)
    async with (
        Exchange(
            FeedConfig(symbols=["ETHUSDT"], rate=20, news_every_s=3600), rest_port=0, venue=cfg, data_dir=tmp_path
        ) as ex,
        httpx.AsyncClient(base_url=ex.info.rest_url, timeout=5) as http,
    ):
        config = {
            "venue": "rest",
            "rest_url": ex.info.rest_url,
            "ws_url": ex.info.ws_url,
            "reconcile_after_s": 3600,
        }  # no polling: executions come from the stream

        async def start(instance: str) -> tuple[LiveGatewayService, asyncio.Task]:
            svc = LiveGatewayService(
                redis_url=redis_url, instance=instance, config=config, settings=Settings(data_dir=str(tmp_path))
            )  # the pair: the data dir's
            task = asyncio.create_task(svc.run())
            await await_for(lambda: getattr(svc, "stream_up", False), 20, what="the user data stream up")
            return svc, task

        async def submit(o: Order) -> None:
            await r.xadd(
                streams.EXEC_ORDERS, codec.fields(ExecOrder(action="new", client_order_id=o.client_order_id, order=o))
            )

        async def kinds_of(coid: str) -> list[str]:
            return [x.kind for x in await reports(r) if x.client_order_id == coid]

        async def sell_to(price: str) -> None:
            """Another account sells at `price`, taking every bid down to it."""
            await signed(
                http,
                "POST",
                "/api/v3/order",
                {
                    "symbol": "ETHUSDT",
                    "side": "SELL",
                    "type": "LIMIT",
                    "timeInForce": "IOC",
                    "quantity": "1",
                    "price": price,
                },
                OTHER,
                OTHER_SECRET,
            )

        svc, task = await start("lg-a")
        try:
            await submit(order("m1"))
            await await_for(lambda: _filled(r, "m1", 0.05), 20, what="m1 filled")
            px = await far_bid(http)
            await submit(order("b1", type="limit", limit_price=float(px), quantity=0.1))
            await await_for(lambda: _has(r, "b1", "accepted"), 20, what="b1 resting")
            await sell_to(px)
            await await_for(lambda: _filled(r, "b1", 0.1), 20, what="b1's fill, from the user data stream")
            b1 = [x for x in await reports(r) if x.client_order_id == "b1" and x.kind == "fill"]
            assert [x.fill_price for x in b1] == [float(px)]  # the resting order fills at its own price
            px2 = await far_bid(http)
            await submit(order("b2", type="limit", limit_price=float(px2), quantity=0.1))
            await await_for(lambda: _has(r, "b2", "accepted"), 20, what="b2 resting")
        finally:
            svc.request_stop()
            await asyncio.wait_for(task, 10)
        assert await r.hexists(REST_KEY, "b2")  # in flight, kept for the next instance
        await sell_to(px2)  # b2 fills while no gateway listens
        svc, task = await start("lg-b")
        try:
            await await_for(lambda: _filled(r, "b2", 0.1), 20, what="b2's fill, found by the resync")
            await submit(order("b2", type="limit", limit_price=float(px2), quantity=0.1))  # redelivered
            await await_for(lambda: svc.sent >= 1, 20, what="the redelivered order handled")
        finally:
            svc.request_stop()
            await asyncio.wait_for(task, 10)
        all_b2 = await signed(http, "GET", "/api/v3/allOrders", {"symbol": "ETHUSDT"}, KEY, SECRET)
        assert [o["clientOrderId"] for o in all_b2].count("b2") == 1  # placed once
        assert await kinds_of("b2") == ["accepted", "fill"]
        fills = [x for x in await reports(r) if x.kind == "fill"]
        assert len({x.trade_id for x in fills}) == len(fills)
        assert not await r.hexists(REST_KEY, "b2")
        mine = await signed(http, "GET", "/api/v3/myTrades", {"symbol": "ETHUSDT"}, KEY, SECRET)
        assert sorted(f"{t['orderId']}-{t['id']}" for t in mine) == sorted(x.trade_id for x in fills)
    await r.aclose()


async def _filled(r: aioredis.Redis, coid: str, qty: float) -> bool:
    fills = [x for x in await reports(r) if x.client_order_id == coid and x.kind == "fill"]
    return bool(fills) and abs(sum(x.fill_qty for x in fills) - qty) < 1e-9


async def _has(r: aioredis.Redis, coid: str, kind: str) -> bool:
    return any(x.client_order_id == coid and x.kind == kind for x in await reports(r))
