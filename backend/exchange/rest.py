"""The local exchange's REST API, Binance Spot's as trading clients use it (binance-connector's
`Spot`, ccxt's `binance` with its urls pointed here): the public endpoints
(`backend.exchange.rest_market`, the trade history of `backend.exchange.history`), the signed
trading and account endpoints and the listen keys (`backend.exchange.rest_trade`).

Around every request: its weight is charged to the caller's IP (`X-MBX-USED-WEIGHT-1M`; over
the limit HTTP 429 with `Retry-After`, then 418 for an IP that keeps going:
`backend.exchange.ratelimit`), and every error is Binance's JSON `{"code", "msg"}` with its HTTP
status (a route that does not exist: 404; anything unexpected: 500, code -1000)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from backend.exchange.history import add_history_routes
from backend.exchange.params import ApiError
from backend.exchange.ratelimit import Limited, Limits, RateLimiter
from backend.exchange.rest_market import MarketApi
from backend.exchange.rest_trade import TradeApi
from backend.exchange.venue import LocalVenue, VenueConfig

__all__ = ["RestServer", "create_rest_server"]

WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/trades"): 25,
    ("GET", "/api/v3/historicalTrades"): 25,
    ("GET", "/api/v3/aggTrades"): 4,
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): 1,
    ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/myTrades"): 20,
    ("POST", "/api/v3/userDataStream"): 2,
    ("PUT", "/api/v3/userDataStream"): 2,
    ("DELETE", "/api/v3/userDataStream"): 2,
}


def weight(request: web.Request) -> int:
    """What a request costs, as Binance counts it."""
    path, q = request.path, request.query
    if path == "/api/v3/depth":
        n = int(q["limit"]) if q.get("limit", "").isdigit() else 100
        return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250
    if path in ("/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
        return 2 if q.get("symbol") else 4
    if path == "/api/v3/ticker/24hr":
        return 2 if q.get("symbol") else 80
    if path == "/api/v3/openOrders" and request.method == "GET":
        return 6 if q.get("symbol") else 80
    return WEIGHTS.get((request.method, path), 1)


def error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def rate_limits_info(limits: Limits) -> list[dict[str, Any]]:
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limits.weight_per_minute},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": limits.orders_per_10s},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]


def middleware(limiter: RateLimiter) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def handle(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        ip = request.remote or "?"
        try:
            used = limiter.spend(ip, weight(request))
        except Limited as exc:
            return error(
                exc.status,
                exc.code,
                exc.msg,
                {"Retry-After": str(exc.retry_after), "X-MBX-USED-WEIGHT-1M": str(limiter.used(ip))},
            )
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        try:
            resp = await handler(request)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.msg, {**headers, **exc.headers})
        except web.HTTPNotFound:
            return error(404, -1000, f"Unknown endpoint {request.method} {request.path}.", headers)
        except web.HTTPMethodNotAllowed:
            return error(405, -1000, f"Method {request.method} is not allowed on {request.path}.", headers)
        except web.HTTPException as exc:
            return error(exc.status, -1000, exc.reason, headers)
        except Exception:
            import logging

            logging.getLogger("tradeops.exchange").exception("REST %s %s failed", request.method, request.path)
            return error(500, -1000, "An unknown error occurred while processing the request.", headers)
        resp.headers.update(headers)
        return resp

    return handle


class RestServer:
    def __init__(self, runner: web.AppRunner, url: str, venue: LocalVenue, limiter: RateLimiter) -> None:
        self.runner, self.url, self.venue, self.limiter = runner, url, venue, limiter

    async def close(self) -> None:
        await self.runner.cleanup()


async def create_rest_server(
    feed: Any, host: str, port: int, venue: LocalVenue | None = None, config: VenueConfig | None = None
) -> RestServer:
    """The REST API on `host:port`, its requests signed with the venue's keys (no default: see
    backend/exchange/keys.py)."""
    venue = venue or LocalVenue(feed, config)
    limiter = RateLimiter(venue.config.limits)
    app = web.Application(middlewares=[middleware(limiter)])
    MarketApi(venue, rate_limits_info(venue.config.limits)).add_routes(app)
    TradeApi(venue, limiter).add_routes(app)
    keys = set(venue.config.keys)
    add_history_routes(app, feed.history, next(iter(venue.config.keys), ""), keys=keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the port the site bound (0 asks for a free one)
    return RestServer(runner, f"http://{host}:{bound}", venue, limiter)
