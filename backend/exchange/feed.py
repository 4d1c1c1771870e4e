"""The local exchange's market data: a seeded random walk per symbol producing trades at a set
rate, served over websockets in Binance's public format:

- `/ws/<symbol>@trade`: raw trade events of one symbol;
- `/stream?streams=a@trade/b@trade`: combined events `{"stream": ..., "data": ...}`;
- `/ws/news`: alt-data news items (symbol tags, headline, body, sentiment);
- and the rest of Binance's market streams (`backend.exchange.wsapi`).

Each symbol trades as its market does (`backend.marketdata.symbols.FLOWS`): its share of the
trades, and log-normal trade notionals around its own median, so BTC trades a fraction of a coin
at a time and DOGE hundreds. Prices and quantities are on each symbol's tick and step (the instrument master's, through
`backend.exchange.filters`); the matching engine's trades share the walk's trade ids
(`take_trade_id`, `emit`).

The last `history` trades of each symbol are kept (`backend.exchange.history`) for the REST
API's trade history, where a gateway fetches again the trades it missed.

Trade ids start from the clock (microseconds since the epoch), so a restarted exchange continues
above the ids it sent before, and a gateway sees a gap, never a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, broadcast

from backend.exchange.filters import for_symbols
from backend.exchange.history import TradeHistory
from backend.exchange.wire import NewsEvent, TradeEvent, stream_name, trade_encoder
from backend.exchange.wsapi import StreamHub, serve_streams
from backend.marketdata.symbols import DEFAULT_FLOW, DEFAULT_SYMBOLS, FLOWS, START_PRICES

log = logging.getLogger("tradeops.exchange")

HEADLINES = [
    ("{sym} rallies as volumes climb", 0.6),
    ("{sym} slides on profit taking", -0.5),
    ("Regulator comments on {sym} listing", -0.2),
    ("{sym} partnership announced with major payments firm", 0.7),
    ("Whale wallets move large {sym} holdings", -0.1),
    ("{sym} network upgrade goes live", 0.4),
    ("Exchange outage delays {sym} withdrawals", -0.6),
]


@dataclass
class FeedConfig:
    symbols: list[str] = field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    rate: float = 1000.0  # trades per second, all symbols together
    seed: int = 42
    volatility: float = 2e-4  # per-trade relative step of the random walk
    news_every_s: float = 2.0
    tick: float = 0.001  # generation step (s)
    history: int = 100_000  # trades kept per symbol for the REST trade history


class TradeFeed:
    def __init__(self, config: FeedConfig | None = None) -> None:
        self.config = config or FeedConfig()
        c = self.config
        unknown = [s for s in c.symbols if s not in START_PRICES]
        self.rng = np.random.default_rng(c.seed)
        self.prices = np.array([START_PRICES.get(s, 100.0) for s in c.symbols])
        base = time.time_ns() // 1000  # ids continue across restarts
        self.next_id = {s: base for s in c.symbols}
        self.filters = for_symbols(c.symbols, dict(zip(c.symbols, self.prices.tolist(), strict=True)))
        flows = [FLOWS.get(s, DEFAULT_FLOW) for s in c.symbols]
        shares = np.array([f.share for f in flows])
        self._share = shares / shares.sum()  # which symbol a trade is of
        self._log_median = np.log([f.median_usd for f in flows])  # and its notional: log-normal
        self._sigma = np.array([f.sigma for f in flows])
        self._ticks = [float(self.filters[s].tick) for s in c.symbols]
        self._steps = [float(self.filters[s].step) for s in c.symbols]
        self.decimals = [8] * len(c.symbols)  # prices and quantities as Binance renders them
        self.history = TradeHistory(c.symbols, c.history, self.decimals, qty_decimals=8)
        self.print_listeners: list = []  # callables taking each TradeEvent sent (aggTrade, klines)
        self.news_subs: set[ServerConnection] = set()
        self.hub = StreamHub(self)  # who listens to which stream (backend.exchange.wsapi)
        self._names = {s: stream_name(s) for s in c.symbols}
        self.listeners: list = []  # callables taking {symbol: last price} after each step
        self.sent = 0
        self._carry = 0.0
        self._stop = asyncio.Event()
        if unknown:
            log.info("symbols without a start price start at 100: %s", ", ".join(unknown))

    def last_ids(self) -> dict[str, int]:
        """The last trade id sent per symbol (ids start above the clock: see the module doc)."""
        return {s: i - 1 for s, i in self.next_id.items()}

    def last_price(self, symbol: str) -> float:
        """The current price of `symbol` (the matching engine and REST API use it)."""
        try:
            return float(self.prices[self.config.symbols.index(symbol)])
        except ValueError:
            raise KeyError(symbol) from None

    def take_trade_id(self, symbol: str) -> int:
        """The next trade id of `symbol`, for a trade the matching engine makes: engine trades and
        the walk's share one sequence, so the trade stream and the history see them all."""
        tid = self.next_id[symbol]
        self.next_id[symbol] = tid + 1
        return tid

    def emit(self, symbol: str, trade_id: int, price: str, qty: str, time_ms: int, buyer_maker: bool) -> None:
        """Send and record a trade the matching engine made (its id from `take_trade_id`)."""
        j = self.config.symbols.index(symbol)
        ev = TradeEvent("trade", time_ms, symbol, trade_id, price, qty, time_ms, buyer_maker)
        self.history.add(j, trade_id, float(price), float(qty), time_ms, buyer_maker)
        self.publish([(symbol, ev)])

    # -- generation -------------------------------------------------------------------------------
    def generate(self, n: int, now_ms: int) -> list[tuple[str, TradeEvent]]:
        c = self.config
        k = len(c.symbols)
        which = self.rng.choice(k, n, p=self._share)
        steps = self.rng.normal(0.0, c.volatility, n)
        notional = np.exp(self.rng.normal(self._log_median[which], self._sigma[which]))  # USDT
        makers = self.rng.random(n) < 0.5
        record = self.history.add
        out = []
        ticks, lots = self._ticks, self._steps
        for i in range(n):
            j = int(which[i])
            self.prices[j] *= 1.0 + steps[i]
            sym = c.symbols[j]
            tid = self.next_id[sym]
            self.next_id[sym] = tid + 1
            tick, lot = ticks[j], lots[j]
            px = max(1, round(self.prices[j] / tick)) * tick  # on the tick and the step
            q = max(1, round(notional[i] / px / lot)) * lot  # the notional in units of the symbol
            out.append((sym, TradeEvent("trade", now_ms, sym, tid, f"{px:.8f}", f"{q:.8f}", now_ms, bool(makers[i]))))
            record(j, tid, px, q, now_ms, makers[i])
        return out

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            log.exception("the trade feed failed")
            raise

    async def _run(self) -> None:
        c = self.config
        last = time.monotonic()
        next_news = last + c.news_every_s
        while not self._stop.is_set():
            await asyncio.sleep(c.tick)
            now = time.monotonic()
            due = c.rate * (now - last) + self._carry
            last = now
            n = int(due)
            self._carry = due - n
            if n:
                trades = self.generate(n, time.time_ns() // 1_000_000)
                self.publish(trades)
                if self.listeners:
                    latest = {sym: float(ev.p) for sym, ev in trades}
                    for fn in self.listeners:
                        fn(latest)
            if now >= next_news:
                next_news = now + c.news_every_s
                self.publish_news(self.make_news())

    def stop(self) -> None:
        self._stop.set()

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until every subscriber's write buffer is empty, so a clean shutdown
        delivers the trades it already published instead of dropping them with the socket."""
        conns = set(self.news_subs) | set(self.hub.conns)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(
                c.transport is None or c.transport.is_closing() or c.transport.get_write_buffer_size() == 0
                for c in conns
            ):
                return True
            await asyncio.sleep(0.01)
        return False

    def publish(self, trades: list[tuple[str, TradeEvent]]) -> None:
        encode = trade_encoder.encode
        hub = self.hub
        raw_subs, comb_subs = hub.raw, hub.combined
        others = bool(raw_subs or comb_subs or hub.tracked)
        for sym, ev in trades:
            name = self._names[sym]
            raw = raw_subs.get(name)
            comb = comb_subs.get(name)
            if raw or comb:
                body = encode(ev).decode()
                if raw:
                    broadcast(raw, body)
                if comb:
                    broadcast(comb, f'{{"stream":"{name}","data":{body}}}')
            if others:
                hub.on_trade(sym, ev)
        self.sent += len(trades)

    def make_news(self) -> NewsEvent:
        c = self.config
        sym = c.symbols[int(self.rng.integers(0, len(c.symbols)))]
        text, tone = HEADLINES[int(self.rng.integers(0, len(HEADLINES)))]
        base = sym.removesuffix("USDT")
        sentiment = float(np.clip(tone + self.rng.normal(0, 0.15), -1, 1))
        return NewsEvent(
            id=uuid.UUID(int=int(self.rng.integers(0, 2**63)) << 64 | int(self.rng.integers(0, 2**63))).hex,
            ts=time.time_ns() // 1_000_000,
            symbols=[sym],
            headline=text.format(sym=base),
            body=f"{text.format(sym=base)}. {base} last traded at {self.last_price(sym):g}; "
            f"market participants weigh the move.",
            sentiment=round(sentiment, 3),
        )

    def publish_news(self, item: NewsEvent) -> None:
        if self.news_subs:
            broadcast(self.news_subs, trade_encoder.encode(item).decode())


async def serve_feed(feed: TradeFeed, host: str, port: int) -> Server:
    """The feed's websocket endpoint (`backend.exchange.wsapi`)."""
    return await serve_streams(feed.hub, host, port)
