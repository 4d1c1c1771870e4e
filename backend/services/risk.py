"""risk (P3): pre-trade checks on risk.requests -> risk.decisions.

Prices come from md.ticks and positions from exec.reports, read as broadcasts (XREAD, every
instance sees all of them); the kill switch from the `risk:kill_switch` key and ops.control
(blocks new orders at once; risk-reducing orders still pass). Decisions are published and the
requests acked in one round trip.
"""

from __future__ import annotations

import time

import msgspec

from backend.bus import streams
from backend.bus.broadcast import Item
from backend.bus.entries import decode_with
from backend.bus.publish import xadd
from backend.marketdata import ticks as tickcols
from backend.messages import ControlCommand, ExecReport, Instrument, RiskDecision, RiskRequest, TickBatch
from backend.services.base import Service
from backend.trading.risk_rules import RiskConfig, RiskEngine

KILL_KEY = "risk:kill_switch"
_ticks = msgspec.msgpack.Decoder(TickBatch)


class RiskService(Service):
    name = "risk"
    Config = RiskConfig

    async def setup(self) -> None:
        self.engine = RiskEngine(self.cfg)
        self.engine.kill_switch = (await self.r.get(KILL_KEY)) == b"1"
        self.checked = 0
        self.check_us = self.recorder("check")
        self.worker = self.consume(streams.RISK_REQUESTS, self.on_requests, decode=RiskRequest, count=512,
                                   block_ms=100, auto_ack=False)
        # broadcasts: every instance reads every price, fill and control command
        self.feeds = self.listen(
            {streams.MD_TICKS: "$", streams.EXEC_REPORTS: "0", streams.OPS_CONTROL: "$", streams.REFDATA_EVENTS: "0"},
            self.on_broadcast,
            decode={streams.MD_TICKS: TickBatch, streams.EXEC_REPORTS: ExecReport,
                    streams.OPS_CONTROL: ControlCommand, streams.REFDATA_EVENTS: Instrument})
        last, _ = decode_with(reversed(await self.r.xrevrange(streams.MD_TICKS, count=20)), _ticks.decode,
                              stream=streams.MD_TICKS, skips=self.skips)
        for _, batch in last:
            self.engine.book.prices.update(tickcols.last_prices(batch))

    def processed(self) -> int:
        return self.checked

    def metrics(self) -> dict[str, object]:
        return {"kill_switch": self.engine.kill_switch, "denials": dict(self.engine.denials),
                "symbols_priced": len(self.engine.book.prices)}

    async def on_requests(self, reqs: list[tuple[bytes, RiskRequest]]) -> None:
        out: list[tuple] = []
        for _, req in reqs:
            t0 = time.perf_counter_ns()
            d = self.engine.check(req.order)
            out.append(xadd(streams.RISK_DECISIONS, RiskDecision(
                request_id=req.request_id, client_order_id=req.order.client_order_id,
                approved=d.approved, rule=d.rule, reason=d.reason,
                request_sent_ns=req.sent_ns, decided_ns=time.time_ns())))
            self.check_us.record_ns(time.perf_counter_ns() - t0)
        out.append(("XACK", streams.RISK_REQUESTS, self.name, *[eid for eid, _ in reqs]))
        await self.send(out)
        self.checked += len(reqs)

    async def on_broadcast(self, items: list[Item]) -> None:
        for stream, _, msg in items:
            if stream == streams.MD_TICKS:
                self.engine.book.prices.update(tickcols.last_prices(msg))
            elif stream == streams.EXEC_REPORTS:
                self.engine.book.on_report(msg)
            elif stream == streams.REFDATA_EVENTS:
                self.engine.book.on_instrument(msg)
            elif msg.target in ("risk", "*") and msg.command == "kill_switch":
                self.engine.kill_switch = bool(msg.args.get("on"))
                self.log.warning("kill switch %s", "ON" if self.engine.kill_switch else "off",
                                 extra={"operator": msg.operator, "reason": msg.reason})
