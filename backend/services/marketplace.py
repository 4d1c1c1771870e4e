"""marketplace (P5): the catalog of strategies, datasets and models (with metadata and owners),
and subscriptions that give an account a model's signals as paper orders through oms and risk.

It seeds the catalog from `backend/catalog/catalog.toml` and adds every model modelops registers
(kind "model", owner = who trained it, lineage as metadata).

Signals: each subscription is a sleeve of its account (`market:target:<account>`, field
`<item>|<symbol>`: the position the sleeve wants, filled or in flight). A buy signal wants the
subscription's quantity long, a sell signal as much short, a neutral one changes nothing; only a
change sends an order, market, for the difference, on `orders.new` (oms -> risk -> live-gateway).
The target and the order are written in one transaction (WATCH: instances in one group cannot
both act on a sleeve); the order id is derived from the signal and the sleeve and marked sent
(`market:sent:<id>`), so a redelivered signal never trades twice, even after its order was denied.
A subscription trades signals published after it began, and none older than `max_signal_age_s` (a
backlog after downtime is not traded at stale prices).

Orders: the sleeve's orders are followed on `orders.events`; one that ends without filling all of
it (risk denied it, the venue rejected it, it was canceled or expired) gives the unfilled part
back to the sleeve's target (once per order), so the next signal tries again from what is held.
"""

from __future__ import annotations

import time

import msgspec
from redis.exceptions import WatchError

from backend.bus import replies, streams
from backend.bus.access import Keys, Reads, Scripts, Writes
from backend.bus.broadcast import Item
from backend.bus.publish import queue
from backend.catalog import store
from backend.messages import FINAL_STATES, ModelEvent, Order, OrderEvent, Signal
from backend.models import registry as reg
from backend.services.base import Service

SENT_TTL_S = 7 * 86400

# KEYS: open orders hash, the account's target hash. ARGV: order id, sleeve field, amount to give back.
# Gives back only if the order was still open here (HDEL says so): once per order.
_SETTLE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[3]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[2], ARGV[2], ARGV[3]) end
return 1
"""


class MarketplaceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_signal_age_s: float = 30.0
    """A signal published longer ago than this when it is read is not traded."""

    def __post_init__(self) -> None:
        if not self.max_signal_age_s > 0:
            raise ValueError(f"max_signal_age_s must be positive, not {self.max_signal_age_s}")


class MarketplaceService(Service):
    name = "marketplace"
    Config = MarketplaceConfig
    reads = (Reads(streams.SIGNALS, group=True), Reads(streams.ORDERS_EVENTS, group=True), Reads(streams.MODELS_EVENTS))
    writes = (Writes(streams.ORDERS_NEW),)
    keys = (Keys("market:*", write=True), Keys(reg.KEYS))
    scripts = (Scripts((store.OPEN_ORDERS, store.k_target("*"))),)  # an ended order's unfilled part back

    async def setup(self) -> None:
        self.counts = {
            "signals_in": 0,
            "orders": 0,
            "stale": 0,
            "before_subscription": 0,
            "given_back": 0,
            "conflicts": 0,
        }
        pipe = self.r.pipeline(transaction=False)
        for item in store.seed_items():
            if not await self.r.hexists(store.CATALOG, item.id):
                store.queue_put(pipe, item)
        await pipe.execute()
        self.settle = self.r.register_script(_SETTLE)
        self.worker = self.consume(streams.SIGNALS, self.on_signals, decode=Signal, count=256, block_ms=100)
        self.w_events = self.consume_partitions(  # every partition (the order path may be split by account)
            streams.ORDERS_EVENTS, lambda p: self.on_order_events, decode=OrderEvent, count=512, block_ms=100
        )
        self.listen({streams.MODELS_EVENTS: "0"}, self.on_model_events, decode=ModelEvent, count=100, block_ms=200)

    def processed(self) -> int:
        return self.counts["signals_in"]

    def metrics(self) -> dict[str, object]:
        return dict(self.counts)

    async def on_signals(self, signals: list[tuple[bytes, Signal]]) -> None:
        now_ms = time.time() * 1000
        for eid, sig in signals:
            self.counts["signals_in"] += 1
            if sig.side is None:
                continue
            published_ms = int(eid.split(b"-")[0])
            if now_ms - published_ms > self.cfg.max_signal_age_s * 1000:
                self.counts["stale"] += 1
                continue
            for item_id in await self.r.smembers(store.k_by_model(sig.model)):
                for raw in await self.r.hvals(store.k_subs(replies.text(item_id))):
                    sub = msgspec.json.decode(raw, type=store.Subscription)
                    if published_ms * 1_000_000 < sub.since_ns:
                        self.counts["before_subscription"] += 1
                        continue
                    await self.follow(sub, sig)

    async def follow(self, sub: store.Subscription, sig: Signal) -> Order | None:
        """Move the sleeve to what the signal wants: one order for the difference, or none."""
        want = sub.quantity if sig.side == "buy" else -sub.quantity
        key = store.k_target(sub.account)
        sleeve = store.sleeve(sub.item, sig.symbol)
        async with self.r.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    await pipe.watch(key)
                    have = float(await pipe.hget(key, sleeve) or 0.0)
                    delta = round(want - have, 10)
                    coid = f"mk-{sub.account}-{sub.item}-{sig.symbol}-{sig.ts_ns}"
                    if delta == 0 or await pipe.exists(store.k_sent(coid)):
                        return None  # nothing to do, or this signal was acted on for the sleeve already
                    order = Order(
                        client_order_id=coid,
                        account=sub.account,
                        symbol=sig.symbol,
                        side="buy" if delta > 0 else "sell",
                        type="market",
                        quantity=abs(delta),
                        sent_ns=time.time_ns(),
                        source=f"marketplace:{sub.item}",
                    )
                    pipe.multi()
                    pipe.hset(key, sleeve, repr(want))
                    pipe.set(store.k_sent(coid), 1, ex=SENT_TTL_S)
                    pipe.hset(
                        store.OPEN_ORDERS,
                        order.client_order_id,
                        msgspec.json.encode({"account": sub.account, "sleeve": sleeve, "signed": delta}),
                    )
                    queue(pipe, streams.ORDERS_NEW, order)
                    await pipe.execute()
                    self.counts["orders"] += 1
                    return order
                except WatchError:
                    self.counts["conflicts"] += 1  # another instance moved the sleeve: read again
        raise RuntimeError(f"sleeve {sub.account} {sleeve} kept changing under 20 attempts")

    async def on_order_events(self, events: list[tuple[bytes, OrderEvent]]) -> None:
        for _, ev in events:
            if ev.state not in FINAL_STATES or not ev.client_order_id.startswith("mk-"):
                continue
            raw = await self.r.hget(store.OPEN_ORDERS, ev.client_order_id)
            if raw is None:
                continue  # not ours, or settled already
            info = msgspec.json.decode(raw)
            unfilled = max(0.0, abs(info["signed"]) - ev.filled_qty)
            back = -unfilled if info["signed"] > 0 else unfilled
            if (
                await self.settle(
                    keys=[store.OPEN_ORDERS, store.k_target(info["account"])],
                    args=[ev.client_order_id, info["sleeve"], repr(round(back, 10))],
                )
                and back
            ):
                self.counts["given_back"] += 1
                self.log.info(
                    "order %s ended %s with %g unfilled (%s): sleeve %s gets it back",
                    ev.client_order_id,
                    ev.state,
                    unfilled,
                    ev.reason,
                    info["sleeve"],
                )

    async def on_model_events(self, items: list[Item]) -> None:
        """Every registered model joins the catalog (its lineage as metadata)."""
        for _, _, ev in items:
            if ev.kind == "registered":
                await self._add_model(ev)

    async def _add_model(self, ev: ModelEvent) -> None:
        data = await self.r.hget(reg.k_versions(ev.name), str(ev.version))
        if data is None:
            return
        rec = reg.decode_record(replies.blob(data))
        item = store.CatalogItem(
            id=f"model:{rec.name}",
            kind="model",
            name=rec.name,
            owner=rec.trained_by or "unknown",
            description=f"{rec.kind} on {', '.join(rec.features)}",
            signals=rec.name,
            metadata={
                "latest_version": rec.version,
                "metrics": rec.metrics,
                "symbols": rec.symbols,
                "data_start_ns": rec.data_start_ns,
                "data_end_ns": rec.data_end_ns,
            },
        )
        pipe = self.r.pipeline(transaction=False)
        store.queue_put(pipe, item)
        await pipe.execute()
