"""The local exchange's public REST endpoints, as Binance Spot serves them: `ping`, `time`,
`exchangeInfo`, `depth` (with the book's `lastUpdateId`, which the depth diff streams continue),
`ticker/price`, `ticker/bookTicker`, `ticker/24hr` (over the trades the history holds),
`aggTrades` (each trade its own aggregate), and the trade history (`trades`, `historicalTrades`:
`backend.exchange.history`)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from backend.exchange import params as P
from backend.exchange.filters import SymbolFilters, dec8
from backend.exchange.history import DEFAULT_LIMIT, MAX_LIMIT
from backend.exchange.venue import LocalVenue


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def json(data: Any) -> web.Response:
    return web.json_response(data)


class MarketApi:
    def __init__(self, venue: LocalVenue, limits_info: list[dict[str, Any]]) -> None:
        self.venue = venue
        self.filters = venue.engine.filters
        self.rate_limits = limits_info

    async def ping(self, request: web.Request) -> web.Response:
        return json({})

    async def time(self, request: web.Request) -> web.Response:
        return json({"serverTime": now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        chosen = P.symbols(p, self.filters)
        fs = chosen if chosen is not None else list(self.filters.values())
        return json(
            {
                "timezone": "UTC",
                "serverTime": now_ms(),
                "rateLimits": self.rate_limits,
                "exchangeFilters": [],
                "symbols": [f.info() for f in fs],
            }
        )

    async def depth(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        f = P.symbol(p, self.filters)
        assert f is not None
        n = P.limit(p, 100, 5000)
        self.venue.requote(f.symbol)
        book = self.venue.engine.books[f.symbol]
        bids, asks = book.depth(n)
        return json(
            {
                "lastUpdateId": book.update_id,
                "bids": [[f.price_str(px), f.qty_str(q)] for px, q in bids],
                "asks": [[f.price_str(px), f.qty_str(q)] for px, q in asks],
            }
        )

    async def ticker_price(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        chosen = P.symbols(p, self.filters)
        fs = chosen if chosen is not None else list(self.filters.values())
        rows = [
            {"symbol": f.symbol, "price": f.price_str(f.nearest_ticks(self.venue.feed.last_price(f.symbol)))}
            for f in fs
        ]
        return json(rows[0] if "symbol" in p else rows)

    async def book_ticker(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        chosen = P.symbols(p, self.filters)
        fs = chosen if chosen is not None else list(self.filters.values())
        rows = []
        for f in fs:
            book = self.venue.engine.books[f.symbol]
            b, a = book.best_bid() or (0, 0), book.best_ask() or (0, 0)
            rows.append(
                {
                    "symbol": f.symbol,
                    "bidPrice": f.price_str(b[0]),
                    "bidQty": f.qty_str(b[1]),
                    "askPrice": f.price_str(a[0]),
                    "askQty": f.qty_str(a[1]),
                }
            )
        return json(rows[0] if "symbol" in p else rows)

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        chosen = P.symbols(p, self.filters)
        fs = chosen if chosen is not None else list(self.filters.values())
        rows = []
        since = now_ms() - 86_400_000
        for f in fs:
            w = self.venue.feed.history.window(f.symbol, since)
            book = self.venue.engine.books[f.symbol]
            b, a = book.best_bid() or (0, 0), book.best_ask() or (0, 0)
            last = w["last"] if w else self.venue.feed.last_price(f.symbol)
            o = w["open"] if w else last

            def px(v: float, f: SymbolFilters = f) -> str:
                return f.price_str(f.nearest_ticks(v))

            rows.append(
                {
                    "symbol": f.symbol,
                    "priceChange": dec8(Decimal(repr(last)) - Decimal(repr(o))),
                    "priceChangePercent": f"{(last - o) / o * 100:.3f}" if o else "0.000",
                    "weightedAvgPrice": px(w["quote_volume"] / w["volume"]) if w and w["volume"] else px(last),
                    "prevClosePrice": px(o),
                    "lastPrice": px(last),
                    "lastQty": dec8(Decimal(repr(w["last_qty"])) if w else Decimal(0)),
                    "bidPrice": f.price_str(b[0]),
                    "bidQty": f.qty_str(b[1]),
                    "askPrice": f.price_str(a[0]),
                    "askQty": f.qty_str(a[1]),
                    "openPrice": px(o),
                    "highPrice": px(w["high"] if w else last),
                    "lowPrice": px(w["low"] if w else last),
                    "volume": f"{w['volume'] if w else 0:.8f}",
                    "quoteVolume": f"{w['quote_volume'] if w else 0:.8f}",
                    "openTime": w["open_time"] if w else since,
                    "closeTime": w["close_time"] if w else now_ms(),
                    "firstId": w["first_id"] if w else -1,
                    "lastId": w["last_id"] if w else -1,
                    "count": w["count"] if w else 0,
                }
            )
        return json(rows[0] if "symbol" in p else rows)

    async def agg_trades(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        f = P.symbol(p, self.filters)
        assert f is not None
        n = P.limit(p, DEFAULT_LIMIT, MAX_LIMIT)
        from_id, start, end = P.integer(p, "fromId"), P.integer(p, "startTime"), P.integer(p, "endTime")
        history = self.venue.feed.history
        if from_id is None and start is not None:
            from_id = history.first_at(f.symbol, start)
            if from_id is None:
                return json([])
        rows = history.trades(f.symbol, from_id, n)
        out = [
            {"a": t.id, "p": t.price, "q": t.qty, "f": t.id, "l": t.id, "T": t.time, "m": t.is_buyer_maker, "M": True}
            for t in rows
            if end is None or t.time <= end
        ]
        return json(out)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v3/ping", self.ping)
        r.add_get("/api/v3/time", self.time)
        r.add_get("/api/v3/exchangeInfo", self.exchange_info)
        r.add_get("/api/v3/depth", self.depth)
        r.add_get("/api/v3/ticker/price", self.ticker_price)
        r.add_get("/api/v3/ticker/bookTicker", self.book_ticker)
        r.add_get("/api/v3/aggTrades", self.agg_trades)
        r.add_get("/api/v3/ticker/24hr", self.ticker_24hr)
