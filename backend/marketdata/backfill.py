"""Trades the gateway missed (it crashed, its connection dropped), found by trade id and fetched
again from the venue's REST trade history.

A venue's trade ids rise by one per symbol, so the last id written per symbol is all the memory
needed: the gateway keeps it in Redis (`LAST_ID_KEY`), set in the same MULTI as each raw batch
it writes (never ahead of what md.ticks.raw holds). The first trade it sees above that id + 1
(after a restart, on a reconnect) shows a gap (`find_gap`). The gap is fetched page by page from
`GET /api/v3/historicalTrades?symbol=&fromId=&limit=1000` (Binance's, and the local exchange's:
backend/exchange/history.py) and written before the live trades of that symbol, so the stream
stays in trade-id order and the normalizer's high-water mark accepts it. What the venue no longer
holds or would not serve is lost: `Coverage` says which ids, `lost_alert` raises it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import msgspec

from backend.exchange.wire import HistoricalTrade, history_decoder
from backend.marketdata.raw import RawBatchBuilder
from backend.messages import Alert

LAST_ID_KEY = "md:gateway:last_id"
"""Redis hash: symbol -> the last trade id the gateway wrote to md.ticks.raw."""
PAGE = 1000  # the most historicalTrades answers at once
ALERT_KIND = "md_gap"


@dataclass(frozen=True)
class Gap:
    """Trade ids `first`..`last` (inclusive) of `symbol` that the live feed did not deliver."""

    symbol: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def find_gap(symbol: str, last_seen: int | None, trade_id: int) -> Gap | None:
    """The gap before `trade_id` when the last id seen of `symbol` was `last_seen` (None: nothing
    seen yet, no gap); None for the next id, and for a repeat or an older id."""
    if last_seen is None or trade_id <= last_seen + 1:
        return None
    return Gap(symbol, last_seen + 1, trade_id - 1)


class Coverage:
    """Which ids of a gap have been fetched, fed pages of trades in rising id order; the ids
    skipped over, and at `finish()` those never reached, are the holes (lost)."""

    def __init__(self, gap: Gap) -> None:
        self.gap = gap
        self.next = gap.first  # the lowest id not accounted for
        self.got = 0
        self.holes: list[tuple[int, int]] = []
        self.beyond = False  # a trade past the gap was seen: nothing more to fetch

    def take(self, trades: Sequence[HistoricalTrade]) -> list[HistoricalTrade]:
        """The trades of `trades` inside the gap that are new (in order); records the holes."""
        kept = []
        for t in trades:
            if t.id < self.next:
                continue  # before the gap, or a repeat
            if t.id > self.gap.last:
                self.beyond = True
                break
            if t.id > self.next:
                self.holes.append((self.next, t.id - 1))
            kept.append(t)
            self.next = t.id + 1
        self.got += len(kept)
        return kept

    @property
    def done(self) -> bool:
        return self.beyond or self.next > self.gap.last

    def finish(self) -> None:
        """Nothing more will come: the ids not reached are a hole."""
        if self.next <= self.gap.last:
            self.holes.append((self.next, self.gap.last))
            self.next = self.gap.last + 1

    @property
    def lost(self) -> int:
        return sum(b - a + 1 for a, b in self.holes)


@dataclass
class Filled:
    """What became of a gap: how many trades were fetched, the ids lost, and why."""

    gap: Gap
    fetched: int = 0
    holes: list[tuple[int, int]] = field(default_factory=list)
    reason: str = ""

    @property
    def lost(self) -> int:
        return sum(b - a + 1 for a, b in self.holes)


class HistoryError(Exception):
    """The venue's trade history could not be read (a clear message, no traceback)."""


async def fetch_page(
    client: httpx.AsyncClient, base_url: str, api_key: str, symbol: str, from_id: int, limit: int = PAGE
) -> list[HistoricalTrade]:
    """One page of `GET /api/v3/historicalTrades` from `from_id` up."""
    url = f"{base_url.rstrip('/')}/api/v3/historicalTrades"
    try:
        resp = await client.get(
            url, params={"symbol": symbol, "fromId": from_id, "limit": limit}, headers={"X-MBX-APIKEY": api_key}
        )
    except httpx.HTTPError as exc:
        raise HistoryError(f"GET {url} failed: {exc!r}") from None
    if resp.status_code != 200:
        raise HistoryError(f"GET {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        return history_decoder.decode(resp.content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HistoryError(f"GET {url} answered something that is not a trade list: {exc}") from None


async def fill(
    client: httpx.AsyncClient,
    base_url: str | None,
    api_key: str,
    gap: Gap,
    on_page: Callable[[list[HistoricalTrade]], None],
    *,
    page: int = PAGE,
    max_trades: int | None = None,
) -> Filled:
    """Fetch the gap's trades from the venue's history, handing each page (in id order, inside
    the gap) to `on_page`; at most the last `max_trades` ids of the gap are asked for."""
    cov = Coverage(gap)
    reason = "not in the venue's trade history any more"
    start = gap.first if max_trades is None else max(gap.first, gap.last - max_trades + 1)
    if start > gap.first:
        reason = f"the gap is larger than backfill_max_trades ({max_trades}) and older ids are not asked for"
    if base_url is None:
        reason = (
            "no REST trade history to backfill from (set [services.gateway] rest_url, "
            "or run the local exchange with its REST API)"
        )
    elif start <= gap.last:  # (backfill_max_trades = 0 fetches nothing)
        cursor = start
        while not cov.done:
            try:
                trades = await fetch_page(
                    client, base_url, api_key, gap.symbol, cursor, min(page, gap.last - cursor + 1)
                )
            except HistoryError as exc:
                reason = str(exc)
                break
            before = cov.next
            kept = cov.take(trades)
            if kept:
                on_page(kept)
            if cov.next == before:  # nothing new at or after the cursor: the venue has no more
                break
            cursor = cov.next
    cov.finish()
    return Filled(gap, cov.got, cov.holes, reason if cov.holes else "")


def add_trades(builder: RawBatchBuilder, symbol: str, trades: Sequence[HistoricalTrade], recv_ns: int) -> None:
    """History trades as raw ticks (trade time for the event time: the history has no other)."""
    add = builder.add
    for t in trades:
        ns = t.time * 1_000_000
        add(symbol, t.id, t.price, t.qty, ns, ns, t.is_buyer_maker, recv_ns)


def describe(holes: Sequence[tuple[int, int]], most: int = 5) -> str:
    """'a..b, c..d' (the first `most` ranges, and how many more)."""
    parts = [f"{a}..{b}" if a != b else f"{a}" for a, b in holes[:most]]
    if len(holes) > most:
        parts.append(f"and {len(holes) - most} more range(s)")
    return ", ".join(parts)


def lost_alert(filled: Filled, source: str, now_ns: int | None = None) -> Alert:
    """The alert for trades that could not be backfilled: the symbol, the id ranges, why."""
    now_ns = now_ns or time.time_ns()
    g = filled.gap
    return Alert(
        id=f"md-gap-{g.symbol}-{g.first}-{now_ns}",
        ts_ns=now_ns,
        severity="critical",
        source=source,
        kind=ALERT_KIND,
        key=f"{ALERT_KIND}:{g.symbol}:{g.first}-{g.last}",
        message=(
            f"{g.symbol}: {filled.lost} trade(s) lost from md.ticks, ids {describe(filled.holes)} "
            f"(gap {g.first}..{g.last}, {filled.fetched} backfilled): {filled.reason}"
        ),
    )
