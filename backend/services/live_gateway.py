"""live-gateway (P2): exec.orders -> the venue -> exec.reports.

`venue = "paper"` (default): the exchange's matching engine against a synthetic book quoted at
the live price from md.ticks (`backend.exchange.matching`: marketable orders fill at the quote,
resting limits at their price when the market moves through them, partial fills through
`liquidity` per price update, configurable latency); its
working orders are kept in Redis so a restart resumes them, and each start numbers its orders in
a session of its own (`paper:session`, a counter), so trade ids are never reused by a restarted
instance or by the other instance of a blue/green cutover.
`venue = "rest"`: a Binance Spot venue (the local exchange, or Binance's Spot testnet: URLs from
the config, the key and secret from the secrets provider: `exchange/api-key` and
`exchange/api-secret`, TRADEOPS_EXCHANGE_API_KEY / _SECRET or their `_FILE`, Vault, or the local
exchange's pair in the data dir): orders by REST, executions from the user data
stream (`executionReport`), every order in flight resynced from the venue (`order`, `myTrades`)
after the stream (re)connects; the orders in flight are kept in Redis (`rest:inflight`, written
before an order is sent and with every report), so a restarted instance resumes them and a
redelivered exec order is never placed twice (`backend.trading.rest_orders`).

With the order path split by account (backend/bus/partitions.py), the paper venue's instances
share its partitions: an instance owning partition p reads p's exec orders, keeps p's working
orders (`paper:working:{p1of4}`, loaded when p becomes its own, dropped when p goes) and writes
each report to its account's partition of exec.reports, with the book's change and the XACK in one
MULTI per partition (one slot). The REST venue runs the order path unsplit (one user data stream
per API key): it refuses a split one at its start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from backend.bus import codec, partitions, replies, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.broadcast import Item
from backend.bus.entries import decode_with
from backend.bus.publish import xadds
from backend.exchange import server as exchange_server
from backend.exchange.keys import client_pair
from backend.exchange.matching import MatchingEngine, Working
from backend.marketdata import ticks as tickcols
from backend.messages import ExecOrder, ExecReport, Order, TickBatch
from backend.metrics import Exported
from backend.secrets import EXCHANGE_API_KEY, EXCHANGE_API_SECRET
from backend.services.base import Service
from backend.trading.rest_orders import Tracked
from backend.trading.venue_rest import RestVenue, VenueError

PAPER_KEY = "paper:working"
SESSION_KEY = "paper:session"
REST_KEY = "rest:inflight"  # the REST venue's orders in flight: client order id -> Tracked
REST_DONE_KEY = "rest:done"  # the REST venue's finished orders (a day of them): client order id -> time
_ticks = msgspec.msgpack.Decoder(TickBatch)


class LiveGatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    venue: Literal["paper", "rest"] = "paper"
    latency_ms: float = 0.0
    """Paper venue: added latency before each batch of orders is handled."""
    liquidity: float | None = None
    """Paper venue: the quantity the synthetic quote at the last price offers a side, per price
    update (None: unlimited); a large resting order fills partially over several updates."""
    rest_url: str | None = None
    """REST venue base URL (Binance's Spot testnet: https://testnet.binance.vision); unset: the
    local exchange's, from the data dir."""
    ws_url: str | None = None
    """REST venue: the websocket base of its user data stream (the testnet's:
    wss://stream.testnet.binance.vision); unset: the local exchange's, from the data dir."""
    recv_window_ms: int = 5000
    reconcile_after_s: float = 2.0
    """REST venue: while the user data stream is down, orders in flight and quiet this long are
    queried (with it up, executions come from the stream alone)."""
    keepalive_s: float = 1800.0
    """REST venue: how often the user data stream's listen key is kept alive."""


class LiveGatewayService(Service):
    name = "live-gateway"
    Config = LiveGatewayConfig
    reads = (Reads(streams.EXEC_ORDERS, group=True), Reads(streams.MD_TICKS))
    writes = (Writes(streams.EXEC_REPORTS),)
    keys = (
        Keys(PAPER_KEY + "*", write=True),
        Keys(SESSION_KEY, write=True),
        Keys(REST_KEY, write=True),
        Keys(REST_DONE_KEY, write=True),
    )
    secrets = (EXCHANGE_API_KEY, EXCHANGE_API_SECRET)  # the REST venue's signed requests
    exported = (
        Exported("orders", "Orders sent to the venue.", counter=True),
        Exported("reports", "Execution reports published.", counter=True),
        Exported("working", "Orders working at the venue."),
        Exported("venue_errors", "Requests the venue refused or failed.", counter=True),
    )

    async def setup(self) -> None:
        self.sent = 0
        self.reports = 0
        self.errors = 0
        self.user_streams = 0
        self.stream_up = False
        self._trimmed = 0.0
        session = f"s{await self.r.incr(SESSION_KEY)}" if self.cfg.venue == "paper" else None
        self.engine = MatchingEngine(venue="paper", liquidity=self.cfg.liquidity, session=session)
        self.rest: RestVenue | None = None
        self.inflight: dict[str, Tracked] = {}
        self.n = self.settings.partition_count(streams.EXEC_ORDERS)  # the order path's, by account
        self.tagged = partitions.on_cluster(self.r)
        if self.cfg.venue == "rest" and (self.n > 1 or self.tagged):
            raise RuntimeError(
                f"live-gateway venue=rest runs the order path unsplit (one user data stream per API key): "
                f'[partitions] "orders.new" is {self.n}{" on a Redis Cluster" if self.tagged else ""}; use the paper '
                "venue, or one partition on one Redis"
            )
        if self.cfg.venue == "rest":
            self.rest = self._rest_venue()
            await self._load_inflight()
            self.every(0.5, self.reconcile)
        else:
            newest = await self.newest(streams.MD_TICKS, 20)  # each partition's, oldest first
            last, _ = decode_with(newest, _ticks.decode, stream=streams.MD_TICKS, skips=self.skips)
            for _, batch in last:
                self.engine.prices.update(tickcols.last_prices(batch))
            self.listen({streams.MD_TICKS: "$"}, self.on_ticks, decode=TickBatch)
        self.parts = self.consume_partitions(
            streams.EXEC_ORDERS,
            lambda p: partial(self.on_orders, p),
            decode=ExecOrder,
            on_acquire=self._acquired,
            on_release=self._released,
            count=512,
            block_ms=100,
            auto_ack=False,
        )  # acked with the reports they produce

    def paper_key(self, p: int) -> str:
        """Partition p's working paper orders (the one hash when the order path is not split)."""
        return partitions.name(PAPER_KEY, p, self.n, tagged=self.tagged)

    def part_of(self, account: str) -> int:
        return partitions.partition_of(account, self.n)

    async def _acquired(self, p: int, token: int) -> None:
        if self.rest is None:
            await self._load_paper(p)

    def _released(self, p: int) -> None:
        """Partition p went to another instance: its working orders are its now."""
        for c in [c for c, w in self.engine.working.items() if self.part_of(w.order.account) == p]:
            del self.engine.working[c]

    def processed(self) -> int:
        return self.sent

    def metrics(self) -> dict[str, object]:
        return {
            "venue": self.cfg.venue,
            "orders": self.sent,
            "reports": self.reports,
            "working": len(self.engine.working) if self.rest is None else len(self.inflight),
            "venue_errors": self.errors,
            "user_streams": self.user_streams,
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
        }

    async def _publish(self, reps: list[ExecReport], ack: list[bytes] | None = None, p: int = 0) -> None:
        """The reports (on exec.reports and its copies), the paper book's changes and the XACK of
        what produced them (exec orders of partition p), in one MULTI per partition: a report
        goes to its account's partition (p when it names none)."""
        by_part: dict[int, list[ExecReport]] = defaultdict(list)
        for rep in reps:
            by_part[self.part_of(rep.account) if rep.account else p].append(rep)
        if ack:
            by_part.setdefault(p, [])
        for q, mine in by_part.items():
            out = partitions.name(streams.EXEC_REPORTS, q, self.n, tagged=self.tagged)
            cmds: list[tuple[Any, ...]] = [c for rep in mine for c in xadds(out, rep)]
            if self.rest is None and mine:
                cmds += self._save_paper({r.client_order_id for r in mine}, q)
            elif mine:
                cmds += self._save_inflight({r.client_order_id for r in mine})
            if ack and q == p:
                orders = partitions.name(streams.EXEC_ORDERS, p, self.n, tagged=self.tagged)
                cmds.append(("XACK", orders, self.name, *ack))
            if cmds:
                # one atomic step: a crash leaves either all of it (reports, book, ack) or none, so a
                # redelivered exec order is never placed twice
                await self.send_at(out, [("MULTI",), *cmds, ("EXEC",)])
        self.reports += len(reps)

    async def on_orders(self, p: int, orders: list[tuple[bytes, ExecOrder]]) -> None:
        if self.cfg.latency_ms > 0:
            await asyncio.sleep(self.cfg.latency_ms / 1000)
        reps: list[ExecReport] = []
        for _, eo in orders:
            self.sent += 1
            if self.rest is not None:
                reps += await self._rest(eo)
            elif eo.action == "new" and eo.order is not None:
                reps += self.engine.place(eo.order)
            elif eo.action == "cancel":
                reps += self.engine.cancel(eo.client_order_id, eo.reason or "canceled on request")
            elif eo.action == "query":
                st = self.engine.status(eo.client_order_id)
                reps += [st] if st else []
        await self._publish(reps, [eid for eid, _ in orders], p)

    # -- paper venue -----------------------------------------------------------------------------
    async def on_ticks(self, items: list[Item]) -> None:
        reps: list[ExecReport] = []
        for _, _, batch in items:
            for sym, px in tickcols.last_prices(batch).items():
                reps += self.engine.on_price(sym, px)
        await self._publish(reps)

    async def teardown(self) -> None:
        if self.rest is not None:
            await self.rest.close()

    def _save_paper(self, coids: set[str], p: int) -> list[tuple[Any, ...]]:
        key = self.paper_key(p)
        gone = [c for c in coids if c not in self.engine.working]
        cmds: list[tuple[Any, ...]] = [("HDEL", key, *gone)] if gone else []
        for c in coids:
            w = self.engine.working.get(c)
            if w is not None:
                cmds.append(
                    (
                        "HSET",
                        key,
                        c,
                        codec.encode(
                            msgspec.to_builtins(
                                {
                                    "order": w.order,
                                    "venue_order_id": w.venue_order_id,
                                    "filled": w.filled,
                                    "notional": w.notional,
                                    "fills": w.fills,
                                }
                            )
                        ),
                    )
                )
        return cmds

    async def _load_paper(self, p: int) -> None:
        """Partition p's saved working orders, back in the paper book (what crosses the last
        price fills)."""
        reps: list[ExecReport] = []
        for raw in (await self.r.hgetall(self.paper_key(p))).values():
            d = msgspec.msgpack.decode(replies.blob(raw))
            order = msgspec.convert(d["order"], Order)
            reps += self.engine.restore(Working(order, d["venue_order_id"], d["filled"], d["notional"], d["fills"]))
        await self._publish(reps, None, p)

    # -- REST venue ------------------------------------------------------------------------------
    def _rest_venue(self) -> RestVenue:
        """The venue from the config: URLs (or the local exchange's); the key and secret from the
        secrets provider, never the config (backend/secrets.py)."""
        c = self.cfg
        url, ws = c.rest_url, c.ws_url
        if not url or not ws:
            info = exchange_server.read_info(Path(self.settings.resolved_data_dir()))
            url = url or (info.rest_url if info else None)
            ws = ws or (info.ws_url if info else None)
        if not url:
            raise RuntimeError("live-gateway venue=rest needs rest_url (or a running local exchange)")
        key, secret = client_pair(self.settings)
        return RestVenue(url, key, secret, ws_url=ws, recv_window=c.recv_window_ms)

    def _save_inflight(self, coids: set[str]) -> list[tuple[Any, ...]]:
        cmds: list[tuple[Any, ...]] = []
        for c in coids:
            t = self.inflight.get(c)
            if t is None or t.state == "done":
                self.inflight.pop(c, None)
                cmds.append(("HDEL", REST_KEY, c))
                cmds.append(("ZADD", REST_DONE_KEY, time.time(), c))
            else:
                cmds.append(("HSET", REST_KEY, c, codec.encode(t.encode())))
        return cmds

    async def _load_inflight(self) -> None:
        for c, raw in (await self.r.hgetall(REST_KEY)).items():
            self.inflight[replies.text(c)] = Tracked.decode(msgspec.msgpack.decode(replies.blob(raw)))

    async def _rest(self, eo: ExecOrder) -> list[ExecReport]:
        assert self.rest is not None
        try:
            if eo.action == "new" and eo.order is not None:
                return await self._place(eo.order)
            t = self.inflight.get(eo.client_order_id)
            if t is None:
                return []
            if eo.action == "cancel":
                try:
                    body = await self.rest.cancel(t.order.symbol, eo.client_order_id)
                except VenueError as exc:
                    if exc.code != -2011:  # -2011: no longer open: the venue says how it ended
                        raise
                    return await self._resync(t)
                return t.from_body(body)
            return await self._resync(t)
        except Exception as exc:  # noqa: BLE001 - the venue's answer (or its absence), reported
            self.errors += 1
            self.log.warning("venue call failed: %s", exc)
            if eo.action == "new" and eo.order is not None:
                self.inflight.pop(eo.client_order_id, None)
                await self.r.hdel(REST_KEY, eo.client_order_id)
                return [
                    ExecReport(
                        client_order_id=eo.client_order_id,
                        venue_order_id="",
                        kind="rejected",
                        account=eo.order.account,
                        symbol=eo.order.symbol,
                        side=eo.order.side,
                        reason=str(exc),
                        ts_ns=time.time_ns(),
                    )
                ]
            return []

    async def _place(self, order: Order) -> list[ExecReport]:
        """Place an order once: one already tracked (a redelivered exec order) is not placed
        again; one whose placing was recorded but not its answer (a crash in between) is looked up
        first and adopted if the venue has it."""
        assert self.rest is not None
        c = order.client_order_id
        t = self.inflight.get(c)
        if t is not None and t.state != "placing":
            return []
        if t is None and await self.r.zscore(REST_DONE_KEY, c) is not None:
            return []  # finished already: a repeat of an exec order handled before
        if t is not None:  # placed before a crash, maybe: the venue knows
            try:
                body = await self.rest.query(order.symbol, c)
            except VenueError as exc:
                if exc.code != -2013:
                    raise
            else:
                return t.from_body(body, first=True) + await self._resync(t)
        t = self.inflight[c] = Tracked(order)
        await self.r.hset(REST_KEY, c, codec.encode(t.encode()))  # placing: recorded before the call
        try:
            body = await self.rest.place(order)
        except VenueError as exc:
            if exc.code != -2010 or "Duplicate" not in str(exc):
                raise
            body = await self.rest.query(order.symbol, c)  # ours, already open at the venue
        return t.from_body(body, first=True)

    async def _resync(self, t: Tracked) -> list[ExecReport]:
        """What the venue knows of an order: its trades, then its state."""
        assert self.rest is not None
        body = await self.rest.query(t.order.symbol, t.order.client_order_id)
        t.venue_order_id = str(body.get("orderId", t.venue_order_id))
        reps = t.from_trades(await self.rest.my_trades(t.order.symbol, int(t.venue_order_id)))
        t.seen = time.monotonic()
        return reps + t.from_body(body)

    async def resync_all(self) -> None:
        """After the user data stream (re)connects: every order in flight, from the venue."""
        reps: list[ExecReport] = []
        for t in list(self.inflight.values()):
            if t.state == "placing":
                continue  # its exec order is still pending: handled when it is redelivered
            try:
                reps += await self._resync(t)
            except VenueError as exc:
                self.errors += 1
                self.log.warning("resync of %s failed: %s", t.order.client_order_id, exc)
        await self._publish(reps)

    async def reconcile(self) -> None:
        """While the user data stream is down: query orders that have been quiet too long. (And
        forget the finished orders older than a day.)"""
        if time.monotonic() - self._trimmed > 60:
            self._trimmed = time.monotonic()
            await self.r.zremrangebyscore(REST_DONE_KEY, 0, time.time() - 86_400)
        if self.stream_up:
            return
        now = time.monotonic()
        reps: list[ExecReport] = []
        for t in list(self.inflight.values()):
            if t.state != "open" or now - t.seen < self.cfg.reconcile_after_s:
                continue
            try:
                reps += await self._resync(t)
            except Exception as exc:  # noqa: BLE001
                self.errors += 1
                self.log.warning("reconcile of %s failed: %s", t.order.client_order_id, exc)
        await self._publish(reps)

    async def on_user_event(self, ev: dict[str, Any]) -> None:
        if ev.get("e") != "executionReport":
            return
        t = self.inflight.get(ev.get("c", ""))
        if t is None or t.state == "done":
            return
        await self._publish(t.from_event(ev))

    async def run_extra(self) -> None:
        """The REST venue's user data stream: a listen key, its websocket, a resync of the orders
        in flight on every (re)connect, the key kept alive; reconnect with backoff after a drop."""
        if self.rest is None or not self.rest.ws:
            await self._stop.wait()
            return
        backoff = 0.1
        while not self.stopping:
            try:
                key = await self.rest.listen_key()
                async with ws_connect(self.rest.user_stream_url(key), max_queue=1024) as ws:
                    self.stream_up = True
                    backoff = 0.1
                    self.user_streams += 1
                    await self.resync_all()
                    last_keep = time.monotonic()
                    while not self.stopping:
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            raw = None
                        if raw is not None:
                            await self.on_user_event(json.loads(raw))
                        if time.monotonic() - last_keep > self.cfg.keepalive_s:
                            await self.rest.keep_alive(key)
                            last_keep = time.monotonic()
            except (OSError, ConnectionClosed, VenueError, ValueError, TimeoutError, httpx.HTTPError) as exc:
                self.log.warning("user data stream down: %r; reconnecting in %.1fs", exc, backoff)
            finally:
                self.stream_up = False
            if not self.stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
