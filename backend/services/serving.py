"""serving (P5): scores online features with the production model and publishes `Signal`s.

Feature rows arrive on `features` (FeatureRow, consumer group); the production version of the
configured model is loaded from modelops at start and swapped in place when `models.events` says
it changed (promotion or rollback): the next row is scored by the new version, no restart.
A row the model cannot score (a feature missing, a non-finite value) goes to `dlq.features` with
the reason. Scoring latency is recorded (`score_p50` ... in the heartbeat).
"""

from __future__ import annotations

import math
import time

import msgspec

from backend.bus import codec, streams
from backend.bus.worker import Entry
from backend.messages import FeatureRow, ModelEvent, Signal
from backend.models import registry as reg
from backend.models.linear import LinearModel
from backend.services.base import Service

_row = msgspec.msgpack.Decoder(FeatureRow)
_ev = msgspec.msgpack.Decoder(ModelEvent)


class ServingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str = "alpha"
    """Registry name of the model to serve."""
    threshold: float = 0.5
    """|score| at or above this gives a side (buy/sell); below it the signal is neutral."""


class ServingService(Service):
    name = "serving"
    Config = ServingConfig

    async def setup(self) -> None:
        self.model: LinearModel | None = None
        self.version = 0
        self.swaps = 0
        self.signals = 0
        self.unscored = 0
        self.score_lat = self.recorder("score")
        last = await self.r.xrevrange(streams.MODELS_EVENTS, count=1)
        self.ev_cursor = last[0][0] if last else "0"  # before loading: no promotion slips between
        await self.load()
        self.worker = self.consume(streams.FEATURES, self.on_rows, count=512, block_ms=100, auto_ack=False)

    def metrics(self) -> dict[str, object]:
        return {"model": self.cfg.model, "version": self.version, "swaps": self.swaps,
                "signals": self.signals, "unscored_no_model": self.unscored}

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

    async def on_rows(self, entries: list[Entry]) -> None:
        pipe = self.r.pipeline(transaction=False)
        model, version = self.model, self.version
        for eid, fields in entries:
            try:
                row = _row.decode(codec.payload(fields))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, fields, f"undecodable feature row: {exc}")
                continue
            if model is None:
                self.unscored += 1
                continue
            t0 = time.perf_counter_ns()
            try:
                score = model.score(row.values)
            except KeyError as exc:
                await self.worker.dead_letter(eid, fields, f"feature row for {row.symbol} lacks "
                                              f"{exc.args[0]!r} needed by {self.cfg.model} v{version}")
                continue
            if not math.isfinite(score):
                await self.worker.dead_letter(eid, fields, f"feature row for {row.symbol} scores "
                                              f"{score} (non-finite feature values)")
                continue
            side = "buy" if score >= self.cfg.threshold else "sell" if score <= -self.cfg.threshold else None
            sig = Signal(symbol=row.symbol, ts_ns=row.ts_ns, model=self.cfg.model, version=version,
                         score=round(score, 6), side=side, strength=round(min(abs(score), 10.0), 6))
            pipe.xadd(streams.SIGNALS, codec.fields(sig), maxlen=streams.maxlen(streams.SIGNALS),
                      approximate=True)
            self.score_lat.record_ns(time.perf_counter_ns() - t0)
            self.signals += 1
        pipe.xack(streams.FEATURES, self.name, *[eid for eid, _ in entries])
        await pipe.execute()

    async def run_extra(self) -> None:
        """Watch the registry's events: a promotion or rollback of our model swaps it in."""
        while not self.stopping:
            resp = await self.r.xread({streams.MODELS_EVENTS: self.ev_cursor}, count=100, block=200)
            swap = False
            for _, items in resp or []:
                for eid, f in items:
                    self.ev_cursor = eid
                    try:
                        ev = _ev.decode(codec.payload(f))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    swap |= ev.name == self.cfg.model and ev.kind in ("promoted", "rolled_back")
            if swap:
                await self.load()
