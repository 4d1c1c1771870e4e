"""sink-alt (P1): alt.raw -> checked items stored as Parquet (by date), indexed for full-text
search (SQLite FTS5 by default, OpenSearch when configured), and re-published on alt.items."""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from backend.alt.index import open_index
from backend.bus import streams
from backend.bus.access import Reads, Writes
from backend.bus.publish import queue
from backend.fileio import atomic_path
from backend.messages import AltItem
from backend.services.base import Service


class SinkAltConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    opensearch: str | None = None
    """OpenSearch base URL; unset: `infra.opensearch`, else the embedded SQLite FTS5 index."""


def alt_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "store" / "alt"


def check(item: AltItem) -> str | None:
    """Why an item is unusable, or None."""
    if not item.id.strip():
        return "empty id"
    if not item.headline.strip():
        return "empty headline"
    if not math.isfinite(item.sentiment) or not -1.0 <= item.sentiment <= 1.0:
        return f"sentiment {item.sentiment} outside -1..1"
    if item.ts_ns <= 0:
        return f"bad timestamp {item.ts_ns}"
    return None


class SinkAltService(Service):
    name = "sink-alt"
    Config = SinkAltConfig
    reads = (Reads(streams.ALT_RAW, group=True),)
    writes = (Writes(streams.ALT_ITEMS),)

    async def setup(self) -> None:
        self.data_dir = Path(self.settings.resolved_data_dir())
        self.index = open_index(self.data_dir, self.cfg.opensearch or self.settings.infra.get("opensearch"))
        self.stored = 0
        self.indexed = self.index.count()
        self.worker = self.consume(streams.ALT_RAW, self.on_items, decode=AltItem, count=256, block_ms=200)

    def processed(self) -> int:
        return self.stored

    def metrics(self) -> dict[str, object]:
        return {"stored": self.stored, "indexed": self.indexed}

    async def on_items(self, entries: list[tuple[bytes, AltItem]]) -> None:
        good: list[tuple[bytes, AltItem]] = []
        for eid, item in entries:
            why = check(item)
            if why:
                self.worker.reject(eid, f"bad alt item {item.id!r}: {why}")
                continue
            good.append((eid, item))
        if not good:
            return
        items = [it for _, it in good]
        self._store(items, good[0][0].decode(), good[-1][0].decode())
        self.index.index(items)
        self.indexed = self.index.count()
        pipe = self.r.pipeline(transaction=False)
        for it in items:
            queue(pipe, streams.ALT_ITEMS, it)
        await pipe.execute()
        self.stored += len(items)

    def _store(self, items: list[AltItem], first: str, last: str) -> None:
        table = pa.Table.from_pylist([msgspec.to_builtins(i) for i in items])
        day = time.strftime("%Y-%m-%d", time.gmtime(items[0].ts_ns / 1e9))
        out = alt_dir(self.data_dir) / f"date={day}" / f"{first}_{last}.parquet"
        with atomic_path(out) as tmp:  # named by stream ids: a redelivery rewrites the same file
            pq.write_table(table, tmp)

    async def teardown(self) -> None:
        self.index.close()
