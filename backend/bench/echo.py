"""The risk benchmark's floor: a bare request/reply echo through the same streams (risk.requests
-> risk.decisions), same read size and one round trip per batch, with no checks.
Run as its own process: `python -m backend.bench.echo REDIS_URL`.

It stands in for risk and runs as risk: its name (so its consumer group, its heartbeat) and its
Redis user are risk's, so that risk.requests stays consumed by one service only (the rule that
keeps one service out of another's group: backend/bus/access.py)."""

from __future__ import annotations

import sys
import time

from backend import aio
from backend.bus import streams
from backend.bus.access import Reads, Writes
from backend.bus.connection import env_login
from backend.bus.publish import xadd
from backend.messages import RiskDecision, RiskRequest
from backend.services.base import Service


class EchoService(Service):
    name = "risk"  # risk's stand-in: its group, its heartbeat, its user (a subset of risk's rights)
    reads = (Reads(streams.RISK_REQUESTS, group=True),)
    writes = (Writes(streams.RISK_DECISIONS),)

    async def setup(self) -> None:
        self.n = 0
        self.consume(
            streams.RISK_REQUESTS, self.on_requests, decode=RiskRequest, count=512, block_ms=100, auto_ack=False
        )

    def processed(self) -> int:
        return self.n

    async def on_requests(self, entries: list[tuple[bytes, RiskRequest]]) -> None:
        out: list[tuple] = []
        for _, req in entries:
            out.append(
                xadd(
                    streams.RISK_DECISIONS,
                    RiskDecision(
                        request_id=req.request_id,
                        client_order_id=req.order.client_order_id,
                        approved=True,
                        request_sent_ns=req.sent_ns,
                        decided_ns=time.time_ns(),
                    ),
                )
            )
        out.append(("XACK", streams.RISK_REQUESTS, self.name, *[eid for eid, _ in entries]))
        await self.send(out)
        self.n += len(entries)


if __name__ == "__main__":
    aio.run(EchoService(redis_url=sys.argv[1], instance="echo-bench", login=env_login()).run(install_signals=True))
