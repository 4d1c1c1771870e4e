"""The local exchange's REST API driven by Binance's own clients: binance-connector's `Spot` and
ccxt's `binance` (its urls pointed at the local exchange). Orders, queries, cancels, open
orders, account, trades, and the error cases of Binance: signatures, timestamps outside the
recvWindow, unknown symbols and orders, duplicate client ids, filters, rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import ccxt
import httpx
import pytest
from binance.error import ClientError
from binance.spot import Spot

from backend.exchange.feed import FeedConfig
from backend.exchange.ratelimit import Limits
from backend.exchange.server import Exchange
from backend.exchange.venue import ACCOUNT, VenueConfig

KEY, SECRET = "test-key", "test-secret"  # the venue's keys here (the exchange has no default)
KEYS = {KEY: (SECRET, ACCOUNT)}
SYMS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture
async def exchange() -> AsyncIterator[Exchange]:
    async with Exchange(
        FeedConfig(symbols=SYMS, rate=200, news_every_s=3600), rest_port=0, venue=VenueConfig(keys=KEYS)
    ) as ex:
        yield ex


def spot(ex: Exchange) -> Spot:
    return Spot(api_key=KEY, api_secret=SECRET, base_url=ex.info.rest_url)


def held(ex: Exchange, symbol: str, n: int, timeout: float = 20.0) -> None:
    """Wait (bounded) until the trade history holds `n` trades of `symbol`."""
    deadline = time.monotonic() + timeout
    while (s := ex.feed.history.span(symbol)) is None or s[1] - s[0] + 1 < n:
        assert time.monotonic() < deadline, f"{n} trades of {symbol} in the history"
        time.sleep(0.01)


def code_of(call) -> tuple[int, int, str]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.status_code, err.value.error_code, err.value.error_message


async def test_binance_connector_trades_on_the_local_exchange(exchange: Exchange) -> None:
    def run() -> None:
        c = spot(exchange)
        assert c.ping() == {} and abs(c.time()["serverTime"] - time.time() * 1000) < 60_000
        info = c.exchange_info(symbol="ETHUSDT")["symbols"][0]
        filters = {f["filterType"]: f for f in info["filters"]}
        assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000" and filters["LOT_SIZE"]["stepSize"] == "0.00010000"
        assert filters["MIN_NOTIONAL"]["minNotional"] == "5.00000000"
        book = c.depth("ETHUSDT", limit=5)
        best_ask = Decimal(book["asks"][0][0])
        assert len(book["bids"]) == 5 and Decimal(book["bids"][0][0]) < best_ask
        # a marketable buy limit far above the market fills at the resting asks, on the tick
        r = c.new_order(
            symbol="ETHUSDT",
            side="BUY",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.5",
            price="100000",
            newClientOrderId="far-above",
        )
        assert r["status"] == "FILLED" and r["type"] == "LIMIT" and r["side"] == "BUY"
        assert r["price"] == "100000.00000000" and r["executedQty"] == "0.50000000"
        prices = {Decimal(f["price"]) for f in r["fills"]}
        assert max(prices) < Decimal(3500) and all(p == p.quantize(Decimal("0.01")) for p in prices)
        assert all(f["commissionAsset"] == "ETH" for f in r["fills"])
        quote = sum(Decimal(f["price"]) * Decimal(f["qty"]) for f in r["fills"])
        assert Decimal(r["cummulativeQuoteQty"]) == quote
        # a resting order, queried by orderId and by client id, listed, cancelled
        low = c.new_order(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="1000")
        assert low["status"] == "NEW" and isinstance(low["orderId"], int) and len(low["clientOrderId"]) >= 16
        q = c.get_order("ETHUSDT", orderId=low["orderId"])
        assert q["status"] == "NEW" and q["isWorking"] and q["time"] == low["transactTime"]
        assert "transactTime" not in q
        assert c.get_order("ETHUSDT", origClientOrderId=low["clientOrderId"])["orderId"] == low["orderId"]
        assert [o["orderId"] for o in c.get_open_orders("ETHUSDT")] == [low["orderId"]]
        acct = c.account()
        usdt = next(b for b in acct["balances"] if b["asset"] == "USDT")
        assert usdt["locked"] == "10.00000000" and acct["canTrade"] and acct["accountType"] == "SPOT"
        x = c.cancel_order("ETHUSDT", orderId=low["orderId"])
        assert x["status"] == "CANCELED" and x["origClientOrderId"] == low["clientOrderId"]
        assert code_of(lambda: c.cancel_order("ETHUSDT", orderId=low["orderId"])) == (400, -2011, "Unknown order sent.")
        assert code_of(lambda: c.cancel_order("ETHUSDT", orderId=r["orderId"])) == (400, -2011, "Unknown order sent.")
        assert code_of(lambda: c.get_order("BTCUSDT", orderId=low["orderId"])) == (400, -2013, "Order does not exist.")
        # market by quote quantity; all orders; my trades
        m = c.new_order(symbol="ETHUSDT", side="SELL", type="MARKET", quoteOrderQty="100")
        assert m["status"] == "FILLED" and Decimal(m["cummulativeQuoteQty"]) <= 100
        assert [o["orderId"] for o in c.get_orders("ETHUSDT")] == [r["orderId"], low["orderId"], m["orderId"]]
        trades = c.my_trades("ETHUSDT")
        assert {t["orderId"] for t in trades} == {r["orderId"], m["orderId"]}
        assert all(t["isMaker"] is False for t in trades)
        # open orders cancelled all at once
        for p in ("1000", "1001"):
            c.new_order(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price=p)
        assert [o["status"] for o in c.cancel_open_orders("ETHUSDT")] == ["CANCELED", "CANCELED"]
        assert code_of(lambda: c.cancel_open_orders("ETHUSDT")) == (400, -2011, "Unknown order sent.")
        assert (
            c.new_order_test(
                symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="1000"
            )
            == {}
        )
        assert c.get_open_orders("ETHUSDT") == []
        assert c.ticker_price("BTCUSDT")["symbol"] == "BTCUSDT"
        held(exchange, "BTCUSDT", 3)
        assert len(c.agg_trades("BTCUSDT", limit=3)) == 3 and len(c.trades("BTCUSDT", limit=3)) == 3
        assert len(c.historical_trades("BTCUSDT", limit=3)) == 3

    await asyncio.to_thread(run)


async def test_binance_error_codes(exchange: Exchange) -> None:
    def run() -> None:
        c = spot(exchange)
        order = dict(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC")
        cases = [
            (dict(order, quantity="0", price="1000"), (400, -1013, "Invalid quantity.")),
            (dict(order, quantity="-1", price="1000"), (400, -1100, None)),
            (dict(order, quantity="0.01", price="1000.001"), (400, -1013, "Filter failure: PRICE_FILTER")),
            (dict(order, quantity="0.00001", price="1000"), (400, -1013, "Filter failure: LOT_SIZE")),
            (dict(order, quantity="0.001", price="1000"), (400, -1013, "Filter failure: MIN_NOTIONAL")),
            (
                dict(order, quantity="1000000", price="1000"),
                (400, -2010, "Account has insufficient balance for requested action."),
            ),
            (dict(order, symbol="NOPEUSDT", quantity="1", price="1"), (400, -1121, "Invalid symbol.")),
            (
                dict(symbol="ETHUSDT", side="BUY", type="LIMIT", quantity="1", price="1000"),
                (400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."),
            ),
            (
                dict(symbol="ETHUSDT", side="BUY", type="MARKET"),
                (400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"),
            ),
            (
                dict(order, type="LIMIT_MAKER", quantity="0.01", price="100000", timeInForce=None),
                (400, -2010, "Order would immediately match and take."),
            ),
        ]
        for params, (status, code, msg) in cases:
            params = {k: v for k, v in params.items() if v is not None}
            got = code_of(lambda p=params: c.new_order(**p))
            assert got[:2] == (status, code), (params, got)
            if msg is not None:
                assert got[2] == msg, (params, got)
        c.new_order(**dict(order, quantity="0.01", price="1000", newClientOrderId="dup-1"))
        assert code_of(lambda: c.new_order(**dict(order, quantity="0.01", price="1000", newClientOrderId="dup-1"))) == (
            400,
            -2010,
            "Duplicate order sent.",
        )
        assert code_of(lambda: c.get_order("ETHUSDT")) == (
            400,
            -1102,
            "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
        )
        assert code_of(lambda: c.depth("NOPE")) == (400, -1121, "Invalid symbol.")
        bad = Spot(api_key=KEY, api_secret="wrong", base_url=exchange.info.rest_url)
        assert code_of(lambda: bad.account()) == (400, -1022, "Signature for this request is not valid.")
        nokey = Spot(api_key="who", api_secret=SECRET, base_url=exchange.info.rest_url)
        assert code_of(lambda: nokey.account())[:2] == (401, -2015)

    await asyncio.to_thread(run)


def signed(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    q = urlencode(params)
    return q + "&signature=" + hmac.new(SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()


async def test_signed_requests_expire_and_cover_the_body(exchange: Exchange) -> None:
    url = f"{exchange.info.rest_url}/api/v3/account"
    h = {"X-MBX-APIKEY": KEY}
    async with httpx.AsyncClient(timeout=5) as http:
        now = int(time.time() * 1000)
        assert (await http.get(f"{url}?{signed({'timestamp': str(now)})}", headers=h)).status_code == 200
        hour_ago = await http.get(f"{url}?{signed({'timestamp': str(now - 3_600_000)})}", headers=h)
        assert hour_ago.status_code == 400 and hour_ago.json() == {
            "code": -1021,
            "msg": "Timestamp for this request is outside of the recvWindow.",
        }
        wide = signed({"timestamp": str(now - 20_000), "recvWindow": "30000"})
        assert (await http.get(f"{url}?{wide}", headers=h)).status_code == 200
        ahead = await http.get(f"{url}?{signed({'timestamp': str(now + 10_000)})}", headers=h)
        assert ahead.json()["code"] == -1021
        missing = await http.get(f"{url}?timestamp={now}", headers=h)
        assert missing.json()["code"] == -1102
        # a form body (ccxt's way): the signature covers the query string and the body
        body = signed(
            {
                "symbol": "ETHUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.01",
                "price": "1000",
                "timestamp": str(int(time.time() * 1000)),
            }
        )
        resp = await http.post(
            f"{exchange.info.rest_url}/api/v3/order",
            content=body,
            headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 200 and resp.json()["status"] == "NEW"
        tampered = body.replace("price=1000", "price=1001")
        resp = await http.post(
            f"{exchange.info.rest_url}/api/v3/order",
            content=tampered,
            headers={**h, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status_code == 400 and resp.json()["code"] == -1022
        assert int(resp.headers["X-MBX-USED-WEIGHT-1M"]) > 0


async def test_request_weight_over_the_limit_answers_429_then_418() -> None:
    cfg = VenueConfig(keys=KEYS, limits=Limits(weight_per_minute=30, ban_after=2, ban_s=60))
    async with (
        Exchange(FeedConfig(symbols=SYMS, rate=50, news_every_s=3600), rest_port=0, venue=cfg) as ex,
        httpx.AsyncClient(timeout=5) as http,
    ):
        url = f"{ex.info.rest_url}/api/v3/exchangeInfo"  # weight 20
        assert (await http.get(url)).status_code == 200
        got = await http.get(url)
        if got.status_code == 200:  # a new minute began between the two: the limit holds in this one
            got = await http.get(url)
        assert got.status_code == 429 and got.json()["code"] == -1003 and int(got.headers["Retry-After"]) >= 1
        statuses = [(await http.get(url)).status_code for _ in range(3)]
        assert statuses[-1] == 418 and int((await http.get(url)).headers["Retry-After"]) >= 1


async def test_ccxt_binance_trades_on_the_local_exchange(exchange: Exchange) -> None:
    def run() -> None:
        base = f"{exchange.info.rest_url}/api/v3"
        x = ccxt.binance(
            {
                "apiKey": KEY,
                "secret": SECRET,
                "enableRateLimit": False,
                "options": {
                    "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                    "defaultType": "spot",
                    "warnOnFetchOpenOrdersWithoutSymbol": False,
                },
            }
        )
        x.urls["api"] = {**x.urls["api"], "public": base, "private": base, "v1": base}
        markets = x.load_markets()
        assert "ETH/USDT" in markets and markets["ETH/USDT"]["precision"]["price"] == 0.01
        assert abs(x.fetch_time() - time.time() * 1000) < 60_000
        book = x.fetch_order_book("ETH/USDT", limit=5)
        assert book["asks"][0][0] > book["bids"][0][0]
        t = x.fetch_ticker("ETH/USDT")
        assert t["last"] > 0 and t["bid"] < t["ask"]
        o = x.create_order("ETH/USDT", "limit", "buy", 0.01, 1000)
        assert o["status"] == "open" and o["price"] == 1000
        assert [y["id"] for y in x.fetch_open_orders("ETH/USDT")] == [o["id"]]
        assert x.fetch_order(o["id"], "ETH/USDT")["status"] == "open"
        assert x.cancel_order(o["id"], "ETH/USDT")["status"] == "canceled"
        m = x.create_order("ETH/USDT", "market", "buy", 0.05)
        assert m["status"] == "closed" and m["filled"] == 0.05 and m["fee"]["currency"] == "ETH"
        bal = x.fetch_balance()
        assert bal["USDT"]["used"] == 0 and bal["ETH"]["free"] > 0
        assert [t["order"] for t in x.fetch_my_trades("ETH/USDT")] == [m["id"]] * len(m["trades"])
        with pytest.raises(ccxt.OrderNotFound):
            x.cancel_order(o["id"], "ETH/USDT")
        with pytest.raises(ccxt.InvalidOrder, match="Order would immediately match and take"):
            x.create_order("ETH/USDT", "limit", "buy", 0.01, 100000, {"postOnly": True})  # LIMIT_MAKER
        with pytest.raises(ccxt.InsufficientFunds):
            x.create_order("ETH/USDT", "limit", "buy", 1000, 3000)
        bad = ccxt.binance({"apiKey": KEY, "secret": "wrong", "options": x.options})
        bad.urls["api"] = x.urls["api"]
        bad.markets, bad.markets_by_id, bad.symbols = x.markets, x.markets_by_id, x.symbols
        with pytest.raises(ccxt.AuthenticationError):
            bad.fetch_balance()

    await asyncio.to_thread(run)
