"""feast-pipeline (P4): closed 1 s bars -> features per symbol (definitions as data), kept online
(latest per symbol in Redis, `features:online:<symbol>`, what serving scores) and offline
(Parquet, what training reads point in time), each row also published on `features` (the update
that triggers serving, and the history)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from backend.bus import streams
from backend.bus.access import Keys, Reads, Writes
from backend.bus.publish import queue
from backend.features import store
from backend.features.compute import SymbolHistory, definitions
from backend.messages import Bar, FeatureRow
from backend.services.base import Service

BAR_NS = 1_000_000_000


class FeastConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    flush_rows: int = 2000
    """Rows buffered before an offline Parquet file is written (also every 5 s)."""


class FeastPipelineService(Service):
    name = "feast-pipeline"
    Config = FeastConfig
    reads = (Reads(streams.MD_BARS_1S, group=True),)
    writes = (Writes(streams.FEATURES),)
    keys = (Keys(store.ONLINE_KEY.format(symbol="*"), write=True),)

    async def setup(self) -> None:
        depth = max(d.window for d in definitions()) + 1
        self.hist: dict[str, SymbolHistory] = {}
        self.depth = depth
        self.rows = 0
        self.offline: list[dict[str, Any]] = []
        self.data_dir = Path(self.settings.resolved_data_dir())
        self.worker = self.consume(self.whole(streams.MD_BARS_1S), self.on_bars, decode=Bar, count=512, block_ms=100)
        self.every(5.0, self.flush_offline)

    def processed(self) -> int:
        return self.rows

    def metrics(self) -> dict[str, object]:
        return {"rows": self.rows, "symbols": len(self.hist), "features": [d.name for d in definitions()]}

    async def on_bars(self, bars: list[tuple[bytes, Bar]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for eid, bar in bars:
            if not (bar.close > 0 and bar.volume >= 0):
                self.worker.reject(eid, f"bad bar for {bar.symbol}: close {bar.close}, volume {bar.volume}")
                continue
            h = self.hist.setdefault(bar.symbol, SymbolHistory(self.depth))
            values = h.add(bar)
            if values is None:
                continue
            row = FeatureRow(symbol=bar.symbol, ts_ns=bar.start_ns + BAR_NS, values=values)
            # the online store first: whoever sees the row on `features` finds the store updated
            store.queue_online(pipe, bar.symbol, row.ts_ns, values)
            queue(pipe, streams.FEATURES, row)
            self.offline.append({"symbol": row.symbol, "ts_ns": row.ts_ns, **values})
            self.rows += 1
        await pipe.execute()
        if len(self.offline) >= self.cfg.flush_rows:
            await self.flush_offline()

    async def flush_offline(self) -> None:
        rows, self.offline = self.offline, []
        store.write_offline(self.data_dir, rows, f"{time.time_ns()}-{uuid.uuid4().hex[:6]}")

    async def teardown(self) -> None:
        await self.flush_offline()
