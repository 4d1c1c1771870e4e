"""The gateway against the local exchange on loopback: raw batches flow, it reconnects after the
exchange restarts, and reports the trade-id gap (count and last gap) in its heartbeat."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import connect

from backend.bus import codec, streams
from backend.bus.embedded import free_port
from backend.exchange.feed import FeedConfig
from backend.exchange.server import Exchange
from backend.marketdata import raw
from backend.messages import AltItem, RawTickBatch
from backend.services.gateway import GatewayService
from tests.conftest import await_for

SYMS = ["BTCUSDT", "ETHUSDT"]


@pytest.mark.timeout(60)
async def test_gateway_reconnects_after_exchange_restart_and_reports_the_gap(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    port = free_port()
    cfg = FeedConfig(symbols=SYMS, rate=2000, news_every_s=0.2)
    ex = Exchange(cfg, port=port, rest_port=None)
    info = await ex.start()
    gw = GatewayService(
        redis_url=redis_url,
        instance="gw-1",
        config={
            "urls": [info.stream_url()],
            "news_url": f"{info.ws_url}/ws/news",
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
        },
    )
    task = asyncio.create_task(gw.run())
    try:
        await await_for(lambda: getattr(gw, "received", 0) > 500 and gw.news > 0, 20, what="ticks and news")
        assert gw.gaps == 0
        await ex.stop()
        await asyncio.sleep(0.05)  # let the exchange's clock-based trade ids move on
        ex = Exchange(cfg, port=port, rest_port=None)
        await ex.start()
        await await_for(lambda: gw.reconnects >= 1 and gw.gaps >= 1, 20, what="reconnect and gap")
        hb = await gw.heartbeat()
        assert hb.extra["reconnects"] >= 1
        assert hb.extra["gaps"] == gw.gaps >= 1
        gap = hb.extra["last_gap"]
        assert gap["symbol"] in SYMS and gap["next"] - gap["after"] - 1 == gap["missing"] > 0
        assert "feed_delay_p50" in hb.latency_ms
        # what reached the bus is well-formed raw batches of the venue's trades
        entries = await r.xrange(streams.MD_TICKS_RAW, count=5)
        b = codec.decode(codec.payload(entries[0][1]), RawTickBatch)
        assert b.n > 0 and set(b.symbols) <= set(SYMS)
        first = raw.tick_at(b, 0)
        assert float(first.price) > 0 and first.trade_ns > 0
        news = await r.xrange(streams.ALT_RAW, count=1)
        assert codec.decode(codec.payload(news[0][1]), AltItem).headline
    finally:
        gw.request_stop()
        await asyncio.wait_for(task, 10)
        await ex.stop()
        await r.aclose()


async def test_exchange_speaks_binance_trade_streams() -> None:
    ex = Exchange(FeedConfig(symbols=SYMS, rate=500), rest_port=None)
    info = await ex.start()
    try:
        async with connect(f"{info.ws_url}/ws/btcusdt@trade") as ws:
            import json

            m = json.loads(await ws.recv())
            assert set(m) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"}
            assert m["e"] == "trade" and m["s"] == "BTCUSDT" and isinstance(m["p"], str)
        async with connect(info.stream_url()) as ws:
            m = json.loads(await ws.recv())
            assert m["stream"] in ("btcusdt@trade", "ethusdt@trade") and m["data"]["e"] == "trade"
        with pytest.raises(Exception, match="HTTP 404"):
            async with connect(f"{info.ws_url}/ws/nosuch@trade"):
                pass
        assert ex.feed.last_price("ETHUSDT") > 0
    finally:
        await ex.stop()


@pytest.mark.timeout(60)
async def test_gateway_fails_loudly_when_redis_goes_away(tmp_path: Path) -> None:
    """Raw ticks it cannot write are not dropped silently: the service fails (and its supervisor
    restarts it; the trades missed show as a gap)."""
    from backend.bus.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path)
    url = server.start()
    port = free_port()
    ex = Exchange(FeedConfig(symbols=SYMS, rate=2000, news_every_s=3600), port=port, rest_port=None)
    info = await ex.start()
    gw = GatewayService(redis_url=url, instance="gw-2", config={"urls": [info.stream_url()], "news_url": ""})
    task = asyncio.create_task(gw.run())
    try:
        await await_for(lambda: getattr(gw, "published", 0) > 200, 20, what="ticks written")
        server.stop()
        with pytest.raises(RedisConnectionError, match="connection to Redis lost"):
            await asyncio.wait_for(task, 20)
        assert gw.state == "failed" and gw.write_error is not None
    finally:
        if not task.done():
            gw.request_stop()
            await asyncio.wait_for(task, 10)
        await ex.stop()
        server.stop()


@pytest.mark.timeout(60)
async def test_undecodable_frames_go_to_the_dlq_of_the_stream_they_were_bound_for(redis_url: str) -> None:
    """A trade frame that does not decode goes to dlq.md.ticks.raw, a news frame to dlq.alt.raw, each
    naming its stream (not the service) and keeping the frame's bytes."""
    from websockets.asyncio.server import ServerConnection, serve

    async def venue(ws: ServerConnection) -> None:
        await ws.send("not a trade" if ws.request.path == "/trades" else "not news")
        await ws.wait_closed()

    r = aioredis.Redis.from_url(redis_url)
    async with serve(venue, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        gw = GatewayService(
            redis_url=redis_url,
            instance="gw-3",
            config={"urls": [f"ws://127.0.0.1:{port}/trades"], "news_url": f"ws://127.0.0.1:{port}/news"},
        )
        task = asyncio.create_task(gw.run())
        try:

            async def both() -> bool:
                return bool(
                    await r.xlen(streams.dlq(streams.MD_TICKS_RAW)) and await r.xlen(streams.dlq(streams.ALT_RAW))
                )

            await await_for(both, 20, what="a dead letter in each DLQ")
        finally:
            gw.request_stop()
            await asyncio.wait_for(task, 10)
    ((_, trade),) = await r.xrange(streams.dlq(streams.MD_TICKS_RAW))
    ((_, news),) = await r.xrange(streams.dlq(streams.ALT_RAW))
    assert trade[b"dlq_stream"] == b"md.ticks.raw" and trade[b"raw"] == b"not a trade"
    assert trade[b"dlq_reason"].startswith(b"undecodable trade message: ")
    assert news[b"dlq_stream"] == b"alt.raw" and news[b"raw"] == b"not news"
    assert news[b"dlq_reason"].startswith(b"undecodable news message: ")
    assert trade[b"dlq_group"] == news[b"dlq_group"] == b"gateway" and news[b"dlq_consumer"] == b"gw-3"
    assert gw.decode_errors == 1 and await r.xlen(streams.MD_TICKS_RAW) == 0
    await r.aclose()
