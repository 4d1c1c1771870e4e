"""The local exchange's websocket market streams, Binance Spot's:

- where: `/ws/<stream>` (raw events), `/stream?streams=<a>/<b>` (combined: `{"stream", "data"}`),
  bare `/ws` and `/stream` to subscribe to later, `/ws/<listenKey>` or a SUBSCRIBE to the key (the
  user data stream, `backend.exchange.userstream`), `/ws/news` (the alt-data feed);
- live requests: `{"method": "SUBSCRIBE" | "UNSUBSCRIBE", "params": [...], "id": n}` answered
  `{"result": null, "id": n}`, `LIST_SUBSCRIPTIONS` (the streams), `SET_PROPERTY` /
  `GET_PROPERTY` `["combined", bool]`; a bad request gets `{"error": {"code", "msg"}, "id"}`;
- streams: `<s>@trade` (with `M`), `<s>@aggTrade`, `<s>@kline_<interval>` (every second, and
  once closed), `<s>@bookTicker` (on a change of the best levels), `<s>@depth` /
  `<s>@depth@100ms` (diffs with first and last update id `U`/`u` that continue the REST depth
  snapshot's `lastUpdateId`), `<s>@depth<5|10|20>[@100ms]` (partial books);
- limits as Binance's: a ping every 20 s (a pong due within 60 s), at most 5 incoming messages a
  second (more closes the connection), a bounded incoming queue and message size, at most 1024
  streams a connection, and every connection closed after 24 hours.

The book streams need the trading side (`backend.exchange.venue`): without it (an exchange with
no REST API) only the trade, aggTrade and kline streams exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger("tradeops.exchange")

INTERVALS = {
    "1s": 1,
    "1m": 60,
    "3m": 180,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1d": 86400,
}
STREAM = re.compile(r"^([a-z0-9]+)@(trade|aggTrade|bookTicker|kline_([0-9]+[smhd])|depth(5|10|20)?(@100ms|@1000ms)?)$")
MAX_STREAMS = 1024
MSGS_PER_S = 5


@dataclass
class WsLimits:
    max_age_s: float = 86_400.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 60.0
    max_queue: int = 16
    max_size: int = 64 * 1024
    msgs_per_s: float = MSGS_PER_S


@dataclass
class Kline:
    start_ms: int
    o: float
    h: float
    low: float
    c: float
    v: float = 0.0
    qv: float = 0.0
    n: int = 0
    first: int = 0
    last: int = 0
    taker_v: float = 0.0
    taker_qv: float = 0.0


@dataclass
class ConnState:
    combined: bool
    streams: set[str] = field(default_factory=set)
    tokens: float = MSGS_PER_S
    refill: float = field(default_factory=time.monotonic)


class StreamHub:
    """Who listens to which stream, and the events of the streams the feed does not send itself."""

    def __init__(self, feed: Any, limits: WsLimits | None = None) -> None:
        self.feed = feed
        self.venue: Any = None  # backend.exchange.venue.LocalVenue, when there is a trading side
        self.limits = limits or WsLimits()
        self.by_lower = {s.lower(): s for s in feed.config.symbols}
        self.raw: dict[str, set[ServerConnection]] = {}
        self.combined: dict[str, set[ServerConnection]] = {}
        self.conns: dict[ServerConnection, ConnState] = {}
        self.klines: dict[tuple[str, str], Kline] = {}  # (symbol, interval) -> the open kline
        self.tracked: dict[str, set[str]] = {}  # symbol -> intervals kept
        self.depth_u: dict[str, int] = {}  # symbol -> last update id sent on its diff streams
        self.depth_slow: dict[str, dict[tuple[str, int], int]] = {}  # changes for the 1000 ms diffs
        self.depth_slow_u: dict[str, int] = {}
        self.best: dict[str, tuple[Any, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- names ---------------------------------------------------------------------------------
    def is_user(self, name: str) -> bool:
        return self.venue is not None and self.venue.users.account_of(name) is not None

    def end_stream(self, name: str, last: dict[str, Any] | None) -> None:
        """Send `last` on `name`, then close the connections listening to it (a listen key gone)."""
        if last is not None:
            self.send(name, last)
        for table in (self.raw, self.combined):
            for conn in table.get(name, set()).copy():
                asyncio.get_running_loop().create_task(conn.close(1000, "listen key gone"))

    def valid(self, name: str) -> bool:
        if self.is_user(name):
            return True
        m = STREAM.match(name)
        if m is None or m.group(1) not in self.by_lower:
            return False
        if m.group(3) is not None and m.group(3) not in INTERVALS:
            return False
        book_stream = m.group(2) == "bookTicker" or m.group(2).startswith("depth")
        return not (book_stream and self.venue is None)  # book streams need the venue's book

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(self, conn: ServerConnection, names: list[str]) -> None:
        st = self.conns[conn]
        table = self.combined if st.combined else self.raw
        for n in names:
            st.streams.add(n)
            table.setdefault(n, set()).add(conn)
            m = STREAM.match(n)
            if m and m.group(3):
                sym = self.by_lower[m.group(1)]
                self.tracked.setdefault(sym, set()).add(m.group(3))

    def unsubscribe(self, conn: ServerConnection, names: list[str]) -> None:
        st = self.conns[conn]
        for n in names:
            st.streams.discard(n)
            for table in (self.raw, self.combined):
                s = table.get(n)
                if s is not None:
                    s.discard(conn)
                    if not s:
                        del table[n]

    def set_combined(self, conn: ServerConnection, combined: bool) -> None:
        st = self.conns[conn]
        names = list(st.streams)
        self.unsubscribe(conn, names)
        st.combined = combined
        self.subscribe(conn, names)

    def listening(self, name: str) -> bool:
        return name in self.raw or name in self.combined

    def send(self, name: str, event: dict[str, Any]) -> None:
        raw, comb = self.raw.get(name), self.combined.get(name)
        if raw:
            broadcast(raw, json.dumps(event, separators=(",", ":")))
        if comb:
            broadcast(comb, json.dumps({"stream": name, "data": event}, separators=(",", ":")))

    # -- trades: aggTrade and klines -----------------------------------------------------------
    def on_trade(self, sym: str, ev: Any) -> None:
        low = sym.lower()
        name = f"{low}@aggTrade"
        if name in self.raw or name in self.combined:
            self.send(
                name,
                {
                    "e": "aggTrade",
                    "E": ev.E,
                    "s": sym,
                    "a": ev.t,
                    "p": ev.p,
                    "q": ev.q,
                    "f": ev.t,
                    "l": ev.t,
                    "T": ev.T,
                    "m": ev.m,
                    "M": True,
                },
            )
        intervals = self.tracked.get(sym)
        if intervals:
            px, q = float(ev.p), float(ev.q)
            for iv in intervals:
                self._kline_add(sym, iv, ev.T, ev.t, px, q, not ev.m)

    def _kline_add(self, sym: str, iv: str, t_ms: int, tid: int, px: float, q: float, taker_buy: bool) -> None:
        span = INTERVALS[iv] * 1000
        start = t_ms - t_ms % span
        k = self.klines.get((sym, iv))
        if k is not None and k.start_ms != start:
            self._kline_send(sym, iv, k, closed=True)
            k = None
        if k is None:
            k = self.klines[(sym, iv)] = Kline(start, px, px, px, px, first=tid)
        k.h, k.low, k.c = max(k.h, px), min(k.low, px), px
        k.v += q
        k.qv += px * q
        k.n += 1
        k.last = tid
        if taker_buy:
            k.taker_v += q
            k.taker_qv += px * q

    def _kline_send(self, sym: str, iv: str, k: Kline, closed: bool) -> None:
        name = f"{sym.lower()}@kline_{iv}"
        if not self.listening(name):
            return
        f = self.feed.filters[sym]
        px = lambda v: f.price_str(f.nearest_ticks(v))  # noqa: E731
        span = INTERVALS[iv] * 1000
        self.send(
            name,
            {
                "e": "kline",
                "E": int(time.time() * 1000),
                "s": sym,
                "k": {
                    "t": k.start_ms,
                    "T": k.start_ms + span - 1,
                    "s": sym,
                    "i": iv,
                    "f": k.first,
                    "L": k.last,
                    "o": px(k.o),
                    "c": px(k.c),
                    "h": px(k.h),
                    "l": px(k.low),
                    "v": f"{k.v:.8f}",
                    "n": k.n,
                    "x": closed,
                    "q": f"{k.qv:.8f}",
                    "V": f"{k.taker_v:.8f}",
                    "Q": f"{k.taker_qv:.8f}",
                    "B": "0",
                },
            },
        )

    # -- the book streams ----------------------------------------------------------------------
    def _depth_tick(self, slow: bool) -> None:
        if self.venue is None:
            return
        now = int(time.time() * 1000)
        for sym, book in self.venue.engine.books.items():
            low = sym.lower()
            f = self.feed.filters[sym]
            if not slow:
                first = self.depth_u.get(sym, 0) + 1
                bids, asks = book.take_changes()
                pending = self.depth_slow.setdefault(sym, {})
                self.depth_slow_u.setdefault(sym, first)
                for p, q in bids:
                    pending[("b", p)] = q
                for p, q in asks:
                    pending[("a", p)] = q
                if (bids or asks) and self.listening(f"{low}@depth@100ms"):
                    self.send(f"{low}@depth@100ms", self._diff(sym, f, first, book.update_id, bids, asks, now))
                self.depth_u[sym] = book.update_id
                self._book_ticker(sym, book, f)
            else:
                pending = self.depth_slow.pop(sym, {})
                first = self.depth_slow_u.pop(sym, book.update_id)
                if pending:
                    bids = sorted(((p, q) for (s, p), q in pending.items() if s == "b"), reverse=True)
                    asks = sorted((p, q) for (s, p), q in pending.items() if s == "a")
                    ev = self._diff(sym, f, first, self.depth_u.get(sym, book.update_id), bids, asks, now)
                    for name in (f"{low}@depth", f"{low}@depth@1000ms"):
                        if self.listening(name):
                            self.send(name, ev)
            for n in (5, 10, 20):
                for suffix, fast in (("@100ms", True), ("", False), ("@1000ms", False)):
                    name = f"{low}@depth{n}{suffix}"
                    if fast != slow and self.listening(name):
                        b, a = book.depth(n)
                        self.send(
                            name,
                            {
                                "lastUpdateId": book.update_id,
                                "bids": [[f.price_str(p), f.qty_str(q)] for p, q in b],
                                "asks": [[f.price_str(p), f.qty_str(q)] for p, q in a],
                            },
                        )

    @staticmethod
    def _diff(sym: str, f: Any, first: int, last: int, bids: list, asks: list, now: int) -> dict[str, Any]:
        return {
            "e": "depthUpdate",
            "E": now,
            "s": sym,
            "U": first,
            "u": last,
            "b": [[f.price_str(p), f.qty_str(q)] for p, q in bids],
            "a": [[f.price_str(p), f.qty_str(q)] for p, q in asks],
        }

    def _book_ticker(self, sym: str, book: Any, f: Any) -> None:
        name = f"{sym.lower()}@bookTicker"
        if not self.listening(name):
            return
        best = (book.best_bid(), book.best_ask())
        if self.best.get(sym) == best:
            return
        self.best[sym] = best
        b, a = best[0] or (0, 0), best[1] or (0, 0)
        self.send(
            name,
            {
                "u": book.update_id,
                "s": sym,
                "b": f.price_str(b[0]),
                "B": f.qty_str(b[1]),
                "a": f.price_str(a[0]),
                "A": f.qty_str(a[1]),
            },
        )

    async def _every(self, period: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                fn()
            except Exception:
                log.exception("websocket stream tick failed")

    def _klines_tick(self) -> None:
        now = int(time.time() * 1000)
        for (sym, iv), k in list(self.klines.items()):
            if now >= k.start_ms + INTERVALS[iv] * 1000:
                self._kline_send(sym, iv, k, closed=True)
                del self.klines[(sym, iv)]
            else:
                self._kline_send(sym, iv, k, closed=False)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(0.1, lambda: self._depth_tick(False))),
            asyncio.create_task(self._every(1.0, lambda: self._depth_tick(True))),
            asyncio.create_task(self._every(1.0, self._klines_tick)),
        ]
        if self.venue is not None:
            self._tasks.append(asyncio.create_task(self._every(30.0, self.venue.users.sweep)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the endpoint --------------------------------------------------------------------------
    def route(self, path: str) -> tuple[str, list[str]] | None:
        """(kind, names): kind 'raw', 'combined' or 'news'; None for a path that names no stream
        this exchange has (a live listen key names the account's user data stream)."""
        parts = urlsplit(path)
        if parts.path == "/ws/news":
            return "news", []
        if parts.path in ("/ws", "/ws/"):
            return "raw", []
        if parts.path.startswith("/ws/"):
            names = [n for n in parts.path[4:].split("/") if n]
            return ("raw", names) if names and all(self.valid(n) for n in names) else None
        if parts.path in ("/stream", "/stream/"):
            raw = "/".join(parse_qs(parts.query).get("streams", []))
            names = [n for n in raw.split("/") if n]
            if all(self.valid(n) for n in names) and len(names) <= MAX_STREAMS:
                return "combined", names
        return None

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.route(request.path) is None:
            return connection.respond(
                404,
                f"unknown stream {request.path}; try /ws/<symbol>@trade, "
                f"/stream?streams=a@trade/b@depth, or /ws and SUBSCRIBE\n",
            )
        return None

    async def handler(self, connection: ServerConnection) -> None:
        kind, names = self.route(connection.request.path)  # type: ignore[misc,union-attr]
        closer = asyncio.get_running_loop().call_later(self.limits.max_age_s, self._expire, connection)
        try:
            if kind == "news":
                self.feed.news_subs.add(connection)
                await self._drain_incoming(connection)
            else:
                self.conns[connection] = ConnState(combined=kind == "combined", tokens=self.limits.msgs_per_s)
                self.subscribe(connection, names)
                await self._requests(connection)
        except ConnectionClosed:
            pass
        finally:
            closer.cancel()
            self.feed.news_subs.discard(connection)
            if connection in self.conns:
                self.unsubscribe(connection, list(self.conns[connection].streams))
                del self.conns[connection]

    @staticmethod
    def _expire(conn: ServerConnection) -> None:
        asyncio.get_running_loop().create_task(conn.close(1000, "24 h connection limit"))

    async def _drain_incoming(self, conn: ServerConnection) -> None:
        async for _ in conn:
            pass

    def _allow(self, st: ConnState) -> bool:
        now = time.monotonic()
        rate = self.limits.msgs_per_s
        st.tokens = min(rate, st.tokens + (now - st.refill) * rate)
        st.refill = now
        if st.tokens < 1:
            return False
        st.tokens -= 1
        return True

    async def _requests(self, conn: ServerConnection) -> None:
        st = self.conns[conn]
        async for raw in conn:
            if not self._allow(st):
                await conn.close(1008, "too many requests: at most 5 incoming messages a second")
                return
            answer = self.answer(conn, raw)
            if answer is not None:
                await conn.send(json.dumps(answer, separators=(",", ":")))

    def answer(self, conn: ServerConnection, raw: str | bytes) -> dict[str, Any] | None:
        try:
            req = json.loads(raw)
        except ValueError as exc:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}}
        if not isinstance(req, dict):
            return {"error": {"code": 3, "msg": "Invalid JSON: expected an object"}}
        rid = req.get("id")
        if (rid is not None and not isinstance(rid, (int, str))) or isinstance(rid, bool):
            return {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None}

        def bad(msg: str) -> dict[str, Any]:
            return {"error": {"code": 2, "msg": f"Invalid request: {msg}"}, "id": rid}

        method, params = req.get("method"), req.get("params", [])
        st = self.conns[conn]
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return bad("params must be a list of stream names")
            wrong = [p for p in params if not self.valid(p)]
            if wrong:
                return bad(f"invalid stream name {wrong[0]!r}")
            if method == "SUBSCRIBE":
                if len(st.streams | set(params)) > MAX_STREAMS:
                    return bad(f"too many streams: at most {MAX_STREAMS} a connection")
                self.subscribe(conn, params)
            else:
                self.unsubscribe(conn, params)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(st.streams), "id": rid}
        if method == "SET_PROPERTY":
            if not (
                isinstance(params, list)
                and len(params) == 2
                and params[0] == "combined"
                and isinstance(params[1], bool)
            ):
                return bad('SET_PROPERTY takes ["combined", true|false]')
            self.set_combined(conn, params[1])
            return {"result": None, "id": rid}
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return bad('GET_PROPERTY takes ["combined"]')
            return {"result": st.combined, "id": rid}
        return bad(
            f"unknown method {method!r}; expected SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, "
            f"SET_PROPERTY or GET_PROPERTY"
        )


async def serve_streams(hub: StreamHub, host: str, port: int) -> Server:
    lim = hub.limits
    return await serve(
        hub.handler,
        host,
        port,
        process_request=hub.process_request,
        max_queue=lim.max_queue,
        max_size=lim.max_size,
        write_limit=2**20,
        compression=None,
        ping_interval=lim.ping_interval_s,
        ping_timeout=lim.ping_timeout_s,
    )
