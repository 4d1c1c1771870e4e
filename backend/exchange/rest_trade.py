"""The local exchange's signed REST endpoints, as Binance Spot serves them: `order` (POST new,
GET query, DELETE cancel; by `orderId` or `origClientOrderId`, always within the symbol),
`order/test`, `openOrders` (GET, DELETE), `allOrders`, `account`, `myTrades`, and the user data
stream's listen keys (`userDataStream`: API key only). Every answer and error is Binance's."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any

from aiohttp import web

from backend.exchange import params as P
from backend.exchange import render, signing
from backend.exchange.engine import Reject
from backend.exchange.filters import FilterFailure
from backend.exchange.ratelimit import Limited, RateLimiter
from backend.exchange.venue import LocalVenue

ORDER_TYPES = ("LIMIT", "MARKET", "LIMIT_MAKER")
BINANCE_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
_ALNUM = string.ascii_letters + string.digits


def new_client_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(22))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class TradeApi:
    def __init__(self, venue: LocalVenue, limiter: RateLimiter) -> None:
        self.venue = venue
        self.engine = venue.engine
        self.filters = venue.engine.filters
        self.limiter = limiter

    # -- authentication --------------------------------------------------------------------------
    def _key(self, request: web.Request) -> tuple[str, str]:
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise P.ApiError(401, -2014, "API-key format invalid.")
        entry = self.venue.account_of(key)
        if entry is None:
            raise P.ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return entry

    async def _signed(self, request: web.Request) -> tuple[dict[str, str], str]:
        secret, account = self._key(request)
        body = (await request.text()) if request.can_read_body else ""
        if body and not request.content_type.startswith("application/x-www-form-urlencoded"):
            body = ""
        query = request.rel_url.raw_query_string
        p = signing.params_of(query, body)
        try:
            signing.check(secret, query, body, p)
        except signing.SignatureError as exc:
            raise P.ApiError(exc.status, exc.code, exc.msg) from None
        return p, account

    # -- orders ----------------------------------------------------------------------------------
    def _order_args(self, p: dict[str, str]) -> dict[str, Any]:
        f = P.symbol(p, self.filters)
        assert f is not None
        side = P.choice(p, "side", ("BUY", "SELL"), required=True)
        typ = P.text(p, "type", required=True)
        if typ in BINANCE_TYPES or typ not in ORDER_TYPES:
            raise (
                P.ApiError(400, -1116, "Invalid orderType.")
                if typ in BINANCE_TYPES
                else P.illegal("type", ", ".join(ORDER_TYPES))
            )
        tif = P.text(p, "timeInForce")
        if typ == "LIMIT":
            if tif is None:
                raise P.missing("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise P.ApiError(400, -1115, "Invalid timeInForce.")
        elif tif is not None:
            raise P.not_required("timeInForce")
        qty = P.number(p, "quantity")
        quote = P.number(p, "quoteOrderQty")
        price = P.number(p, "price")
        coid = P.text(p, "newClientOrderId")
        if coid is not None and not P.CLIENT_ID.match(coid):
            raise P.illegal("newClientOrderId", "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
        resp = P.choice(p, "newOrderRespType", ("ACK", "RESULT", "FULL")) or "FULL"
        if typ == "MARKET":
            if price is not None:
                raise P.not_required("price")
            if qty is None and quote is None:
                raise P.ApiError(
                    400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
                )
            if qty is not None and quote is not None:
                raise P.not_required("quoteOrderQty")
            if quote is not None and quote <= 0:
                raise P.ApiError(400, -1013, "Invalid quantity.")
        else:
            if quote is not None:
                raise P.not_required("quoteOrderQty")
            if qty is None:
                raise P.missing("quantity")
            if price is None:
                raise P.missing("price")
        return dict(
            f=f,
            side=side,
            type=typ,
            tif=tif or "GTC",
            qty=qty,
            quote=quote,
            price=price,
            coid=coid or new_client_id(),
            resp=resp,
        )

    def _place(self, account: str, a: dict[str, Any], test: bool = False) -> tuple[Any, list]:
        f = a["f"]
        try:
            steps = f.steps_of(a["qty"]) if a["qty"] is not None else 0
            ticks = f.ticks_of(a["price"]) if a["price"] is not None else None
            if not test:
                self.limiter.order(account)
            self.venue.requote(f.symbol)
            rec, execs = self.engine.place(
                account, f.symbol, a["side"], a["type"], steps, ticks, a["tif"], a["quote"], a["coid"], test=test
            )
        except Limited as exc:
            raise P.ApiError(exc.status, exc.code, exc.msg, {"Retry-After": str(exc.retry_after)}) from None
        except (Reject, FilterFailure) as exc:
            raise P.ApiError(400, exc.code, exc.msg) from None
        self.venue.dispatch(execs)
        return rec, execs

    async def new_order(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        a = self._order_args(p)
        rec, execs = self._place(account, a)
        return web.json_response(render.new_order(rec, a["f"], execs, a["resp"]))

    async def test_order(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        self._place(account, self._order_args(p), test=True)
        if p.get("computeCommissionRates") == "true":
            rate = render.fmt8(int(self.engine.taker_fee * 10**8))
            zero = render.ZERO8
            return web.json_response(
                {
                    "standardCommissionForOrder": {"maker": rate, "taker": rate},
                    "specialCommissionForOrder": {"maker": zero, "taker": zero},
                    "taxCommissionForOrder": {"maker": zero, "taker": zero},
                    "discount": {
                        "enabledForAccount": False,
                        "enabledForSymbol": False,
                        "discountAsset": "BNB",
                        "discount": zero,
                    },
                }
            )
        return web.json_response({})

    def _find(self, p: dict[str, str], account: str, unknown: tuple[int, str]) -> Any:
        f = P.symbol(p, self.filters)
        assert f is not None
        oid = P.integer(p, "orderId")
        coid = P.text(p, "origClientOrderId")
        if oid is None and coid is None:
            raise P.ApiError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        rec = self.engine.order(f.symbol, oid, None if oid is not None else coid, account)
        if rec is None or (oid is not None and coid is not None and rec.client_order_id != coid):
            raise P.ApiError(400, *unknown)
        return f, rec

    async def query_order(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f, rec = self._find(p, account, (-2013, "Order does not exist."))
        return web.json_response(render.order(rec, f))

    async def cancel_order(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f, rec = self._find(p, account, (-2011, "Unknown order sent."))
        cancel_id = P.text(p, "newClientOrderId") or new_client_id()
        try:
            execs = self.engine.cancel(rec)
        except Reject as exc:
            raise P.ApiError(400, exc.code, exc.msg) from None
        self.venue.dispatch(execs)
        return web.json_response(render.canceled(rec, f, cancel_id, now_ms()))

    async def open_orders(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f = P.symbol(p, self.filters, required=False)
        recs = self.engine.open_orders(account, f.symbol if f else None)
        return web.json_response(
            [render.order(r, self.filters[r.symbol]) for r in sorted(recs, key=lambda r: r.order_id)]
        )

    async def cancel_open_orders(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f = P.symbol(p, self.filters)
        assert f is not None
        recs = sorted(self.engine.open_orders(account, f.symbol), key=lambda r: r.order_id)
        if not recs:
            raise P.ApiError(400, -2011, "Unknown order sent.")
        out, execs = [], []
        t = now_ms()
        for r in recs:
            execs += self.engine.cancel(r, t)
            out.append(render.canceled(r, f, new_client_id(), t))
        self.venue.dispatch(execs)
        return web.json_response(out)

    async def all_orders(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f = P.symbol(p, self.filters)
        assert f is not None
        oid, start, end = P.integer(p, "orderId"), P.integer(p, "startTime"), P.integer(p, "endTime")
        n = P.limit(p, 500, 1000)
        recs = [
            r
            for r in self.engine.by_account.get(account, [])
            if r.symbol == f.symbol
            and (oid is None or r.order_id >= oid)
            and (start is None or r.time_ms >= start)
            and (end is None or r.time_ms <= end)
        ]
        recs = recs[:n] if oid is not None or start is not None else recs[-n:]
        return web.json_response([render.order(r, f) for r in recs])

    async def my_trades(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        f = P.symbol(p, self.filters)
        assert f is not None
        oid, from_id = P.integer(p, "orderId"), P.integer(p, "fromId")
        start, end = P.integer(p, "startTime"), P.integer(p, "endTime")
        n = P.limit(p, 500, 1000)
        fills = [
            x
            for x in self.engine.fills.get((account, f.symbol), [])
            if (oid is None or x.order_id == oid)
            and (from_id is None or x.trade_id >= from_id)
            and (start is None or x.time_ms >= start)
            and (end is None or x.time_ms <= end)
        ]
        fills = fills[:n] if from_id is not None or start is not None else fills[-n:]
        return web.json_response([render.my_trade(x, f) for x in fills])

    async def account(self, request: web.Request) -> web.Response:
        p, account = await self._signed(request)
        omit = p.get("omitZeroBalances") == "true"
        fee_bp = int(self.engine.taker_fee * 10**4)
        return web.json_response(
            render.account(self.engine.accounts, account, self.venue.uids.get(account, 0), now_ms(), omit, fee_bp)
        )

    # -- the user data stream's listen keys ------------------------------------------------------
    async def _listen_key(self, request: web.Request) -> tuple[str, str | None]:
        _, account = self._key(request)
        body = (await request.text()) if request.can_read_body else ""
        p = signing.params_of(request.rel_url.raw_query_string, body)
        return account, P.text(p, "listenKey")

    async def new_listen_key(self, request: web.Request) -> web.Response:
        account, _ = await self._listen_key(request)
        return web.json_response({"listenKey": self.venue.users.create(account)})

    async def keep_listen_key(self, request: web.Request) -> web.Response:
        account, key = await self._listen_key(request)
        if key is None:
            raise P.missing("listenKey")
        if not self.venue.users.keepalive(account, key):
            raise P.ApiError(400, -1125, "This listenKey does not exist.")
        return web.json_response({})

    async def close_listen_key(self, request: web.Request) -> web.Response:
        account, key = await self._listen_key(request)
        if key is None:
            raise P.missing("listenKey")
        if not self.venue.users.close(account, key):
            raise P.ApiError(400, -1125, "This listenKey does not exist.")
        return web.json_response({})

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v3/order", self.new_order)
        r.add_get("/api/v3/order", self.query_order)
        r.add_delete("/api/v3/order", self.cancel_order)
        r.add_post("/api/v3/order/test", self.test_order)
        r.add_get("/api/v3/openOrders", self.open_orders)
        r.add_delete("/api/v3/openOrders", self.cancel_open_orders)
        r.add_get("/api/v3/allOrders", self.all_orders)
        r.add_get("/api/v3/myTrades", self.my_trades)
        r.add_get("/api/v3/account", self.account)
        r.add_post("/api/v3/userDataStream", self.new_listen_key)
        r.add_put("/api/v3/userDataStream", self.keep_listen_key)
        r.add_delete("/api/v3/userDataStream", self.close_listen_key)
