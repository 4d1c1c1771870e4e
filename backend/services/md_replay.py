"""md-replay (P4): replays stored ticks (sink-ticks' store) into a stream, in order, at a chosen
speed (1x real time .. 0 = as fast as possible), for backtests and paper-trading validation.
Requests arrive on replay.requests; progress is in the heartbeat. When an S3 endpoint is configured
(backend.s3), the ticks are read from sink-ticks' Delta Lake table there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import numpy as np

from backend import s3
from backend.bus import streams
from backend.bus.access import Reads, Writes
from backend.bus.publish import publish
from backend.marketdata import store
from backend.marketdata import ticks as tickcols
from backend.messages import ReplayRequest
from backend.secrets import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
from backend.services.base import Service


class ReplayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    batch: int = 500
    """Ticks per published batch when replaying as fast as possible."""


class MdReplayService(Service):
    name = "md-replay"
    Config = ReplayConfig
    reads = (Reads(streams.REPLAY_REQUESTS, group=True),)
    writes = (Writes(streams.MD_TICKS_REPLAY), Writes(f"{streams.MD_TICKS_REPLAY}.*"))
    secrets = (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)  # sink-ticks' S3 endpoint, when one is configured

    async def setup(self) -> None:
        self.s3 = s3.configured(self.settings)
        self.replayed = 0
        self.current: str | None = None
        self.data_dir = Path(self.settings.resolved_data_dir())
        self.worker = self.consume(
            streams.REPLAY_REQUESTS, self.on_requests, decode=ReplayRequest, count=1, block_ms=200
        )

    def processed(self) -> int:
        return self.replayed

    def metrics(self) -> dict[str, object]:
        return {"replayed": self.replayed, "current": self.current}

    async def on_requests(self, requests: list[tuple[bytes, ReplayRequest]]) -> None:
        for eid, req in requests:
            if req.end_ns <= req.start_ns or req.speed < 0 or not req.target:
                self.worker.reject(
                    eid,
                    f"bad replay request {req.id!r}: range [{req.start_ns}, "
                    f"{req.end_ns}), speed {req.speed}, target {req.target!r}",
                )
                continue
            if not self.declared.may_write(req.target):
                self.worker.reject(
                    eid,
                    f"bad replay request {req.id!r}: target {req.target!r} is not a replay "
                    f"stream ({streams.MD_TICKS_REPLAY} or {streams.MD_TICKS_REPLAY}.<name>)",
                )
                continue
            await self.replay(req)

    async def replay(self, req: ReplayRequest) -> int:
        df = await asyncio.to_thread(
            store.read_ticks, self.data_dir, req.symbols or None, req.start_ns, req.end_ns, s3=self.s3
        )
        self.current = req.id
        if df.empty:
            self.current = None
            return 0
        ts = df["ts"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
        symbols = sorted(df.symbol.unique())
        code = {s: i for i, s in enumerate(symbols)}
        sym = df.symbol.map(code).to_numpy()
        t0_data, t0_wall = int(ts[0]), time.monotonic()
        step = self.cfg.batch if req.speed == 0 else 1
        i = 0
        n = len(df)
        while i < n and not self.stopping:
            j = min(n, i + step)
            if req.speed > 0:  # pace by the data's own clock; group ticks of the same ms
                while j < n and ts[j] - ts[i] < 1_000_000:
                    j += 1
                due = (int(ts[i]) - t0_data) / 1e9 / req.speed
                wait = due - (time.monotonic() - t0_wall)
                if wait > 0:
                    await asyncio.sleep(wait)
            batch = tickcols.pack(
                symbols,
                sym[i:j],
                df.trade_id.to_numpy()[i:j],
                df.price.to_numpy()[i:j],
                df.qty.to_numpy()[i:j],
                ts[i:j],
                df.recv_ns.to_numpy()[i:j],
                df.buyer_maker.to_numpy()[i:j],
                time.time_ns(),
            )
            await publish(self.r, req.target, batch)
            self.replayed += j - i
            i = j
        self.current = None
        return n
