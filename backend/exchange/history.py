"""The local exchange's trade history: the last N trades of each symbol in a ring, served as
Binance serves its own, so a gateway that missed trades (it crashed, its connection dropped)
fetches them again by trade id:

- `GET /api/v3/historicalTrades?symbol=&limit=&fromId=` (API key in `X-MBX-APIKEY`): trades
  with ids from `fromId` up (the most recent without it), oldest first;
- `GET /api/v3/trades?symbol=&limit=`: the most recent trades (no key).

Both answer a list of `{"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}`
(prices and quantities as strings, exactly as the trade stream sent them); `limit` is 500 by
default and at most 1000. A `fromId` older than the ring holds answers from the oldest trade
still held. Errors are Binance's: -1102 (a mandatory parameter missing), -1121 (unknown
symbol), -1100 (a malformed number), -2014/-2015 (no or a wrong API key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from backend.exchange.wire import HistoricalTrade

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
QTY_DECIMALS = 4  # by default; the feed renders 8, as Binance does


class _Ring:
    """One symbol's last `size` trades; trade ids rise by one, so id % size is the slot."""

    def __init__(self, size: int, decimals: int) -> None:
        self.size = size
        self.decimals = decimals
        self.price = np.empty(size)
        self.qty = np.empty(size)
        self.time = np.empty(size, np.int64)
        self.maker = np.empty(size, np.bool_)
        self.first = -1  # the first id recorded (-1: none yet)
        self.next = -1  # the id after the last recorded

    def span(self) -> tuple[int, int] | None:
        """(oldest, newest) id held, or None."""
        if self.first < 0:
            return None
        return max(self.first, self.next - self.size), self.next - 1


class TradeHistory:
    """The last `size` trades of each symbol (numpy columns: about 25 bytes a trade)."""

    def __init__(
        self, symbols: Sequence[str], size: int, price_decimals: Sequence[int], qty_decimals: int = QTY_DECIMALS
    ) -> None:
        if size < 1:
            raise ValueError(f"the trade history must hold at least 1 trade per symbol, not {size}")
        self.size = size
        self.qty_decimals = qty_decimals
        self.symbols = list(symbols)
        self.rings = [_Ring(size, d) for d in price_decimals]
        self._index = {s: i for i, s in enumerate(self.symbols)}

    def add(self, j: int, trade_id: int, price: float, qty: float, time_ms: int, buyer_maker: bool) -> None:
        """Record the trade `trade_id` of the `j`th symbol (ids of a symbol arrive one by one)."""
        r = self.rings[j]
        k = trade_id % r.size
        r.price[k] = price
        r.qty[k] = qty
        r.time[k] = time_ms
        r.maker[k] = buyer_maker
        if r.first < 0:
            r.first = trade_id
        r.next = trade_id + 1

    def span(self, symbol: str) -> tuple[int, int] | None:
        """(oldest, newest) trade id held for `symbol`; None when none is; KeyError if unknown."""
        return self.rings[self._index[symbol]].span()

    def first_at(self, symbol: str, time_ms: int) -> int | None:
        """The id of the oldest held trade of `symbol` at or after `time_ms`, or None."""
        r = self.rings[self._index[symbol]]
        span = r.span()
        if span is None:
            return None
        lo, hi = span
        if r.time[hi % r.size] < time_ms:
            return None
        while lo < hi:  # times rise with ids
            mid = (lo + hi) // 2
            if r.time[mid % r.size] < time_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def window(self, symbol: str, since_ms: int) -> dict[str, float] | None:
        """Open, high, low, last, volume, quote volume, first and last id and count of the held
        trades of `symbol` at or after `since_ms` (the 24 h ticker), or None."""
        first = self.first_at(symbol, since_ms)
        if first is None:
            return None
        r = self.rings[self._index[symbol]]
        last = r.next - 1
        idx = np.arange(first, last + 1) % r.size
        p, q = r.price[idx], r.qty[idx]
        return {
            "open": float(p[0]),
            "high": float(p.max()),
            "low": float(p.min()),
            "last": float(p[-1]),
            "last_qty": float(q[-1]),
            "volume": float(q.sum()),
            "quote_volume": float((p * q).sum()),
            "first_id": first,
            "last_id": last,
            "count": last - first + 1,
            "open_time": int(r.time[idx[0]]),
            "close_time": int(r.time[idx[-1]]),
        }

    def trades(self, symbol: str, from_id: int | None = None, limit: int = DEFAULT_LIMIT) -> list[HistoricalTrade]:
        """Up to `limit` trades from `from_id` up (from the oldest held if that is older), or the
        most recent `limit` without `from_id`; KeyError for an unknown symbol."""
        r = self.rings[self._index[symbol]]
        span = r.span()
        if span is None or limit < 1:
            return []
        oldest, newest = span
        start = max(oldest, newest - limit + 1) if from_id is None else max(oldest, from_id)
        end = min(newest, start + limit - 1)
        d, qd = r.decimals, self.qty_decimals
        out = []
        for tid in range(start, end + 1):
            k = tid % r.size
            p, q = r.price[k], r.qty[k]
            out.append(
                HistoricalTrade(
                    id=tid,
                    price=f"{p:.{d}f}",
                    qty=f"{q:.{qd}f}",
                    quote_qty=f"{p * q:.8f}",
                    time=int(r.time[k]),
                    is_buyer_maker=bool(r.maker[k]),
                    is_best_match=True,
                )
            )
        return out


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode({"code": code, "msg": msg}), content_type="application/json"
    )


def _number(request: web.Request, name: str) -> int | web.Response | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        return _error(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


class HistoryApi:
    """The two GET handlers over a TradeHistory; `api_key` guards historicalTrades."""

    def __init__(self, history: TradeHistory, api_key: str, keys: set[str] | None = None) -> None:
        self.history = history
        self.key = api_key
        self.keys = keys or {api_key}

    def _answer(self, request: web.Request, *, with_from: bool) -> web.Response:
        symbol = request.query.get("symbol", "")
        if not symbol:
            return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        limit = _number(request, "limit")
        if isinstance(limit, web.Response):
            return limit
        from_id = _number(request, "fromId") if with_from else None
        if isinstance(from_id, web.Response):
            return from_id
        limit = DEFAULT_LIMIT if limit is None else min(max(limit, 1), MAX_LIMIT)
        try:
            rows = self.history.trades(symbol, from_id, limit)
        except KeyError:
            return _error(400, -1121, "Invalid symbol.")
        return web.Response(body=msgspec.json.encode(rows), content_type="application/json")

    async def historical(self, request: web.Request) -> web.Response:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            return _error(401, -2014, "API-key format invalid.")
        if key not in self.keys:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return self._answer(request, with_from=True)

    async def recent(self, request: web.Request) -> web.Response:
        return self._answer(request, with_from=False)


def add_history_routes(app: web.Application, history: Any, api_key: str, keys: set[str] | None = None) -> HistoryApi:
    """Serve `history` (a TradeHistory) on `app`: /api/v3/historicalTrades and /api/v3/trades
    (historicalTrades for `api_key`, or any of `keys`)."""
    api = HistoryApi(history, api_key, keys)
    app.router.add_get("/api/v3/historicalTrades", api.historical)
    app.router.add_get("/api/v3/trades", api.recent)
    return api
