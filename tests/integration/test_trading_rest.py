"""The REST adapter places, cancels and queries against the local exchange over loopback (HMAC
signed), and live-gateway in REST mode turns the venue's answers into exec reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from backend.bus import codec, streams
from backend.exchange.feed import FeedConfig
from backend.exchange.server import Exchange
from backend.messages import ExecOrder, ExecReport, Order
from backend.services.live_gateway import LiveGatewayService
from backend.settings import Settings
from backend.trading.venue_rest import RestVenue, VenueError, reports_from
from tests.conftest import await_for


def order(coid: str, **kw) -> Order:
    base = dict(client_order_id=coid, account="acc", symbol="BTCUSDT", side="buy", type="market", quantity=0.25)
    base.update(kw)
    return Order(**base)


async def test_rest_adapter_place_query_cancel() -> None:
    async with Exchange(FeedConfig(symbols=["BTCUSDT"], rate=200), rest_port=0) as ex:
        info = ex.info
        assert info and info.rest_url
        assert ex.api_key and ex.api_secret and ex.api_key != "local-key"  # generated at its start
        venue = RestVenue(info.rest_url, ex.api_key, ex.api_secret)
        try:
            body = await venue.place(order("m1"))
            assert body["status"] == "FILLED" and float(body["executedQty"]) == 0.25
            reps = reports_from(order("m1"), body, set())
            assert [r.kind for r in reps] == ["fill"] and reps[0].fill_price > 0
            px = ex.feed.last_price("BTCUSDT")
            body = await venue.place(order("l1", type="limit", limit_price=round(px * 0.5, 2)))
            assert body["status"] == "NEW"
            assert (await venue.query("BTCUSDT", "l1"))["status"] == "NEW"
            body = await venue.cancel("BTCUSDT", "l1")
            assert body["status"] == "CANCELED"
            assert [r.kind for r in reports_from(order("l1"), body, set())] == ["canceled"]
            with pytest.raises(VenueError, match="Order does not exist"):
                await venue.query("BTCUSDT", "nope")
        finally:
            await venue.close()
        bad = RestVenue(info.rest_url, ex.api_key, "wrong-secret")
        with pytest.raises(VenueError, match=r"HTTP 400: Signature for this request is not valid\."):  # Binance's
            await bad.place(order("x"))
        await bad.close()
        async with httpx.AsyncClient() as http:  # unsigned
            resp = await http.post(f"{info.rest_url}/api/v3/order")
            assert resp.status_code == 401


@pytest.mark.timeout(60)
async def test_live_gateway_rest_mode(redis_url: str, tmp_path: Path) -> None:
    r = aioredis.Redis.from_url(redis_url)
    # the exchange keeps its generated key pair in the data dir's secrets; the live-gateway finds it there
    async with Exchange(FeedConfig(symbols=["BTCUSDT"], rate=500), rest_port=0, data_dir=tmp_path) as ex:
        svc = LiveGatewayService(
            redis_url=redis_url,
            instance="lg-rest",
            settings=Settings(data_dir=str(tmp_path)),
            config={"venue": "rest", "rest_url": ex.info.rest_url, "reconcile_after_s": 0.1},
        )
        task = asyncio.create_task(svc.run())
        try:
            await r.xadd(
                streams.EXEC_ORDERS, codec.fields(ExecOrder(action="new", client_order_id="m1", order=order("m1")))
            )
            px = ex.feed.last_price("BTCUSDT")
            # a buy limit above the market crosses at once and fills at the resting asks, not its limit
            await r.xadd(
                streams.EXEC_ORDERS,
                codec.fields(
                    ExecOrder(
                        action="new",
                        client_order_id="l2",
                        order=order("l2", type="limit", limit_price=round(px * 1.5, 2)),
                    )
                ),
            )

            async def kinds() -> dict[str, list[str]]:
                out: dict[str, list[str]] = {}
                for _, f in await r.xrange(streams.EXEC_REPORTS):
                    rep = codec.decode(codec.payload(f), ExecReport)
                    out.setdefault(rep.client_order_id, []).append(rep.kind)
                return out if "fill" in out.get("m1", []) and "fill" in out.get("l2", []) else None

            got = await await_for(kinds, 20)
            assert got["m1"] == ["accepted", "fill"]
            assert got["l2"][0] == "accepted" and got["l2"].count("fill") >= 1
        finally:
            svc.request_stop()
            await asyncio.wait_for(task, 10)
            await r.aclose()
