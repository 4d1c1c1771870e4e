"""sink-alt (P1): alt.raw -> checked items stored as Parquet (by date), indexed for full-text
search (SQLite FTS5 by default, OpenSearch when configured), and re-published on alt.items.

When an S3 endpoint is configured (`infra.s3` or `infra.minio`, backend.s3), the items are stored
in a Delta Lake table on S3 instead (backend.alt.s3table: each batch merged by item, so an item is
there once however often it is delivered), the credentials from the secrets provider. While S3
cannot be written the batch in hand is held and retried with backoff (the service says `degraded`
with the reason; the stream's lag grows), never dead-lettered: an outage is not a bad item."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from backend import s3
from backend.alt import s3table
from backend.alt.index import open_index
from backend.bus import streams
from backend.bus.access import Reads, Writes
from backend.bus.publish import queue
from backend.errors import TradeopsError
from backend.fileio import atomic_path
from backend.messages import AltItem
from backend.secrets import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
from backend.services.base import Service


class StoreUnavailable(TradeopsError):
    """The store could not be written before the service was asked to stop."""


class SinkAltConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    opensearch: str | None = None
    """OpenSearch base URL; unset: `infra.opensearch`, else the embedded SQLite FTS5 index."""
    s3: bool = True
    """Store the items on S3 when `infra.s3` / `infra.minio` is configured; false: the data dir."""
    retry_max_s: float = 5.0
    """A failed S3 write is retried after 0.25 s, then twice as long each time, up to this."""


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
    secrets = (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)  # the S3 endpoint's, when one is configured

    async def setup(self) -> None:
        self.data_dir = Path(self.settings.resolved_data_dir())
        self.s3 = s3.configured(self.settings) if self.cfg.s3 else None
        self.where = self.s3.where(s3table.NAME) if self.s3 is not None else str(alt_dir(self.data_dir))
        self.s3_failures = 0
        self.index = open_index(self.data_dir, self.cfg.opensearch or self.settings.infra.get("opensearch"))
        self.stored = 0
        self.indexed = self.index.count()
        self.worker = self.consume(streams.ALT_RAW, self.on_items, decode=AltItem, count=256, block_ms=200)

    def processed(self) -> int:
        return self.stored

    def metrics(self) -> dict[str, object]:
        return {"stored": self.stored, "indexed": self.indexed, "store": self.where, "s3_failures": self.s3_failures}

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
        if self.s3 is not None:
            await self._store_s3([(eid.decode(), it) for eid, it in good])
        else:
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

    async def _store_s3(self, items: list[tuple[str, AltItem]]) -> None:
        """Merge the batch into the S3 table, retrying with backoff while S3 refuses (degraded);
        StoreUnavailable when asked to stop meanwhile (the batch stays pending, for the restart)."""
        assert self.s3 is not None
        backoff = 0.0
        while True:
            try:
                await asyncio.to_thread(s3table.write, self.s3, items)
            except Exception as exc:  # noqa: BLE001 - deltalake raises OSError and its own: retried
                self.s3_failures += 1
                backoff = min(self.cfg.retry_max_s, max(0.25, backoff * 2))
                why = f"cannot write alt items to {self.where}: {s3.reason(exc)}"
                if not self.degraded:
                    self.log.warning("%s; retrying every %.2fs at most", why, self.cfg.retry_max_s)
                self.degrade(f"{why}; retrying, reading stopped")
                if await self.wait_stopped(backoff):
                    raise StoreUnavailable(f"{why}; stopping with the batch unstored (it stays pending)") from None
                continue
            if self.degraded:
                self.recover()
            return

    async def teardown(self) -> None:
        self.index.close()
