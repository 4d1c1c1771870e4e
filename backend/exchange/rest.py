"""The local exchange's REST order API (Binance-style `/api/v3/order`: POST new, DELETE cancel,
GET query), HMAC-SHA256 signed, matched against the feed's live prices; and the feed's trade
history (`backend.exchange.history`: `/api/v3/historicalTrades`, `/api/v3/trades`)."""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web

from backend.exchange.history import add_history_routes
from backend.exchange.matching import MatchingEngine
from backend.messages import ExecReport, Order
from backend.trading.venue_rest import sign


class OrderApi:
    def __init__(self, feed: Any, api_key: str, api_secret: str) -> None:
        self.feed = feed
        self.key, self.secret = api_key, api_secret
        self.engine = MatchingEngine(venue="local", liquidity=None)
        self.fills: dict[str, list[dict[str, Any]]] = {}
        self.orders: dict[str, Order] = {}
        self.status: dict[str, str] = {}
        self.venue_ids: dict[str, str] = {}
        self.trade_seq = 0
        feed.listeners.append(self.on_prices)

    # prices from the feed: resting limit orders fill when crossed
    def on_prices(self, prices: dict[str, float]) -> None:
        for sym, px in prices.items():
            self._record(self.engine.on_price(sym, px))

    def _record(self, reports: list[ExecReport]) -> None:
        for rep in reports:
            c = rep.client_order_id
            self.venue_ids[c] = rep.venue_order_id
            if rep.kind == "fill":
                self.trade_seq += 1
                self.fills.setdefault(c, []).append(
                    {"tradeId": self.trade_seq, "price": repr(rep.fill_price), "qty": repr(rep.fill_qty)})
                self.status[c] = "FILLED" if rep.leaves_qty <= 1e-12 else "PARTIALLY_FILLED"
            elif rep.kind == "accepted":
                self.status.setdefault(c, "NEW")
            elif rep.kind in ("canceled", "expired", "rejected"):
                self.status[c] = rep.kind.upper()

    def _body(self, c: str, msg: str = "") -> dict[str, Any]:
        fills = self.fills.get(c, [])
        o = self.orders[c]
        return {"symbol": o.symbol, "orderId": self.venue_ids.get(c, ""), "clientOrderId": c,
                "status": self.status.get(c, "NEW"), "origQty": repr(o.quantity),
                "executedQty": repr(sum(float(f["qty"]) for f in fills)), "fills": fills,
                "transactTime": int(time.time() * 1000), "msg": msg}

    def _auth(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.headers.get("X-MBX-APIKEY") != self.key:
            raise web.HTTPUnauthorized(text='{"code":-2015,"msg":"invalid API key"}',
                                       content_type="application/json")
        sig = params.pop("signature", "")
        if not hmac.compare_digest(sig, sign(self.secret, params)):
            raise web.HTTPUnauthorized(text='{"code":-1022,"msg":"signature for this request is not valid"}',
                                       content_type="application/json")
        return params

    @staticmethod
    def _bad(msg: str) -> web.HTTPBadRequest:
        return web.HTTPBadRequest(text=f'{{"code":-1100,"msg":"{msg}"}}', content_type="application/json")

    async def new(self, request: web.Request) -> web.Response:
        p = self._auth(request)
        try:
            c = p["newClientOrderId"]
            # the request's strings: side and type are checked just below, time in force is kept as sent
            order = Order(client_order_id=c, account="venue", symbol=p["symbol"],
                          side=p["side"].lower(), type=p["type"].lower(),  # type: ignore[arg-type]
                          quantity=float(p["quantity"]), limit_price=float(p["price"]) if "price" in p else None,
                          time_in_force=p.get("timeInForce", "GTC"))  # type: ignore[arg-type]
        except (KeyError, ValueError) as exc:
            raise self._bad(f"bad order parameters: {exc}") from None
        if order.side not in ("buy", "sell") or order.type not in ("market", "limit"):
            raise self._bad("side must be BUY/SELL and type MARKET/LIMIT")
        try:
            self.feed.last_price(order.symbol)
        except KeyError:
            raise self._bad(f"unknown symbol {order.symbol}") from None
        if c not in self.orders:
            self.orders[c] = order
            self.engine.prices[order.symbol] = self.feed.last_price(order.symbol)
            self._record(self.engine.place(order))
        return web.json_response(self._body(c))

    async def cancel(self, request: web.Request) -> web.Response:
        p = self._auth(request)
        c = p.get("origClientOrderId", "")
        if c not in self.orders:
            raise web.HTTPBadRequest(text='{"code":-2011,"msg":"Unknown order sent."}', content_type="application/json")
        self._record(self.engine.cancel(c))
        return web.json_response(self._body(c))

    async def query(self, request: web.Request) -> web.Response:
        p = self._auth(request)
        c = p.get("origClientOrderId", "")
        if c not in self.orders:
            raise web.HTTPBadRequest(text='{"code":-2013,"msg":"Order does not exist."}',
                                     content_type="application/json")
        return web.json_response(self._body(c))


class RestServer:
    def __init__(self, runner: web.AppRunner, url: str, api: OrderApi) -> None:
        self.runner, self.url, self.api = runner, url, api

    async def close(self) -> None:
        await self.runner.cleanup()


async def create_rest_server(feed: Any, host: str, port: int, api_key: str, api_secret: str) -> RestServer:
    """The REST API on `host:port`, its requests signed with the pair (backend/exchange/keys.py)."""
    api = OrderApi(feed, api_key, api_secret)
    app = web.Application()
    app.router.add_post("/api/v3/order", api.new)
    app.router.add_delete("/api/v3/order", api.cancel)
    app.router.add_get("/api/v3/order", api.query)
    add_history_routes(app, feed.history, api_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the port the site bound (0 asks for a free one)
    return RestServer(runner, f"http://{host}:{bound}", api)
