"""risk (P3): pre-trade checks on risk.requests -> risk.decisions.

Prices come from md.ticks and positions from exec.reports, read as broadcasts (XREAD, every
instance sees all of them); the kill switch from the `risk:kill_switch` key and ops.control
(blocks new orders at once; risk-reducing orders still pass). Decisions are published and the
requests acked in one round trip.
"""

from __future__ import annotations

import time
from functools import partial

import msgspec

from backend.bus import partitions, streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.broadcast import Item
from backend.bus.entries import decode_with
from backend.bus.publish import xadd
from backend.marketdata import ticks as tickcols
from backend.messages import (
    ControlCommand,
    ExecReport,
    Instrument,
    RiskDecision,
    RiskRequest,
    TickBatch,
)
from backend.metrics import Exported
from backend.services.base import Service
from backend.trading.killswitch import COMMAND, KILL_KEY
from backend.trading.risk_rules import RiskConfig, RiskEngine

_ticks = msgspec.msgpack.Decoder(TickBatch)


class RiskService(Service):
    name = "risk"
    Config = RiskConfig
    reads = (
        Reads(streams.RISK_REQUESTS, group=True),
        Reads(streams.MD_TICKS),
        Reads(streams.EXEC_REPORTS),
        Reads(streams.OPS_CONTROL),
        Reads(streams.REFDATA_EVENTS),
    )
    writes = (Writes(streams.RISK_DECISIONS),)
    keys = (Keys(KILL_KEY),)
    exported = (
        Exported("denials", "Orders denied, by rule.", counter=True, label="rule"),
        Exported("kill_switch", "1 while the kill switch is on."),
        Exported("symbols_priced", "Symbols with a last price."),
    )

    async def setup(self) -> None:
        self.engine = RiskEngine(self.cfg)
        await self.sync_kill_switch()
        self.every(1.0, self.sync_kill_switch)
        self.checked = 0
        self.check_us = self.recorder("check")
        self.n = self.settings.partition_count(streams.RISK_REQUESTS)  # the order path's, by account
        self.tagged = partitions.on_cluster(self.r)
        self.parts = self.consume_partitions(
            streams.RISK_REQUESTS,
            lambda p: partial(self.on_requests, p),
            decode=RiskRequest,
            count=512,
            block_ms=100,
            auto_ack=False,
        )
        # broadcasts: every instance reads every price, fill and control command
        self.feeds = self.listen(
            {streams.MD_TICKS: "$", streams.EXEC_REPORTS: "0", streams.OPS_CONTROL: "$", streams.REFDATA_EVENTS: "0"},
            self.on_broadcast,
            decode={
                streams.MD_TICKS: TickBatch,
                streams.EXEC_REPORTS: ExecReport,
                streams.OPS_CONTROL: ControlCommand,
                streams.REFDATA_EVENTS: Instrument,
            },
        )
        newest = await self.newest(streams.MD_TICKS, 20)  # each partition's, oldest first
        last, _ = decode_with(newest, _ticks.decode, stream=streams.MD_TICKS, skips=self.skips)
        for _, batch in last:
            self.engine.book.prices.update(tickcols.last_prices(batch))

    def processed(self) -> int:
        return self.checked

    def metrics(self) -> dict[str, object]:
        return {
            "kill_switch": self.engine.kill_switch,
            "denials": dict(self.engine.denials),
            "symbols_priced": len(self.engine.book.prices),
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
        }

    async def on_requests(self, p: int, reqs: list[tuple[bytes, RiskRequest]]) -> None:
        """Partition p's requests, answered on partition p of risk.decisions (the same accounts)."""
        requests = partitions.name(streams.RISK_REQUESTS, p, self.n, tagged=self.tagged)
        decisions = partitions.name(streams.RISK_DECISIONS, p, self.n, tagged=self.tagged)
        out: list[tuple] = []
        for _, req in reqs:
            t0 = time.perf_counter_ns()
            d = self.engine.check(req.order)
            out.append(
                xadd(
                    decisions,
                    RiskDecision(
                        request_id=req.request_id,
                        client_order_id=req.order.client_order_id,
                        approved=d.approved,
                        rule=d.rule,
                        reason=d.reason,
                        request_sent_ns=req.sent_ns,
                        decided_ns=time.time_ns(),
                        instance=self.instance,
                    ),
                )
            )
            self.check_us.record_ns(time.perf_counter_ns() - t0)
        out.append(("XACK", requests, self.name, *[eid for eid, _ in reqs]))
        await self.send_at(requests, out)
        self.checked += len(reqs)

    async def on_broadcast(self, items: list[Item]) -> None:
        for stream, _, msg in items:
            if stream == streams.MD_TICKS:
                self.engine.book.prices.update(tickcols.last_prices(msg))
            elif stream == streams.EXEC_REPORTS:
                self.engine.book.on_report(msg)
            elif stream == streams.REFDATA_EVENTS:
                self.engine.book.on_instrument(msg)
            elif msg.target in ("risk", "*") and msg.command == COMMAND:
                # the toggle is the cue, the key is the truth (a toggle on ops.control alone
                # changes nothing: `tradeops risk kill status` and the engine read the same key)
                await self.sync_kill_switch(msg)

    async def sync_kill_switch(self, cue: ControlCommand | None = None) -> None:
        """Take the kill switch's state from its key (backend.trading.killswitch), the one truth."""
        on = (await self.r.get(KILL_KEY)) == b"1"
        if on != self.engine.kill_switch:
            self.engine.kill_switch = on
            who = {"operator": cue.operator, "reason": cue.reason} if cue is not None else {}
            self.log.warning("kill switch %s", "ON" if on else "off", extra=who)
