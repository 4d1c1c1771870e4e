"""live-gateway (P2): exec.orders -> the venue -> exec.reports.

`venue = "paper"` (default): a matching engine against the live price from md.ticks (market and
limit orders, partial fills through `liquidity` per price update, configurable latency); its
working orders are kept in Redis so a restart resumes them, and each start numbers its orders in
a session of its own (`paper:session`, a counter), so trade ids are never reused by a restarted
instance or by the other instance of a blue/green cutover.
`venue = "rest"`: the venue's REST order API over httpx with HMAC-signed requests (the local
exchange serves the same endpoints), the key and secret from the secrets provider (`exchange/api-key`
and `exchange/api-secret`: TRADEOPS_EXCHANGE_API_KEY / _SECRET or their `_FILE`, Vault, or the local
exchange's pair in the data dir); orders in flight and quiet for `reconcile_after_s` are
queried and reconciled.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

import msgspec

from backend.bus import codec, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.broadcast import Item
from backend.bus.entries import decode_with
from backend.bus.publish import xadd
from backend.exchange import server as exchange_server
from backend.exchange.keys import client_pair
from backend.exchange.matching import MatchingEngine, Working
from backend.marketdata import ticks as tickcols
from backend.messages import ExecOrder, ExecReport, Order, TickBatch
from backend.secrets import EXCHANGE_API_KEY, EXCHANGE_API_SECRET
from backend.services.base import Service
from backend.trading.venue_rest import RestVenue, VenueError, reports_from

PAPER_KEY = "paper:working"
SESSION_KEY = "paper:session"
_ticks = msgspec.msgpack.Decoder(TickBatch)


class LiveGatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    venue: Literal["paper", "rest"] = "paper"
    latency_ms: float = 0.0
    """Paper venue: added latency before each batch of orders is handled."""
    liquidity: float | None = None
    """Paper venue: most quantity one order fills per price update (None: all of it)."""
    rest_url: str | None = None
    """REST venue base URL; unset: the local exchange's, from the data dir."""
    reconcile_after_s: float = 2.0
    """REST venue: orders in flight and quiet this long are queried."""


class LiveGatewayService(Service):
    name = "live-gateway"
    Config = LiveGatewayConfig
    reads = (Reads(streams.EXEC_ORDERS, group=True), Reads(streams.MD_TICKS))
    writes = (Writes(streams.EXEC_REPORTS),)
    keys = (Keys(PAPER_KEY, write=True), Keys(SESSION_KEY, write=True))
    secrets = (EXCHANGE_API_KEY, EXCHANGE_API_SECRET)  # the REST venue's signed requests

    async def setup(self) -> None:
        self.sent = 0
        self.reports = 0
        self.errors = 0
        session = f"s{await self.r.incr(SESSION_KEY)}" if self.cfg.venue == "paper" else None
        self.engine = MatchingEngine(venue="paper", liquidity=self.cfg.liquidity, session=session)
        self.rest: RestVenue | None = None
        self.inflight: dict[str, tuple[Order, float, set[str]]] = {}
        if self.cfg.venue == "rest":
            url = self.cfg.rest_url
            if not url:
                info = exchange_server.read_info(Path(self.settings.resolved_data_dir()))
                url = info.rest_url if info else None
            if not url:
                raise RuntimeError("live-gateway venue=rest needs rest_url (or a running local exchange)")
            key, secret = client_pair(self.settings)  # the secrets provider's, never the config's
            self.rest = RestVenue(url, key, secret)
            self.every(0.5, self.reconcile)
        else:
            await self._load_paper()
            last, _ = decode_with(reversed(await self.r.xrevrange(streams.MD_TICKS, count=20)), _ticks.decode,
                                  stream=streams.MD_TICKS, skips=self.skips)
            for _, batch in last:
                self.engine.prices.update(tickcols.last_prices(batch))
            self.listen({streams.MD_TICKS: "$"}, self.on_ticks, decode=TickBatch)
        self.worker = self.consume(streams.EXEC_ORDERS, self.on_orders, decode=ExecOrder, count=512,
                                   block_ms=100, auto_ack=False)  # acked with the reports they produce

    def processed(self) -> int:
        return self.sent

    def metrics(self) -> dict[str, object]:
        return {"venue": self.cfg.venue, "orders": self.sent, "reports": self.reports,
                "working": len(self.engine.working) if self.rest is None else len(self.inflight),
                "venue_errors": self.errors}

    async def _publish(self, reps: list[ExecReport], ack: list[bytes] | None = None) -> None:
        """The reports, the paper book's changes and the XACK of what produced them, in one MULTI."""
        cmds: list[tuple[Any, ...]] = [xadd(streams.EXEC_REPORTS, rep) for rep in reps]
        if self.rest is None and reps:
            cmds += self._save_paper({r.client_order_id for r in reps})
        if ack:
            cmds.append(("XACK", streams.EXEC_ORDERS, self.name, *ack))
        if cmds:
            # one atomic step: a crash leaves either all of it (reports, book, ack) or none, so a
            # redelivered exec order is never placed twice
            await self.send([("MULTI",), *cmds, ("EXEC",)])
        self.reports += len(reps)

    async def on_orders(self, orders: list[tuple[bytes, ExecOrder]]) -> None:
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
        await self._publish(reps, [eid for eid, _ in orders])

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

    def _save_paper(self, coids: set[str]) -> list[tuple[Any, ...]]:
        gone = [c for c in coids if c not in self.engine.working]
        cmds: list[tuple[Any, ...]] = [("HDEL", PAPER_KEY, *gone)] if gone else []
        for c in coids:
            w = self.engine.working.get(c)
            if w is not None:
                cmds.append(("HSET", PAPER_KEY, c, codec.encode(msgspec.to_builtins(
                    {"order": w.order, "venue_order_id": w.venue_order_id, "filled": w.filled,
                     "notional": w.notional, "fills": w.fills}))))
        return cmds

    async def _load_paper(self) -> None:
        for c, raw in (await self.r.hgetall(PAPER_KEY)).items():
            d = msgspec.msgpack.decode(raw)
            order = msgspec.convert(d["order"], Order)
            self.engine.working[c.decode()] = Working(order, d["venue_order_id"], d["filled"],
                                                      d["notional"], d["fills"])

    # -- REST venue ------------------------------------------------------------------------------
    async def _rest(self, eo: ExecOrder) -> list[ExecReport]:
        assert self.rest is not None
        try:
            if eo.action == "new" and eo.order is not None:
                body = await self.rest.place(eo.order)
                known: set[str] = set()
                reps = [ExecReport(client_order_id=eo.client_order_id, venue_order_id=str(body.get("orderId", "")),
                                   kind="accepted", account=eo.order.account, symbol=eo.order.symbol,
                                   side=eo.order.side, ts_ns=time.time_ns())]
                reps += reports_from(eo.order, body, known)
                if body.get("status") in ("NEW", "PARTIALLY_FILLED"):
                    self.inflight[eo.client_order_id] = (eo.order, time.monotonic(), known)
                return reps
            entry = self.inflight.get(eo.client_order_id)
            if entry is None:
                return []
            order, _, known = entry
            body = await (self.rest.cancel(order.symbol, eo.client_order_id) if eo.action == "cancel"
                          else self.rest.query(order.symbol, eo.client_order_id))
            return self._settle(order, body, known)
        except (VenueError, OSError, Exception) as exc:  # noqa: BLE001 - the venue's answer, reported
            self.errors += 1
            self.log.warning("venue call failed: %s", exc)
            if eo.action == "new" and eo.order is not None:
                return [ExecReport(client_order_id=eo.client_order_id, venue_order_id="", kind="rejected",
                                   account=eo.order.account, symbol=eo.order.symbol, side=eo.order.side,
                                   reason=str(exc), ts_ns=time.time_ns())]
            return []

    def _settle(self, order: Order, body: dict, known: set[str]) -> list[ExecReport]:
        reps = reports_from(order, body, known)
        c = order.client_order_id
        if body.get("status") in ("FILLED", "CANCELED", "EXPIRED", "REJECTED"):
            self.inflight.pop(c, None)
        else:
            self.inflight[c] = (order, time.monotonic(), known)
        return reps

    async def reconcile(self) -> None:
        """Query orders that have been quiet too long and report what changed."""
        assert self.rest is not None
        now = time.monotonic()
        reps: list[ExecReport] = []
        for c, (order, seen, known) in list(self.inflight.items()):
            if now - seen < self.cfg.reconcile_after_s:
                continue
            try:
                reps += self._settle(order, await self.rest.query(order.symbol, c), known)
            except Exception as exc:  # noqa: BLE001
                self.errors += 1
                self.log.warning("reconcile of %s failed: %s", c, exc)
        await self._publish(reps)
