"""gateway (P2): venue websocket market data -> md.ticks.raw (batches), news -> alt.raw.

One client per configured URL (Binance combined or raw trade streams). Reconnects with
exponential backoff and jitter; measures exchange time -> receive time. A frame that does not
decode goes to the dead-letter stream of the stream it was bound for (dlq.md.ticks.raw,
dlq.alt.raw), raw bytes kept.

Trades it missed (it crashed, its connection dropped) are fetched again: the last trade id
written per symbol is kept in Redis with each raw batch (`backfill.LAST_ID_KEY`, same MULTI),
so after a restart or a reconnect the first trade above it + 1 shows the gap; the gap is fetched
from the venue's REST trade history and written before that symbol's live trades, which wait
meanwhile (backend/marketdata/backfill.py). The heartbeat counts gaps, `backfilled_trades` and
`missing_trades` (those the history could not give back, each gap of them also an alert on
ops.alerts); `last_gap` is the latest gap with what became of it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from backend.bus import deadletter, partitions, replies, streams
from backend.bus.access import Keys, Writes
from backend.bus.publish import publish, xadd
from backend.errors import TradeopsError
from backend.exchange import server as exchange_server
from backend.exchange.keys import client_key
from backend.exchange.wire import combined_decoder, news_decoder, trade_decoder
from backend.marketdata import backfill
from backend.marketdata.raw import RawBatchBuilder, max_ids
from backend.messages import AltItem
from backend.metrics import Exported
from backend.secrets import EXCHANGE_API_KEY
from backend.services.base import Service


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    urls: list[str] = []
    """Websocket URLs; empty: the local exchange recorded in the data dir (all its symbols)."""
    news_url: str | None = None
    """Alt-data feed; empty: the local exchange's /ws/news when it runs."""
    max_batch: int = 2000
    """A raw batch is written when the trades that arrived together have been read, or when it
    holds this many ticks."""
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    rest_url: str | None = None
    """The venue's REST API, whose trade history (`/api/v3/historicalTrades`) gives back trades
    missed; empty: the local exchange's, recorded in the data dir."""
    backfill_max_trades: int = 100_000
    """At most this many of a gap's (latest) trades are fetched; older ones count as missing."""
    rest_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rest_url is not None and not self.rest_url.startswith(("http://", "https://")):
            raise ValueError(f"rest_url {self.rest_url!r} is not an http:// or https:// URL")
        if self.backfill_max_trades < 0 or not self.rest_timeout_s > 0:
            raise ValueError("backfill_max_trades must be 0 or more and rest_timeout_s positive")


class GatewayService(Service):
    name = "gateway"
    Config = GatewayConfig
    writes = (
        Writes(streams.MD_TICKS_RAW),
        Writes(streams.ALT_RAW),
        Writes(streams.OPS_ALERTS),
        # frames that do not decode
        Writes(streams.dlq(streams.MD_TICKS_RAW)),
        Writes(streams.dlq(streams.ALT_RAW)),
    )
    keys = (Keys(backfill.LAST_ID_KEY, write=True),)
    exported = (
        Exported("received", "Trades received from the venue.", counter=True),
        Exported("published", "Trades written to md.ticks.raw.", counter=True),
        Exported("gaps", "Gaps in trade ids found after a reconnect or a restart.", counter=True),
        Exported("missing_trades", "Trades the venue's history no longer held.", counter=True),
        Exported("reconnects", "Websocket reconnects.", counter=True),
    )
    secrets = (EXCHANGE_API_KEY,)  # the venue's trade history

    async def setup(self) -> None:
        self.received = 0
        self.published = 0
        self.gaps = 0
        self.missing = 0
        self.last_gap: dict[str, Any] | None = None
        self.regressions = 0
        self.ever_connected: set[str] = set()
        self.reconnects = 0
        self.connected: set[str] = set()
        self.last_id: dict[str, int] = {}
        self.news = 0
        self.delay = self.recorder("feed_delay")
        self.decode_errors = 0
        self.unanswered: set[asyncio.Future[Any]] = set()  # raw batches written, reply not yet back
        self.write_error: BaseException | None = None
        self.backfilled = 0
        # symbol -> its live ticks (and any later gap) waiting while a gap is backfilled
        self.held: dict[str, list[Any]] = {}
        self.backfills: set[asyncio.Task[None]] = set()
        # the last trade id written per symbol (what md.ticks.raw holds), kept across restarts
        stored = replies.fields(await self.r.hgetall(backfill.LAST_ID_KEY))
        self.stored = {k.decode(): int(v) for k, v in stored.items()}
        self.last_id.update(self.stored)
        self.http = httpx.AsyncClient(timeout=self.cfg.rest_timeout_s)

    async def teardown(self) -> None:
        await self.http.aclose()

    def processed(self) -> int:
        return self.received

    def metrics(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "published": self.published,
            "gaps": self.gaps,
            "missing_trades": self.missing,
            "backfilled_trades": self.backfilled,
            "backfilling": sorted(self.held),
            "last_gap": self.last_gap,
            "regressions": self.regressions,
            "connected": sorted(self.connected),
            "reconnects": self.reconnects,
            "news": self.news,
            "decode_errors": self.decode_errors,
        }

    def _urls(self) -> tuple[list[str], str | None]:
        urls, news = list(self.cfg.urls), self.cfg.news_url
        if not urls or news is None:
            info = exchange_server.read_info(Path(self.settings.resolved_data_dir()))
            if info is not None:
                urls = urls or [info.stream_url()]
                news = news if news is not None else f"{info.ws_url}/ws/news"
        return urls, news

    async def run_extra(self) -> None:
        urls, news = self._urls()
        if not urls:
            self.log.error("no market-data URL: set [services.gateway] urls or run `tradeops exchange`")
        tasks = [asyncio.create_task(self._client(u, self._on_trades)) for u in urls]
        if news:
            tasks.append(asyncio.create_task(self._client(news, self._on_news)))
        stop = asyncio.create_task(self.wait_stopped())
        try:
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception() if t is not stop else None
                if exc is not None:
                    raise exc  # e.g. Redis refused our writes: fail, be restarted
        finally:
            stop.cancel()
            for t in tasks:
                t.cancel()
            # bounded: a websocket close handshake must not hold up the drain
            _, pending = await asyncio.wait(tasks, timeout=3) if tasks else (set(), set())
            if pending:
                self.log.warning("%d feed client(s) did not close within 3s", len(pending))
            await self._finish_backfills()

    async def _client(self, url: str, consume: Callable[[ClientConnection], Awaitable[None]]) -> None:
        attempt = 0
        while not self.stopping:
            try:
                async with connect(url, max_size=2**22, compression=None, open_timeout=5, close_timeout=1) as ws:
                    if url in self.ever_connected:
                        self.reconnects += 1
                    self.ever_connected.add(url)
                    self.connected.add(url)
                    attempt = 0
                    self.log.info("connected", extra={"url": url})
                    await consume(ws)
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                self.log.warning("feed %s lost: %s", url, exc)
            finally:
                self.connected.discard(url)
            if self.stopping:
                return
            delay = min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2**attempt)
            attempt += 1
            await self.wait_stopped(delay * random.uniform(0.5, 1.5))

    async def _on_trades(self, ws: ClientConnection) -> None:
        n_parts = self.settings.partition_count(streams.MD_TICKS_RAW)
        tagged = partitions.on_cluster(self.r)
        names = partitions.names(streams.MD_TICKS_RAW, n_parts, tagged=tagged)
        builders = [RawBatchBuilder(self.instance, s) for s in names]
        by_symbol: dict[str, RawBatchBuilder] = {}  # a symbol's partition, looked up once
        builder = builders[0]
        check_gap, record = self._check_gap, self.delay.record_ns
        max_batch, held = self.cfg.max_batch, self.held
        loop = asyncio.get_running_loop()
        n = 0
        try:
            while True:
                msg = await ws.recv(decode=False)  # bytes: msgspec reads them without a str copy
                recv_ns = time.time_ns()
                try:
                    ev = combined_decoder.decode(msg).data if msg[:9] == b'{"stream"' else trade_decoder.decode(msg)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.decode_errors += 1
                    await self._dead_frame(streams.MD_TICKS_RAW, msg, f"undecodable trade message: {exc}")
                    continue
                gap = check_gap(ev.s, ev.t)
                n += 1
                if n_parts > 1:
                    builder = by_symbol.get(ev.s) or by_symbol.setdefault(
                        ev.s, builders[partitions.partition_of(ev.s, n_parts)]
                    )
                if not n & 7:  # the delay histogram samples one message in 8
                    record(max(0, recv_ns - ev.E * 1_000_000))
                if self.write_error is not None:
                    raise self.write_error  # the service stops; the supervisor restarts it
                if gap is not None or (held and ev.s in held):  # waits for the gap's backfill
                    self._hold(
                        builder, gap, (ev.s, ev.t, ev.p, ev.q, ev.T * 1_000_000, ev.E * 1_000_000, ev.m, recv_ns)
                    )
                    self.received += 1
                    continue
                if not len(builder):
                    # Messages that arrived together are read without yielding to the loop;
                    # this runs once they are all in the batch (no timer, no added latency).
                    loop.call_soon(self._flush, builder)
                builder.add(ev.s, ev.t, ev.p, ev.q, ev.T * 1_000_000, ev.E * 1_000_000, ev.m, recv_ns)
                self.received += 1
                if len(builder) >= max_batch:
                    self._flush(builder)
        finally:
            for b in builders:
                self._flush(b)
            await self._drain_writes()

    def _flush(self, builder: RawBatchBuilder) -> None:
        """Write the batch now, in order on the one fast connection; the reply is checked later."""
        if not len(builder) or self.write_error is not None:
            return
        batch = builder.build()
        builder.clear()
        marks = self._marks(batch)
        try:
            if marks:  # the batch and the last ids it raises, together (MULTI/EXEC)
                self._quiet(self.fast.send("MULTI"))
            fut = self.fast.send(*xadd(builder.stream, batch))
            if marks:
                self._quiet(fut)
                self._quiet(self.fast.send("HSET", backfill.LAST_ID_KEY, *marks))
                fut = self.fast.send("EXEC")
        except (RedisConnectionError, OSError) as exc:  # Redis is gone: stop, be restarted
            self.write_error = exc
            self.log.error("writing raw ticks failed: %s", exc)
            return
        self.unanswered.add(fut)
        fut.add_done_callback(partial(self._written, n=batch.n))

    def _written(self, fut: asyncio.Future[Any], n: int) -> None:
        self.unanswered.discard(fut)
        exc = fut.exception() if not fut.cancelled() else None
        reply = fut.result() if exc is None and not fut.cancelled() else None
        if isinstance(reply, list):  # EXEC: the XADD's and the HSET's replies
            reply = next((x for x in reply if isinstance(x, Exception)), None)
        if exc is None and not isinstance(reply, Exception):
            self.published += n
        elif self.write_error is None:
            self.write_error = exc or reply
            self.log.error("writing raw ticks failed: %s", self.write_error)

    async def _drain_writes(self) -> None:
        if self.unanswered:
            await asyncio.wait(list(self.unanswered), timeout=5)

    @staticmethod
    def _quiet(fut: asyncio.Future[Any]) -> None:
        """A reply nobody reads (MULTI's OK, QUEUED): its error, if the connection drops, is the
        EXEC's too; retrieved here so asyncio does not log it as never retrieved."""
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _marks(self, batch: Any) -> list[str | int]:
        """HSET arguments for the symbols whose last written id the batch raises."""
        out: list[str | int] = []
        stored = self.stored
        for sym, top in max_ids(batch).items():
            if top > stored.get(sym, -1):
                stored[sym] = top
                out += (sym, top)
        return out

    def _check_gap(self, symbol: str, trade_id: int) -> backfill.Gap | None:
        last = self.last_id.get(symbol)
        if last is not None and trade_id == last + 1:
            self.last_id[symbol] = trade_id
            return None
        self.last_id[symbol] = trade_id if last is None else max(last, trade_id)
        if last is not None and trade_id <= last:
            self.regressions += 1
        gap = backfill.find_gap(symbol, last, trade_id)
        if gap is not None:
            self.gaps += 1
            self.last_gap = {
                "symbol": symbol,
                "after": last,
                "next": trade_id,
                "missing": gap.size,
                "backfilled": None,
                "lost": None,
                "ts_ns": time.time_ns(),
            }
            self.log.warning("trade-id gap: backfilling it", extra=self.last_gap)
        return gap

    # -- backfill ------------------------------------------------------------------------------------
    def _hold(self, builder: RawBatchBuilder, gap: backfill.Gap | None, tick: tuple[Any, ...]) -> None:
        """Queue a live tick (after its gap, if it opens one) behind the symbol's backfill."""
        queue = self.held.get(tick[0])
        if queue is None:
            self._flush(builder)  # the symbol's trades from before the gap go first
            queue = self.held[tick[0]] = []
            task = asyncio.create_task(self._backfill(tick[0], queue), name=f"backfill:{tick[0]}")
            self.backfills.add(task)
            task.add_done_callback(self._backfill_done)
        if gap is not None:
            queue.append(gap)
        queue.append(tick)

    async def _backfill(self, symbol: str, queue: list[Any]) -> None:
        """Each gap of the queue fetched and written, then the live ticks behind it, in order."""
        n_parts = self.settings.partition_count(streams.MD_TICKS_RAW)
        tagged = partitions.on_cluster(self.r)
        out = RawBatchBuilder(self.instance, partitions.route(streams.MD_TICKS_RAW, symbol, n_parts, tagged=tagged))
        max_batch = self.cfg.max_batch
        while queue:
            gap = queue.pop(0)  # a queue starts with a gap
            await self._fill(gap, out)
            k = next((i for i, x in enumerate(queue) if isinstance(x, backfill.Gap)), len(queue))
            for tick in queue[:k]:
                out.add(*tick)
                if len(out) >= max_batch:
                    self._flush(out)
            del queue[:k]
            self._flush(out)
        del self.held[symbol]  # no await since the queue was seen empty: no tick is left behind

    async def _fill(self, gap: backfill.Gap, out: RawBatchBuilder) -> None:
        max_batch = self.cfg.max_batch

        def write(trades: list[Any]) -> None:
            for i in range(0, len(trades), max_batch):
                backfill.add_trades(out, gap.symbol, trades[i : i + max_batch], time.time_ns())
                self._flush(out)
            self.backfilled += len(trades)

        try:
            key = client_key(self.settings)  # read again each time: the local exchange's is new at each start
        except TradeopsError as exc:  # no key anywhere: the history refuses us, the gap is reported lost
            self.log.error("backfill of %s without the venue's API key: %s", gap.symbol, exc)
            key = ""
        done = await backfill.fill(
            self.http, self._rest_url(), key, gap, write, max_trades=self.cfg.backfill_max_trades
        )
        if (
            self.last_gap is not None
            and self.last_gap["symbol"] == gap.symbol
            and self.last_gap["after"] == gap.first - 1
        ):
            self.last_gap.update(backfilled=done.fetched, lost=done.lost)
        if done.lost:
            self.missing += done.lost
            alert = backfill.lost_alert(done, source=self.instance)
            self.log.error(alert.message)
            await publish(self.r, streams.OPS_ALERTS, alert)
        else:
            self.log.info(
                "trade-id gap backfilled",
                extra={"symbol": gap.symbol, "first": gap.first, "last": gap.last, "trades": done.fetched},
            )

    def _backfill_done(self, task: asyncio.Task[None]) -> None:
        self.backfills.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self.write_error is None:  # the held ticks cannot go out now: fail, be restarted
            self.write_error = task.exception()
            self.log.error("backfill failed: %r", task.exception())

    async def _finish_backfills(self) -> None:
        """At stop: backfills in flight finish (bounded); what they hold is fetched next time."""
        if self.backfills:
            _, pending = await asyncio.wait(list(self.backfills), timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                self.log.warning("%d backfill(s) unfinished at stop: the next start fetches them", len(pending))
                await asyncio.wait(pending, timeout=1)
        await self._drain_writes()

    def _rest_url(self) -> str | None:
        if self.cfg.rest_url:
            return self.cfg.rest_url
        info = exchange_server.read_info(Path(self.settings.resolved_data_dir()))
        return info.rest_url if info is not None else None

    async def _on_news(self, ws: ClientConnection) -> None:
        async for msg in ws:
            try:
                n = news_decoder.decode(msg)
            except msgspec.DecodeError as exc:
                await self._dead_frame(streams.ALT_RAW, msg, f"undecodable news message: {exc}")
                continue
            item = AltItem(
                id=n.id,
                ts_ns=n.ts * 1_000_000,
                symbols=n.symbols,
                headline=n.headline,
                body=n.body,
                sentiment=n.sentiment,
                source="local-exchange",
            )
            await publish(self.r, streams.ALT_RAW, item)
            self.news += 1

    async def _dead_frame(self, stream: str, msg: str | bytes, reason: str) -> None:
        """A frame bound for `stream` that does not decode: to dlq.<stream>, its bytes kept (64 KiB)."""
        data = msg.encode() if isinstance(msg, str) else msg
        await deadletter.queue(self.r, stream, {b"raw": data[:65536]}, reason, group=self.name, consumer=self.instance)
