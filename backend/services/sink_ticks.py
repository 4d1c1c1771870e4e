"""sink-ticks (P1): md.ticks -> the durable tick store (Parquet by date/symbol, or Delta Lake),
and QuestDB over ILP when a QuestDB URL is configured. Flushes by size and by time; exactly once
across crashes (see backend.marketdata.store): entries at or below the committed offset are
acknowledged without being written again."""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from backend.bus import streams
from backend.marketdata import store
from backend.messages import TickBatch
from backend.services.base import Service


class SinkTicksConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: Literal["parquet", "delta"] = "parquet"
    """parquet: files by date/symbol; delta: a Delta Lake table (deltalake package)."""
    flush_rows: int = 200_000
    """Write when this many ticks are buffered ..."""
    flush_s: float = 2.0
    """... or when the oldest buffered tick is this old."""
    questdb: str | None = None
    """QuestDB ILP conf, e.g. "http::addr=127.0.0.1:9000;" (also `infra.questdb` in config)."""


class SinkTicksService(Service):
    name = "sink-ticks"
    Config = SinkTicksConfig

    async def setup(self) -> None:
        data_dir = self.settings.resolved_data_dir()
        if self.cfg.format == "delta":
            self.store: store.ParquetStore | store.DeltaStore = store.DeltaStore(store.delta_dir(data_dir))
        else:
            self.store = store.ParquetStore(store.ticks_dir(data_dir))
        self.committed = self.store.recover()
        self.buffer: list[tuple[str, TickBatch]] = []
        self.buffered_ids: list[bytes] = []
        self.rows_buffered = 0
        self.oldest = 0.0
        self.rows_written = 0
        self.files_written = 0
        self.skipped = 0
        self.questdb = None
        conf = self.cfg.questdb or self.settings.infra.get("questdb")
        if conf:
            from questdb.ingress import Sender

            if "::" not in conf:  # a plain URL: http://host:port
                conf = f"http::addr={conf.split('://', 1)[-1].rstrip('/')};"
            self.questdb = Sender.from_conf(conf)
            self.questdb.establish()
        # entries are acked only after the flush that stores them, so the worker must not
        # reclaim our own in-flight entries: a long idle threshold
        self.worker = self.consume(streams.MD_TICKS, self.on_ticks, decode=TickBatch, count=128, block_ms=100,
                                   claim_idle_ms=int(max(60, self.cfg.flush_s * 10) * 1000),
                                   auto_ack=False)
        self.every(0.2, self.flush_if_due)

    def processed(self) -> int:
        return self.rows_written

    def metrics(self) -> dict[str, object]:
        return {"rows_written": self.rows_written, "files": self.files_written,
                "buffered": self.rows_buffered, "committed_id": self.committed,
                "skipped_entries": self.skipped, "format": self.cfg.format,
                "questdb": bool(self.questdb)}

    async def on_ticks(self, batches: list[tuple[bytes, TickBatch]]) -> None:
        # Entries are buffered, not acked: they are acked by the flush that stores them.
        for eid, batch in batches:
            sid = eid.decode()
            if self.committed and store.id_key(sid) <= store.id_key(self.committed):
                self.skipped += 1
                await self.r.xack(streams.MD_TICKS, self.name, eid)
                continue
            if not self.buffer:
                self.oldest = time.monotonic()
            self.buffer.append((sid, batch))
            self.buffered_ids.append(eid)
            self.rows_buffered += batch.n
        if self.rows_buffered >= self.cfg.flush_rows:
            await self.flush()

    async def flush_if_due(self) -> None:
        if self.buffer and time.monotonic() - self.oldest >= self.cfg.flush_s:
            await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        buf, ids = self.buffer, self.buffered_ids
        self.buffer, self.buffered_ids, self.rows_buffered = [], [], 0
        table = store.to_table(buf)
        first, last = buf[0][0], buf[-1][0]
        files = self.store.write(table, first, last)
        if self.questdb is not None:
            df = table.to_pandas()
            self.questdb.dataframe(df.drop(columns=["stream_id"]), table_name="ticks",
                                   symbols=["symbol"], at="ts")
            self.questdb.flush()
        self.committed = last
        self.rows_written += table.num_rows
        self.files_written += len(files)
        for i in range(0, len(ids), 1000):
            await self.r.xack(streams.MD_TICKS, self.name, *ids[i:i + 1000])

    async def teardown(self) -> None:
        await self.flush()
        if self.questdb is not None:
            self.questdb.close()
