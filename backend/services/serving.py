"""serving (P5): scores the online feature store with the production model and publishes `Signal`s.

Feature updates trigger it: feast-pipeline writes a symbol's latest features into the online
store (`features:online:<symbol>`, backend.features.store) and then announces the row on
`features`, which serving consumes in its group. A batch of updates is coalesced per symbol:
serving reads each updated symbol's online hash once and scores what the store holds now (the
newest features, even if several rows arrived meanwhile). Each (model, symbol, feature time) is
scored once across instances and redeliveries: the claim in `serving:scored:<model>` and the
signal are written by one script, so a signal is never lost or published twice.

The production version of the configured model is loaded from modelops at start and swapped in
place when `models.events` says it changed (promotion or rollback): the next update is scored by
the new version, no restart. An update the model cannot score (no online features, a value that
is not a number, a feature the model needs missing, a non-finite score) goes to `dlq.features`
with the reason. Latency is recorded: `score_*` (the model on one row) and `signal_*` (from the
update's publication to the signal's) in the heartbeat.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import msgspec

from backend.bus import streams
from backend.bus.access import Keys, Reads, Scripts, Writes
from backend.bus.broadcast import Item
from backend.bus.publish import xadd
from backend.features import store as fstore
from backend.messages import FeatureRow, ModelEvent, Side, Signal
from backend.models import registry as reg
from backend.models.linear import LinearModel
from backend.services.base import Service

# KEYS: scored hash, signals stream. ARGV: symbol, feature ts_ns, then the signal's XADD
# (backend.bus.publish.xadd).
# Publishes the signal only when this feature time is newer than the last one scored (compared as
# decimal strings: Lua numbers are doubles, too coarse for nanoseconds).
_CLAIM_AND_PUBLISH = """
local last = redis.call('HGET', KEYS[1], ARGV[1])
local ts = ARGV[2]
if last and (#last > #ts or (#last == #ts and last >= ts)) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(unpack(ARGV, 3))
return 1
"""


def scored_key(model: str) -> str:
    return f"serving:scored:{model}"


class ServingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str = "alpha"
    """Registry name of the model to serve."""
    threshold: float = 0.5
    """|score| at or above this gives a side (buy/sell); below it the signal is neutral."""


class ServingService(Service):
    name = "serving"
    Config = ServingConfig
    reads = (Reads(streams.FEATURES, group=True), Reads(streams.MODELS_EVENTS))
    writes = (Writes(streams.SIGNALS),)
    keys = (Keys(fstore.ONLINE_KEY.format(symbol="*")), Keys(scored_key("*"), write=True), Keys(reg.KEYS))
    scripts = (Scripts((scored_key("*"), streams.SIGNALS)),)  # the claim and the signal, together

    async def setup(self) -> None:
        self.model: LinearModel | None = None
        self.version = 0
        self.swaps = 0
        self.signals = 0
        self.unscored = 0
        self.coalesced = 0
        self.score_lat = self.recorder("score")
        self.signal_lat = self.recorder("signal")
        self.publish_signal = self.r.register_script(_CLAIM_AND_PUBLISH)
        events = self.listen(
            {streams.MODELS_EVENTS: "$"}, self.on_model_events, decode=ModelEvent, count=100, block_ms=200
        )
        await events.start()  # before loading: no promotion slips between
        await self.load()
        self.worker = self.consume(
            streams.FEATURES, self.on_updates, decode=FeatureRow, what="feature update", count=512, block_ms=100
        )

    def processed(self) -> int:
        return self.signals

    def metrics(self) -> dict[str, object]:
        return {
            "model": self.cfg.model,
            "version": self.version,
            "swaps": self.swaps,
            "signals": self.signals,
            "coalesced_updates": self.coalesced,
            "unscored_no_model": self.unscored,
        }

    async def load(self) -> None:
        """(Re)load the production version; keep the one in hand if the new one cannot load."""
        rec = await reg.aproduction(self.r, self.cfg.model)
        if rec is None or rec.version == self.version:
            return
        try:
            model = rec.model()
        except ValueError as exc:
            self.log.error("cannot load %s v%d: %s; keeping v%d", rec.name, rec.version, exc, self.version)
            return
        old = self.version
        self.model, self.version = model, rec.version
        if old:
            self.swaps += 1
        self.log.info("serving %s v%d (was v%d)", rec.name, rec.version, old)

    async def on_updates(self, rows: list[tuple[bytes, FeatureRow]]) -> None:
        """Score each updated symbol's online features once per batch (acked by the worker after)."""
        updates: dict[str, list[bytes]] = defaultdict(list)
        for eid, row in rows:
            updates[row.symbol].append(eid)
        model, version = self.model, self.version
        if model is None:
            self.unscored += sum(len(v) for v in updates.values())
            return
        symbols = list(updates)
        async with self.r.pipeline(transaction=False) as pipe:
            for sym in symbols:
                pipe.hgetall(fstore.online_key(sym))
            hashes = await pipe.execute()
        for sym, raw in zip(symbols, hashes, strict=True):
            try:
                ts_ns, values = fstore.parse_online(sym, raw)
                t0 = time.perf_counter_ns()
                try:
                    score = model.score(values)
                except KeyError as exc:
                    raise ValueError(
                        f"online features for {sym} lack {exc.args[0]!r} needed by {self.cfg.model} v{version}"
                    ) from None
                self.score_lat.record_ns(time.perf_counter_ns() - t0)
                if not math.isfinite(score):
                    raise ValueError(f"online features for {sym} score {score} (non-finite feature values)")
            except ValueError as exc:
                for eid in updates[sym]:
                    self.worker.reject(eid, str(exc))
                continue
            side: Side | None = (
                "buy" if score >= self.cfg.threshold else "sell" if score <= -self.cfg.threshold else None
            )
            sig = Signal(
                symbol=sym,
                ts_ns=ts_ns,
                model=self.cfg.model,
                version=version,
                score=round(score, 6),
                side=side,
                strength=round(min(abs(score), 10.0), 6),
            )
            published = await self.publish_signal(
                keys=[scored_key(self.cfg.model), streams.SIGNALS], args=[sym, str(ts_ns), *xadd(streams.SIGNALS, sig)]
            )
            if published:
                self.signals += 1
                newest = max(int(eid.split(b"-")[0]) for eid in updates[sym])
                self.signal_lat.record_ns(max(0, time.time_ns() - newest * 1_000_000))
            self.coalesced += len(updates[sym]) - int(bool(published))

    async def on_model_events(self, items: list[Item]) -> None:
        """Watch the registry's events: a promotion or rollback of our model swaps it in."""
        if any(ev.name == self.cfg.model and ev.kind in ("promoted", "rolled_back") for _, _, ev in items):
            await self.load()
