"""sink-ticks (P1): md.ticks -> the durable tick store (Parquet by date/symbol, or Delta Lake),
and QuestDB over ILP when a QuestDB URL is configured. Flushes by size and by time. When an S3
endpoint is configured (`infra.s3` or `infra.minio`, backend.s3), the store is a Delta Lake table
on S3 (`s3://<bucket>/<prefix>/ticks-delta`), its credentials from the secrets provider.

Every trade is stored exactly once across crashes, restarts and a full disk:
- the worker hands each entry once while it is buffered (`auto_ack=False`: in flight until the
  flush that stores it acks it), and an entry handed twice anyway is not buffered twice;
- a flush commits the entry ids it holds with its files (backend.marketdata.store); on start,
  commits whose acks a crash cut off are acked before anything is read, so what is stored is
  never delivered again, and a flush never writes rows an unacked commit already holds. New
  entries at or below the committed offset (a consumer group set back) are acked unwritten;
  on a Delta Lake table (local or on S3), entries delivered again are looked up in the table: the
  offset vouches only for this instance's commits, not another's (blue/green, a takeover);
- a flush that fails (ENOSPC or anything else) keeps its buffer: the service says `degraded`
  with the reason, retries with backoff, stops reading while `max_buffer_rows` ticks are held
  (the stream's lag grows instead of the memory), and is `running` again after a flush succeeds.

A split md.ticks (`[partitions] "md.ticks" = N`, the normalizer's outputs split alike) is read a
lane per partition this instance owns (backend/bus/partitioned.py: the instances of sink-ticks
share them): each lane has its buffer and its own commit log in the Parquet store
(`_commits/p1of4/`: entry ids repeat across partitions, so offsets and commits are a partition's
own), settled when the partition becomes the instance's and flushed when it goes; the files go
where every file goes (date/symbol: a symbol is in one partition), so readers see one store.
"""

from __future__ import annotations

import asyncio
import errno
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import msgspec
import pyarrow as pa

from backend import s3
from backend.bus import streams
from backend.bus.access import Reads
from backend.bus.worker import StreamWorker
from backend.errors import ConfigError
from backend.marketdata import store
from backend.messages import TickBatch
from backend.metrics import Exported
from backend.secrets import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY
from backend.services.base import Service


class SinkTicksConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    format: Literal["parquet", "delta"] = "parquet"
    """parquet: files by date/symbol; delta: a Delta Lake table (deltalake package)."""
    flush_rows: int = 200_000
    """Write when this many ticks are buffered ..."""
    flush_s: float = 2.0
    """... or when the oldest buffered tick is this old."""
    max_buffer_rows: int = 400_000
    """Never hold more ticks than this in memory: while flushes fail, reading stops here."""
    retry_max_s: float = 5.0
    """A failed flush is retried after 0.25 s, then twice as long each time, up to this."""
    questdb: str | None = None
    """QuestDB ILP conf, e.g. "http::addr=127.0.0.1:9000;" (also `infra.questdb` in config)."""
    s3: bool = True
    """Write the Delta Lake table to S3 when `infra.s3` / `infra.minio` is configured (whatever
    `format` says); false: keep the local store even then."""

    def __post_init__(self) -> None:
        if self.flush_rows < 1 or self.max_buffer_rows < 1:
            raise ValueError("flush_rows and max_buffer_rows must be at least 1")
        if not self.flush_s > 0 or not self.retry_max_s > 0:
            raise ValueError("flush_s and retry_max_s must be positive")


@dataclass
class Lane:
    """One partition of md.ticks this instance owns (the whole stream when it is not split): its
    worker, its store's commit log, and the entries buffered for its next flush."""

    p: int
    store: store.ParquetStore | store.DeltaStore
    committed: str | None
    worker: StreamWorker
    buffer: list[tuple[str, TickBatch]] = field(default_factory=list)
    held: set[bytes] = field(default_factory=set)  # the entry ids in the buffer
    rows: int = 0
    oldest: float = 0.0


class SinkTicksService(Service):
    name = "sink-ticks"
    Config = SinkTicksConfig
    reads = (Reads(streams.MD_TICKS, group=True),)
    secrets = (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)  # the S3 endpoint's, when one is configured
    exported = (
        Exported("rows_written", "Tick rows written to the store.", counter=True),
        Exported("files", "Files (commits) written to the store.", counter=True),
        Exported("buffered", "Rows buffered, not yet flushed."),
        Exported("flush_failures", "Flushes that failed (and are retried).", counter=True),
    )

    async def setup(self) -> None:
        data_dir = self.settings.resolved_data_dir()
        self.data_dir = data_dir
        self.n = self.settings.partition_count(streams.MD_TICKS)
        self.s3 = s3.configured(self.settings) if self.cfg.s3 else None
        if self.n > 1 and (self.s3 is not None or self.cfg.format == "delta"):
            raise ConfigError(
                f"sink-ticks writes a split md.ticks ([partitions] md.ticks = {self.n}) to the Parquet store "
                "only: each partition keeps a commit log of its own there; with format = delta or an S3 "
                "endpoint, leave md.ticks unsplit"
            )
        if self.s3 is not None:
            self.where = self.s3.where(store.DELTA_NAME)
        elif self.cfg.format == "delta":
            self.where = str(store.delta_dir(data_dir))
        else:
            self.where = str(store.ticks_dir(data_dir))
        self.lanes: dict[int, Lane] = {}
        self._opened: dict[int, tuple[store.ParquetStore | store.DeltaStore, str | None]] = {}
        if self.n == 1:  # the one store, opened now: a store that cannot be opened stops the start
            self._opened[0] = self._open(0)
        self.rows_written = 0
        self.files_written = 0
        self.skipped = 0
        self.settled = 0  # entries of commits a crash left unacked, acked on settling
        self.flush_failures = 0
        self._unreadable = False  # the last look at which entries the Delta table holds failed
        self.backoff = 0.0
        self.retry_at = 0.0
        self._last_failure_log = -60.0
        self._flushing = asyncio.Lock()
        self.questdb = None
        conf = self.cfg.questdb or self.settings.infra.get("questdb")
        if conf:
            from questdb.ingress import Sender

            if "::" not in conf:  # a plain URL: http://host:port
                conf = f"http::addr={conf.split('://', 1)[-1].rstrip('/')};"
            self.questdb = Sender.from_conf(conf)
            self.questdb.establish()
        # entries are acked only after the flush that stores them; the worker does not hand them
        # again meanwhile (in flight) and keeps other consumers from reclaiming them. A split
        # md.ticks: a lane per partition owned (its commits settled before its worker reads)
        self.parts = self.consume_partitions(
            streams.MD_TICKS,
            lambda p: partial(self.on_ticks, p),
            decode=TickBatch,
            on_acquire=self._acquired,
            on_release=self._released,
            count=128,
            block_ms=100,
            claim_idle_ms=int(max(60, self.cfg.flush_s * 10) * 1000),
            auto_ack=False,
        )
        self.every(0.2, self.flush_if_due)

    def _open(self, p: int) -> tuple[store.ParquetStore | store.DeltaStore, str | None]:
        """Partition p's store (the whole one unsplit) and its committed offset, interrupted
        commits finished."""
        st: store.ParquetStore | store.DeltaStore
        if self.s3 is not None:
            st = store.delta_store(self.data_dir, self.s3)
        elif self.cfg.format == "delta":
            st = store.delta_store(self.data_dir)
        else:
            lane = f"p{p}of{self.n}" if self.n > 1 else ""
            st = store.ParquetStore(store.ticks_dir(self.data_dir), lane=lane)
        try:
            return st, st.recover()
        except Exception as exc:  # deltalake raises OSError and its own: one clear line for S3
            if self.s3 is None:
                raise
            raise s3.S3Error(f"cannot open the tick store {self.where}: {s3.reason(exc)}") from None

    async def _acquired(self, p: int, token: int) -> None:
        """Partition p is ours: its store's commits that a crash left unacked are acked (and what
        they hold is never buffered) before its worker reads."""
        opened = self._opened.pop(p, None)
        st, committed = opened if opened is not None else await asyncio.to_thread(self._open, p)
        lane = Lane(p, st, committed, self.parts.owned[p].workers[0])
        self.lanes[p] = lane
        await self.settle(lane)

    async def _released(self, p: int) -> None:
        """Partition p goes to another instance (or the service stops): its buffer is stored
        first; what cannot be is left pending for the next owner (its commits settle it)."""
        lane = self.lanes.get(p)
        if lane is None:
            return
        await self.flush(lane, force=True)
        if lane.buffer:
            self.log.warning(
                "leaving partition %d with %d ticks unstored: they stay pending for the next owner", p, lane.rows
            )
        del self.lanes[p]

    # -- what the heartbeat says -------------------------------------------------------------------
    def processed(self) -> int:
        return self.rows_written

    def rate_window_s(self) -> float:
        # rows are written a flush at a time: averaged over several flushes, the rate is the rate
        return max(super().rate_window_s(), 5 * self.cfg.flush_s)

    @property
    def rows_buffered(self) -> int:
        return sum(lane.rows for lane in self.lanes.values())

    @property
    def committed(self) -> str | None:
        """The committed offset of the whole stream's store (unsplit; None before it is opened)."""
        lane = self.lanes.get(0)
        return lane.committed if lane is not None and self.n == 1 else None

    def metrics(self) -> dict[str, object]:
        committed: object = (
            self.committed if self.n == 1 else {str(p): lane.committed for p, lane in sorted(self.lanes.items())}
        )
        return {
            "rows_written": self.rows_written,
            "files": self.files_written,
            "buffered": self.rows_buffered,
            "max_buffer_rows": self.cfg.max_buffer_rows,
            "reading": not any(lane.worker.paused for lane in self.lanes.values()),
            "committed_id": committed,
            "skipped_entries": self.skipped,
            "settled_entries": self.settled,
            "flush_failures": self.flush_failures,
            "format": "delta" if self.s3 is not None else self.cfg.format,
            "store": self.where,
            "questdb": bool(self.questdb),
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
        }

    @property
    def flush_at_rows(self) -> int:
        return min(self.cfg.flush_rows, self.cfg.max_buffer_rows)

    def _pause_all(self) -> None:
        for lane in self.lanes.values():
            lane.worker.pause()

    # -- reading -----------------------------------------------------------------------------------
    async def on_ticks(self, p: int, batches: list[tuple[bytes, TickBatch]]) -> None:
        # Entries are buffered, not acked: they are acked by the flush that stores them.
        # a new entry at or below the committed offset: the group was set back (stored already);
        # one delivered again is stored if an unacked commit holds it (settled), or if a commit
        # that did not list its ids covers it (Delta Lake: the offset is all there is)
        lane = self.lanes[p]
        worker = lane.worker
        fresh = not worker.redelivered or not lane.store.tracks_acks
        offset = lane.committed if fresh else lane.store.untracked_offset
        known: set[str] | None = None  # Delta Lake, entries delivered again: what the table holds
        if worker.redelivered and isinstance(lane.store, store.DeltaStore):
            known = self._stored_ids(lane.store, [eid.decode() for eid, _ in batches if eid not in lane.held])
            if known is None:  # the table cannot be read now: these entries are read again later
                worker.release([eid for eid, _ in batches if eid not in lane.held])
                return
        stored: list[bytes] = []
        left: list[bytes] = []
        for i, (eid, batch) in enumerate(batches):
            if eid in lane.held:
                continue  # handed twice: it is in the buffer once, and its flush acks it
            sid = eid.decode()
            if sid in known if known is not None else stored_at(sid, offset):
                stored.append(eid)
                continue
            total = self.rows_buffered
            if total and total + batch.n > self.cfg.max_buffer_rows:
                left = [e for e, _ in batches[i:] if e not in lane.held]  # not taken: read again later
                break
            if not lane.buffer:
                lane.oldest = time.monotonic()
            lane.buffer.append((sid, batch))
            lane.held.add(eid)
            lane.rows += batch.n
        if stored:
            self.skipped += len(stored)
            await worker.ack(stored)
        if left:
            worker.release(left)
        if left or lane.rows >= self.flush_at_rows:
            await self.flush(lane)
        if self.rows_buffered and (left or self.rows_buffered >= self.cfg.max_buffer_rows):
            self._pause_all()  # at the bound: the flush that succeeds resumes reading

    def _stored_ids(self, st: store.DeltaStore, ids: list[str]) -> set[str] | None:
        """Which of `ids` the Delta table holds; None (degraded, with the reason) when it cannot be read."""
        try:
            known = st.stored_ids(ids)
        except Exception as exc:  # noqa: BLE001 - deltalake raises OSError and its own: read again later
            why = s3.reason(exc) if self.s3 is not None else f"{type(exc).__name__}: {exc}"
            self.degrade(f"cannot read the tick store {self.where}: {why}; the entries delivered again wait")
            self._unreadable = True
            return None
        if self._unreadable:
            self._unreadable = False
            if self.degraded and not self.retry_at:  # no failed flush pending either
                self.recover()
        return known

    # -- writing -----------------------------------------------------------------------------------
    async def flush_if_due(self) -> None:
        over = self.rows_buffered >= self.cfg.max_buffer_rows
        for lane in list(self.lanes.values()):
            if lane.buffer and (
                over or time.monotonic() - lane.oldest >= self.cfg.flush_s or lane.rows >= self.flush_at_rows
            ):
                await self.flush(lane)

    async def flush(self, lane: Lane, *, force: bool = False) -> bool:
        """Store the lane's buffer and ack its entries; False (buffer kept, degraded) if the write
        failed or a retry is not due yet (unless `force`)."""
        async with self._flushing:
            if not lane.buffer:
                return True
            if not force and time.monotonic() < self.retry_at:
                return False
            buf = lane.buffer
            sids = [sid for sid, _ in buf]
            first, last = min(sids, key=store.id_key), max(sids, key=store.id_key)
            table = store.to_table(buf)
            try:
                files = lane.store.write(table, first, last, ids=sids)
            except Exception as exc:  # noqa: BLE001 - ENOSPC or any other: keep the buffer, retry
                self._flush_failed(exc)
                return False
            # nothing was awaited since `buf` was taken: the buffer is exactly what was stored
            eids = [sid.encode() for sid in sids]
            lane.buffer, lane.rows = [], 0
            lane.held.difference_update(eids)
            if lane.committed is None or store.id_key(last) > store.id_key(lane.committed):
                lane.committed = last
            self.rows_written += table.num_rows
            self.files_written += len(files)
            await lane.worker.ack(eids)
            lane.store.acked(f"{first}_{last}")
            await self.settle(lane)  # commits another instance's crash left unacked, if any
            self.backoff, self.retry_at, self._last_failure_log = 0.0, 0.0, -60.0
            ok = self._to_questdb(table)
            if ok and self.degraded:
                self.recover()
            if self.rows_buffered < self.cfg.max_buffer_rows:
                for other in self.lanes.values():
                    other.worker.resume()
            return True

    def _flush_failed(self, exc: Exception) -> None:
        self.flush_failures += 1
        self.backoff = min(self.cfg.retry_max_s, max(0.25, self.backoff * 2))
        self.retry_at = time.monotonic() + self.backoff
        if no_space(exc):
            why = "no space left on device (ENOSPC)"
        elif self.s3 is not None:
            why = s3.reason(exc)
        else:
            why = f"{type(exc).__name__}: {exc}"
        self.degrade(
            f"cannot write the tick store {self.where}: {why}; flushes are retried and reading "
            f"stops at {self.cfg.max_buffer_rows} buffered ticks"
        )
        now = time.monotonic()
        if now - self._last_failure_log >= 60:  # the first failure, then once a minute
            self._last_failure_log = now
            self.log.warning(
                "flush of %d ticks failed (%s); retrying every %.2fs at most",
                self.rows_buffered,
                why,
                self.cfg.retry_max_s,
            )
        if self.rows_buffered >= self.cfg.max_buffer_rows:
            self._pause_all()

    def _to_questdb(self, table: pa.Table) -> bool:
        if self.questdb is None or table.num_rows == 0:
            return True
        try:
            df = table.to_pandas()
            self.questdb.dataframe(df.drop(columns=["stream_id"]), table_name="ticks", symbols=["symbol"], at="ts")
            self.questdb.flush()
        except Exception as exc:  # noqa: BLE001 - the ticks are in the store; QuestDB misses them
            self.degrade(f"cannot write to QuestDB: {type(exc).__name__}: {exc}")
            return False
        return True

    async def settle(self, lane: Lane) -> None:
        """Ack the entries of the lane's commits whose acks a crash cut off (stored: never to be
        delivered again), dropping any of them from its buffer, and mark those commits acked."""
        for commit in lane.store.unacked():
            eids = [i.encode() for i in commit.ids]
            await lane.worker.ack(eids)
            if lane.held.intersection(eids):
                done = set(eids)
                lane.buffer = [(sid, b) for sid, b in lane.buffer if sid.encode() not in done]
                lane.held -= done
                lane.rows = sum(b.n for _, b in lane.buffer)
            lane.store.acked(commit.stem)
            self.settled += len(eids)

    async def teardown(self) -> None:
        for lane in list(self.lanes.values()):
            await self.flush(lane, force=True)
        if self.rows_buffered:
            self.log.warning(
                "stopping with %d ticks unstored: they stay pending and are stored after the restart",
                self.rows_buffered,
            )
        if self.questdb is not None:
            self.questdb.close()


def stored_at(sid: str, offset: str | None) -> bool:
    """Entry `sid` is at or below the committed `offset` (stored, when commits are in order)."""
    return offset is not None and store.id_key(sid) <= store.id_key(offset)


def no_space(exc: BaseException) -> bool:
    """Whether a write failed for a full disk (pyarrow says so in its message)."""
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "no space left" in str(exc).lower())
