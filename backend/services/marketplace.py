"""marketplace (P5): the catalog of strategies, datasets and models (with metadata and owners),
and subscriptions that give an account a model's signals.

It seeds the catalog from `backend/catalog/catalog.toml`, adds every model modelops registers
(kind "model", owner = who trained it, lineage as metadata), and turns `signals` into paper
orders on `orders.new` for each subscribed account: a buy signal wants the subscription's
quantity long, a sell signal as much short, a neutral signal changes nothing. Only a change of the
wanted position sends an order (the difference), and the order id is derived from the signal, so
a redelivered signal never trades twice (the OMS dedups by client order id).
"""

from __future__ import annotations

import time

import msgspec

from backend.bus import codec, streams
from backend.bus.worker import Entry
from backend.catalog import store
from backend.messages import ModelEvent, Order, Signal
from backend.models import registry as reg
from backend.services.base import Service

_sig = msgspec.msgpack.Decoder(Signal)
_ev = msgspec.msgpack.Decoder(ModelEvent)


class MarketplaceService(Service):
    name = "marketplace"

    async def setup(self) -> None:
        self.orders = 0
        self.signals_in = 0
        pipe = self.r.pipeline(transaction=False)
        for item in store.seed_items():
            if not await self.r.hexists(store.CATALOG, item.id):
                store.queue_put(pipe, item)
        await pipe.execute()
        self.ev_cursor = "0"
        self.worker = self.consume(streams.SIGNALS, self.on_signals, count=256, block_ms=100)

    def metrics(self) -> dict[str, object]:
        return {"signals_in": self.signals_in, "orders": self.orders}

    async def on_signals(self, entries: list[Entry]) -> None:
        for eid, fields in entries:
            try:
                sig = _sig.decode(codec.payload(fields))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, fields, f"undecodable signal: {exc}")
                continue
            self.signals_in += 1
            if sig.side is None:
                continue
            for item_id in await self.r.smembers(store.k_by_model(sig.model)):
                for raw in await self.r.hvals(store.k_subs(item_id.decode())):
                    sub = msgspec.json.decode(raw, type=store.Subscription)
                    await self.follow(sub, sig)

    async def follow(self, sub: store.Subscription, sig: Signal) -> None:
        want = sub.quantity if sig.side == "buy" else -sub.quantity
        key = store.k_target(sub.account)
        have = float(await self.r.hget(key, sig.symbol) or 0.0)
        delta = round(want - have, 10)
        if delta == 0:
            return
        order = Order(client_order_id=f"mk-{sub.account}-{sig.model}-{sig.symbol}-{sig.ts_ns}",
                      account=sub.account, symbol=sig.symbol, side="buy" if delta > 0 else "sell",
                      type="market", quantity=abs(delta), sent_ns=time.time_ns(),
                      source=f"marketplace:{sub.item}")
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, sig.symbol, want)
        pipe.xadd(streams.ORDERS_NEW, codec.fields(order), maxlen=streams.maxlen(streams.ORDERS_NEW),
                  approximate=True)
        await pipe.execute()
        self.orders += 1

    async def run_extra(self) -> None:
        """Every registered model joins the catalog (its lineage as metadata)."""
        while not self.stopping:
            resp = await self.r.xread({streams.MODELS_EVENTS: self.ev_cursor}, count=100, block=200)
            for _, items in resp or []:
                for eid, f in items:
                    self.ev_cursor = eid
                    try:
                        ev = _ev.decode(codec.payload(f))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    if ev.kind == "registered":
                        await self._add_model(ev)

    async def _add_model(self, ev: ModelEvent) -> None:
        data = await self.r.hget(reg.k_versions(ev.name), str(ev.version))
        if data is None:
            return
        rec = reg.decode_record(data)
        item = store.CatalogItem(
            id=f"model:{rec.name}", kind="model", name=rec.name, owner=rec.trained_by or "unknown",
            description=f"{rec.kind} on {', '.join(rec.features)}", signals=rec.name,
            metadata={"latest_version": rec.version, "metrics": rec.metrics, "symbols": rec.symbols,
                      "data_start_ns": rec.data_start_ns, "data_end_ns": rec.data_end_ns},
        )
        pipe = self.r.pipeline(transaction=False)
        store.queue_put(pipe, item)
        await pipe.execute()
