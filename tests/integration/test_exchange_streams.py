"""The local exchange's websocket API driven by binance-connector's stream client: bare `/ws`
with live SUBSCRIBE / LIST_SUBSCRIPTIONS / UNSUBSCRIBE, the trade (with `M`), aggTrade, kline,
bookTicker and depth streams; depth diffs that continue the REST snapshot's update id (a local
book kept from them equals the exchange's); the incoming message limit; and the user data
stream's executionReport and outboundAccountPosition events for orders placed by REST."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from binance.spot import Spot
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from backend.exchange.feed import FeedConfig
from backend.exchange.server import Exchange
from backend.exchange.venue import ACCOUNT, VenueConfig

KEY, SECRET = "test-key", "test-secret"  # the venue's keys here (the exchange has no default)


@pytest.fixture
async def exchange() -> AsyncIterator[Exchange]:
    async with Exchange(
        FeedConfig(symbols=["BTCUSDT", "ETHUSDT"], rate=400, news_every_s=3600),
        rest_port=0,
        venue=VenueConfig(keys={KEY: (SECRET, ACCOUNT)}),
    ) as ex:
        yield ex


def collect(q: queue.Queue, want, timeout: float = 20.0) -> list[dict]:
    """Messages from `q` until `want(messages)` is true (bounded)."""
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while not want(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {[m.get('e', m) for m in got][-20:]}"
        with contextlib.suppress(queue.Empty):
            got.append(json.loads(q.get(timeout=left)))
    return got


async def test_binance_connector_subscribes_on_a_bare_connection(exchange: Exchange) -> None:
    def run() -> None:
        q: queue.Queue = queue.Queue()
        client = SpotWebsocketStreamClient(stream_url=exchange.info.ws_url, on_message=lambda _, m: q.put(m))
        try:
            client.subscribe(
                ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@kline_1s", "ethusdt@bookTicker", "ethusdt@depth@100ms"],
                id=1,
            )
            kinds = {"trade", "aggTrade", "kline", "bookTicker", "depthUpdate"}

            def seen(ms: list[dict]) -> set[str]:
                return {m.get("e") or ("bookTicker" if "u" in m and "b" in m and "s" in m else None) for m in ms}

            got = collect(q, lambda ms: {"result": None, "id": 1} in ms and kinds <= seen(ms))
            trade = next(m for m in got if m.get("e") == "trade")
            assert set(trade) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"} and trade["M"] is True
            agg = next(m for m in got if m.get("e") == "aggTrade")
            assert set(agg) >= {"a", "p", "q", "f", "l", "T", "m", "M"}
            kline = next(m for m in got if m.get("e") == "kline")["k"]
            assert kline["i"] == "1s" and kline["s"] == "BTCUSDT" and Decimal(kline["h"]) >= Decimal(kline["l"])
            bt = next(m for m in got if "u" in m and "b" in m and "e" not in m)
            assert bt["s"] == "ETHUSDT" and Decimal(bt["b"]) < Decimal(bt["a"])
            client.list_subscribe(id=2)
            got = collect(q, lambda ms: any(m.get("id") == 2 for m in ms))
            assert next(m for m in got if m.get("id") == 2)["result"] == sorted(
                ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@kline_1s", "ethusdt@bookTicker", "ethusdt@depth@100ms"]
            )
            client.unsubscribe(
                ["btcusdt@trade", "btcusdt@aggTrade", "btcusdt@kline_1s", "ethusdt@bookTicker", "ethusdt@depth@100ms"],
                id=3,
            )
            collect(q, lambda ms: {"result": None, "id": 3} in ms)
            client.list_subscribe(id=4)
            assert {"result": [], "id": 4} in collect(q, lambda ms: any(m.get("id") == 4 for m in ms))
            client.subscribe("nosuch@trade", id=5)
            err = next(m for m in collect(q, lambda ms: any(m.get("id") == 5 for m in ms)) if m.get("id") == 5)
            assert err["error"]["code"] == 2 and "nosuch@trade" in err["error"]["msg"]
        finally:
            client.stop()

    await asyncio.to_thread(run)


async def test_combined_streams_and_properties(exchange: Exchange) -> None:
    async with connect(f"{exchange.info.ws_url}/stream") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 7}
        m = json.loads(await ws.recv())
        assert m["stream"] == "ethusdt@trade" and m["data"]["e"] == "trade"
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 8}))
        while (m := json.loads(await ws.recv())).get("id") != 8:
            pass
        assert m == {"result": True, "id": 8}
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", False], "id": 9}))
        while (m := json.loads(await ws.recv())).get("id") != 9:
            pass
        assert m == {"result": None, "id": 9}
        m = json.loads(await ws.recv())
        assert m["e"] == "trade" and "stream" not in m
        await ws.send("not json")
        while "error" not in (m := json.loads(await ws.recv())):
            pass
        assert m["error"]["code"] == 3


async def test_too_many_incoming_messages_close_the_connection(exchange: Exchange) -> None:
    async with connect(f"{exchange.info.ws_url}/ws") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for i in range(50):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_depth_diffs_continue_the_rest_snapshot(exchange: Exchange) -> None:
    """Binance's procedure for a local book: buffer the diffs, take the snapshot, drop diffs up to
    its lastUpdateId, check each diff starts where the last ended; with the walk stopped, the
    local book equals the exchange's at the same update id."""
    rest = f"{exchange.info.rest_url}/api/v3/depth"
    async with connect(f"{exchange.info.ws_url}/ws/ethusdt@depth@100ms") as ws, httpx.AsyncClient() as http:
        first = json.loads(await ws.recv())
        snap = (await http.get(rest, params={"symbol": "ETHUSDT", "limit": 5000})).json()
        book = {"b": {Decimal(p): q for p, q in snap["bids"]}, "a": {Decimal(p): q for p, q in snap["asks"]}}
        last = snap["lastUpdateId"]
        events = [first]
        applied = 0

        def apply(ev: dict) -> None:
            for side in ("b", "a"):
                for p, q in ev[side]:
                    if Decimal(q) == 0:
                        book[side].pop(Decimal(p), None)
                    else:
                        book[side][Decimal(p)] = q

        while applied < 3:  # the diffs after the snapshot, each where the last ended
            ev = events.pop(0) if events else json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ev["u"] <= last:
                continue
            assert ev["U"] <= last + 1 <= ev["u"], (ev["U"], ev["u"], last)
            apply(ev)
            last = ev["u"]
            applied += 1
        exchange.feed.stop()  # the walk stops: the market maker stops requoting, the book settles
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, "the book settled and its diffs caught up"
            now = (await http.get(rest, params={"symbol": "ETHUSDT", "limit": 5000})).json()
            if now["lastUpdateId"] == last:
                assert {Decimal(p): q for p, q in now["bids"]} == book["b"]
                assert {Decimal(p): q for p, q in now["asks"]} == book["a"]
                return
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ev["U"] == last + 1
            apply(ev)
            last = ev["u"]


async def test_user_data_stream_reports_orders_placed_by_rest(exchange: Exchange) -> None:
    def run() -> None:
        c = Spot(api_key=KEY, api_secret=SECRET, base_url=exchange.info.rest_url)
        key = c.new_listen_key()["listenKey"]
        assert c.new_listen_key()["listenKey"] == key  # the account's live key, again
        assert c.renew_listen_key(key) == {}
        q: queue.Queue = queue.Queue()
        client = SpotWebsocketStreamClient(stream_url=exchange.info.ws_url, on_message=lambda _, m: q.put(m))
        try:
            client.user_data(key, id=1)
            collect(q, lambda ms: {"result": None, "id": 1} in ms)
            rest = c.new_order(
                symbol="ETHUSDT",
                side="BUY",
                type="LIMIT",
                timeInForce="GTC",
                quantity="0.01",
                price="1000",
                newClientOrderId="uds-rest",
            )
            c.cancel_order("ETHUSDT", orderId=rest["orderId"])
            fill = c.new_order(
                symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.02", newClientOrderId="uds-mkt"
            )

            def filled_then_position(ms: list[dict]) -> bool:
                done = [
                    i
                    for i, m in enumerate(ms)
                    if m.get("e") == "executionReport" and m["c"] == "uds-mkt" and m["X"] == "FILLED"
                ]
                return bool(done) and any(m.get("e") == "outboundAccountPosition" for m in ms[done[0] :])

            got = collect(q, filled_then_position)
            reports = [(m["c"], m["x"], m["X"]) for m in got if m.get("e") == "executionReport"]
            assert sum(r[0] == "uds-mkt" and r[2] == "FILLED" for r in reports) == 1
            assert reports[:3] == [
                ("uds-rest", "NEW", "NEW"),
                ("uds-rest", "CANCELED", "CANCELED"),
                ("uds-mkt", "NEW", "NEW"),
            ]
            assert reports[-1] == ("uds-mkt", "TRADE", "FILLED")
            trade = [m for m in got if m.get("e") == "executionReport" and m["x"] == "TRADE"]
            assert sum(Decimal(m["l"]) for m in trade) == Decimal("0.02")
            assert {m["t"] for m in trade} == {f["tradeId"] for f in fill["fills"]}
            assert all(m["i"] == fill["orderId"] and m["N"] == "USDT" for m in trade)
            positions = [m for m in got if m.get("e") == "outboundAccountPosition"]
            assert positions and {b["a"] for b in positions[-1]["B"]} == {"ETH", "USDT"}
            assert c.close_listen_key(key) == {}
        finally:
            client.stop()

    await asyncio.to_thread(run)


async def test_a_raw_user_stream_path_and_an_unknown_key(exchange: Exchange) -> None:
    async with httpx.AsyncClient(base_url=exchange.info.rest_url, headers={"X-MBX-APIKEY": KEY}) as http:
        key = (await http.post("/api/v3/userDataStream")).json()["listenKey"]
        assert (await http.put("/api/v3/userDataStream", params={"listenKey": "nope"})).json()["code"] == -1125
        async with connect(f"{exchange.info.ws_url}/ws/{key}") as ws:
            assert (await http.delete("/api/v3/userDataStream", params={"listenKey": key})).json() == {}
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
    with pytest.raises(Exception, match="HTTP 404"):
        async with connect(f"{exchange.info.ws_url}/ws/{key}"):
            pass


async def test_connections_end_at_the_connection_age_limit(exchange: Exchange) -> None:
    exchange.feed.hub.limits.max_age_s = 0.5  # 24 h on Binance (and by default here)
    async with connect(f"{exchange.info.ws_url}/ws/btcusdt@trade") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "24 h connection limit"
