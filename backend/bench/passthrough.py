"""The normalizer benchmark's baseline: a consumer that decodes each raw batch and re-publishes it
(same read size, same MULTI of XADD + XACK) without validating or aggregating. Run as its own
process: `python -m backend.bench.passthrough REDIS_URL`.

It stands in for the normalizer: its name (so its consumer group and heartbeat) is the
normalizer's, so that md.ticks.raw stays consumed by one service only (backend/bus/access.py). It
writes an output stream of its own (bench.passthrough), which the normalizer's user may not, so
the benchmark runs it as the benchmark's own user (admin)."""

from __future__ import annotations

import sys

from backend import aio
from backend.bus import streams
from backend.bus.access import Reads, Writes
from backend.bus.connection import env_login
from backend.bus.publish import xadd
from backend.messages import RawTickBatch
from backend.services.base import Service

OUT = "bench.passthrough"


class PassthroughService(Service):
    name = "normalizer"  # the normalizer's stand-in: its consumer group, its heartbeat
    reads = (Reads(streams.MD_TICKS_RAW, group=True),)
    writes = (Writes(OUT),)

    async def setup(self) -> None:
        self.ticks = 0
        self.consume(streams.MD_TICKS_RAW, self.on_raw, decode=RawTickBatch, count=64, block_ms=50)

    def processed(self) -> int:
        return self.ticks

    async def on_raw(self, entries: list[tuple[bytes, RawTickBatch]]) -> None:
        # the same fast connection and one atomic step (MULTI) as the normalizer's commit
        cmds: list[tuple] = [("MULTI",)]
        for _, batch in entries:
            self.ticks += batch.n
            cmds.append(xadd(OUT, batch))
        cmds += [("XACK", streams.MD_TICKS_RAW, self.name, *[eid for eid, _ in entries]), ("EXEC",)]
        await self.send(cmds)


if __name__ == "__main__":
    svc = PassthroughService(redis_url=sys.argv[1], instance="passthrough-bench", login=env_login())
    aio.run(svc.run(install_signals=True))
