"""The venue's public wire format (Binance): trade events on `<symbol>@trade` streams, and the
trade history of its REST API (`GET /api/v3/historicalTrades`, `GET /api/v3/trades`)."""

from __future__ import annotations

import msgspec


class TradeEvent(msgspec.Struct, frozen=True):
    """A Binance `trade` event. Prices and quantities are strings, times are ms since the epoch."""

    e: str  # event type: "trade"
    E: int  # event time (ms)
    s: str  # symbol
    t: int  # trade id
    p: str  # price
    q: str  # quantity
    T: int  # trade time (ms)
    m: bool  # buyer is the maker
    M: bool = True  # "ignore" in Binance's docs; always sent


class CombinedEvent(msgspec.Struct, frozen=True):
    """A message on the combined endpoint: `{"stream": "btcusdt@trade", "data": {...}}`."""

    stream: str
    data: TradeEvent


class HistoricalTrade(msgspec.Struct, frozen=True, rename="camel"):
    """One trade of Binance's REST trade history: `{"id", "price", "qty", "quoteQty", "time",
    "isBuyerMaker", "isBestMatch"}`; the id is the `t` of the trade stream's event."""

    id: int
    price: str
    qty: str
    quote_qty: str
    time: int  # ms
    is_buyer_maker: bool
    is_best_match: bool = True


class NewsEvent(msgspec.Struct, frozen=True):
    """The local exchange's alt-data feed (`/ws/news`)."""

    id: str
    ts: int  # ms
    symbols: list[str]
    headline: str
    body: str
    sentiment: float


trade_encoder = msgspec.json.Encoder()
trade_decoder = msgspec.json.Decoder(TradeEvent)
combined_decoder = msgspec.json.Decoder(CombinedEvent)
news_decoder = msgspec.json.Decoder(NewsEvent)
history_decoder = msgspec.json.Decoder(list[HistoricalTrade])


def stream_name(symbol: str) -> str:
    return f"{symbol.lower()}@trade"
