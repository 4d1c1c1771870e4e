"""risk (P3): pre-trade checks on risk.requests -> risk.decisions.

Prices come from md.ticks and positions from exec.reports, read as broadcasts (XREAD, every
instance sees all of them); the kill switch from the `risk:kill_switch` key and ops.control
(blocks new orders at once; risk-reducing orders still pass). Decisions are published and the
requests acked in one round trip.
"""

from __future__ import annotations

import time

import msgspec

from backend.bus import codec, streams
from backend.bus.broadcast import Broadcast
from backend.bus.worker import Entry
from backend.marketdata import ticks as tickcols
from backend.messages import ControlCommand, ExecReport, Instrument, RiskDecision, RiskRequest, TickBatch
from backend.services.base import Service
from backend.trading.risk_rules import RiskConfig, RiskEngine

KILL_KEY = "risk:kill_switch"
_req = msgspec.msgpack.Decoder(RiskRequest)
_ticks = msgspec.msgpack.Decoder(TickBatch)
_rep = msgspec.msgpack.Decoder(ExecReport)
_ctl = msgspec.msgpack.Decoder(ControlCommand)
_inst = msgspec.msgpack.Decoder(Instrument)


class RiskService(Service):
    name = "risk"
    Config = RiskConfig

    async def setup(self) -> None:
        self.engine = RiskEngine(self.cfg)
        self.engine.kill_switch = (await self.r.get(KILL_KEY)) == b"1"
        self.checked = 0
        self.check_us = self.recorder("check")
        self.worker = self.consume(streams.RISK_REQUESTS, self.on_requests, count=512, block_ms=100,
                                   auto_ack=False)
        # broadcasts: every instance reads every price, fill and control command
        self.broadcast = Broadcast(self.r, {streams.MD_TICKS: "$", streams.EXEC_REPORTS: "0",
                                            streams.OPS_CONTROL: "$", streams.REFDATA_EVENTS: "0"})
        last = await self.r.xrevrange(streams.MD_TICKS, count=20)
        for _, f in reversed(last):
            self.engine.book.prices.update(tickcols.last_prices(_ticks.decode(codec.payload(f))))

    def processed(self) -> int:
        return self.checked

    def metrics(self) -> dict[str, object]:
        return {"kill_switch": self.engine.kill_switch, "denials": dict(self.engine.denials),
                "symbols_priced": len(self.engine.book.prices)}

    async def on_requests(self, entries: list[Entry]) -> None:
        out: list[tuple] = []
        for eid, fields in entries:
            t0 = time.perf_counter_ns()
            try:
                req = _req.decode(codec.payload(fields))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self.worker.dead_letter(eid, fields, f"undecodable risk request: {exc}")
                continue
            d = self.engine.check(req.order)
            out.append(streams.xadd(streams.RISK_DECISIONS, RiskDecision(
                request_id=req.request_id, client_order_id=req.order.client_order_id,
                approved=d.approved, rule=d.rule, reason=d.reason,
                request_sent_ns=req.sent_ns, decided_ns=time.time_ns())))
            self.check_us.record_ns(time.perf_counter_ns() - t0)
        out.append(("XACK", streams.RISK_REQUESTS, self.name, *[eid for eid, _ in entries]))
        await self.send(out)
        self.checked += len(entries)

    async def run_extra(self) -> None:
        try:
            while not self.stopping:
                for name, eid, f in await self.broadcast.read():
                    try:
                        self._on_broadcast(name, codec.payload(f))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        self.log.warning("skipping undecodable %s entry %s", name, eid)
        finally:
            await self.broadcast.close()

    def _on_broadcast(self, stream: str, data: bytes) -> None:
        if stream == streams.MD_TICKS:
            self.engine.book.prices.update(tickcols.last_prices(_ticks.decode(data)))
        elif stream == streams.EXEC_REPORTS:
            self.engine.book.on_report(_rep.decode(data))
        elif stream == streams.REFDATA_EVENTS:
            inst = _inst.decode(data)
            self.engine.book.on_instrument(inst)
        else:
            cmd = _ctl.decode(data)
            if cmd.target in ("risk", "*") and cmd.command == "kill_switch":
                self.engine.kill_switch = bool(cmd.args.get("on"))
                self.log.warning("kill switch %s", "ON" if self.engine.kill_switch else "off",
                                 extra={"operator": cmd.operator, "reason": cmd.reason})
