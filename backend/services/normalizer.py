"""normalizer (P1): md.ticks.raw -> clean ticks (md.ticks, batched) + OHLCV bars (md.bars.1s,
md.bars.1m). Bad ticks go to dlq.md.ticks.raw, one entry each, with the raw tick and the reason.

One read of the raw stream becomes one commit: the clean TickBatch, the bars that closed, the
dead letters, the per-symbol trade-id high-water marks and the XACK, in one atomic step, so a
crash either did all of it or none (and the redelivered batch is then processed once). The commit
is fenced (backend/bus/fence.py): it happens only while the batch is still pending to this
instance, so when another instance of the group has taken it over (blue/green, after a crash or
a pause) the batch is published once, by whoever still owns it. A redelivered batch is older
than the high-water marks later batches raised: it is checked for repeats within itself only.
A raw batch that does not decode is dead-lettered by the worker before the read reaches us.

While two gateways publish (their blue/green overlap), the second copy of each trade is a repeat:
counted (`repeats` in the heartbeat) and acked with its batch, not dead-lettered; a batch
overtaken by the other gateway's newer one is late, not a duplicate (backend/marketdata/normalize.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from backend.bus import codec, deadletter, fence, partitions, replies, streams
from backend.bus.access import Keys, Reads, Scripts, Writes
from backend.bus.entries import decode_value
from backend.bus.publish import xadd
from backend.marketdata import raw as rawcols
from backend.marketdata.normalize import BarAggregator, TickValidator
from backend.marketdata.symbols import DEFAULT_SYMBOLS
from backend.messages import Bar, Instrument, RawTickBatch
from backend.metrics import Exported
from backend.refdata.master import KEY as INSTRUMENTS
from backend.services.base import Service

HWM_KEY = "normalizer:hwm"
BARS_KEY = "normalizer:bars"
"""The open bars (interval|symbol|start -> their state), per partition, written with each commit:
a bar open when its owner dies or hands its partition over is continued by the next, not cut."""


class NormalizerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    symbols: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    """Known symbols; ticks for any other are rejected. Empty list: accept every symbol."""
    max_future_s: float = 5.0
    """A trade stamped further ahead of our clock than this is rejected."""
    max_past_s: float = 3600.0
    """A trade stamped further behind our clock than this is rejected."""
    bar_grace_s: float = 0.25
    """How long after its end a bar waits for late ticks before it closes."""
    bar_max_delay_s: float = 2.0
    """Bars close by the wall clock at the latest this long after their end (+ grace)."""
    read_count: int = 64
    """Raw batches per read."""


class NormalizerService(Service):
    name = "normalizer"
    Config = NormalizerConfig
    reads = (Reads(streams.MD_TICKS_RAW, group=True),)
    writes = (Writes(streams.MD_TICKS), Writes(streams.MD_BARS_1S), Writes(streams.MD_BARS_1M))
    keys = (
        Keys(HWM_KEY, write=True),
        Keys(HWM_KEY + ":{p*}", write=True),
        Keys(BARS_KEY, write=True),
        Keys(BARS_KEY + ":{p*}", write=True),
        Keys(INSTRUMENTS),
    )
    exported = (
        Exported("ticks_out", "Clean ticks written to md.ticks.", counter=True),
        Exported("rejected", "Bad ticks dead-lettered with their reason.", counter=True),
        Exported("repeats", "Ticks dropped as repeats of a trade id already seen.", counter=True),
        Exported("bars_out", "OHLCV bars closed and written.", counter=True),
        Exported("late_ticks", "Ticks that arrived after their bar closed.", counter=True),
        Exported("open_bars", "Bars open now."),
    )
    scripts = (Scripts((streams.MD_TICKS_RAW,)),)  # the fenced commit (backend/bus/fence.py)

    async def setup(self) -> None:
        c = self.cfg
        symbols = list(c.symbols)
        # refdata's instrument master, when it is running, adds what it lists as trading
        for raw in (await self.r.hgetall(INSTRUMENTS)).values():
            inst = decode_value(replies.blob(raw), Instrument)
            if inst is None:
                self.skips.add(INSTRUMENTS)
            elif symbols and inst.status == "trading" and inst.symbol not in symbols:
                symbols.append(inst.symbol)
        self.validator = TickValidator(symbols or None, max_future_s=c.max_future_s, max_past_s=c.max_past_s)
        self.bars = BarAggregator(grace_s=c.bar_grace_s, max_delay_s=c.bar_max_delay_s)
        self.ticks_in = self.ticks_out = self.rejected = self.bars_out = self.repeats = 0
        self.batch_lat = self.recorder("batch")  # a batch of raw entries: read to committed
        self.n = self.settings.partition_count(streams.MD_TICKS_RAW)
        self.tagged = partitions.on_cluster(self.r)  # a cluster: even one partition's keys share a slot
        self.fences: dict[int, fence.Fence] = {}
        self.taken_over = self.lease_lost = 0  # batches fenced off by fences no longer in use
        self.parts = self.consume_partitions(
            streams.MD_TICKS_RAW,
            lambda p: partial(self.on_raw, p),
            decode=RawTickBatch,
            what="raw batch",
            count=c.read_count,
            block_ms=50,
            on_acquire=self._acquired,
            on_release=self._released,
        )
        self.stale_bars: set[int] = set()  # partitions whose open bars must be read again (a commit failed)
        self.every(0.1, self.close_bars)

    async def _acquired(self, p: int, token: int) -> None:
        """Partition p is ours: its fence (with its lease), its symbols' high-water marks and
        their open bars."""
        stream = partitions.name(streams.MD_TICKS_RAW, p, self.n, tagged=self.tagged)
        call = partial(self.call_at, stream)  # the partition's slot (a cluster's node)
        self.fences[p] = fence.Fence(call, stream, self.name, self.instance, lease=self.parts.lease(p))
        marks = await self.r.hgetall(hwm_key(p, self.n, self.tagged))
        self.validator.load_hwm({replies.text(k): int(v) for k, v in marks.items()})
        await self._load_bars(p)

    async def _load_bars(self, p: int) -> None:
        """Partition p's open bars as its last commit left them (in memory: replaced)."""
        self.stale_bars.discard(p)
        mine = self._in_partition(p)
        self.bars.drop(lambda s: mine is not None and not mine(s), self.validator.symbols)
        raw = await self.r.hgetall(bars_key(p, self.n, self.tagged))
        self.bars.load({replies.text(k): replies.blob(v) for k, v in raw.items()}, self.validator.code_of)

    async def _released(self, p: int) -> None:
        f = self.fences.pop(p, None)
        if f is not None:
            self.taken_over += f.refused
            self.lease_lost += f.lease_lost
        self._forget_bars(p)

    def _forget_bars(self, p: int) -> None:
        """Partition p's open bars are not ours to close (another owner's, or to be read again)."""
        mine = self._in_partition(p)
        self.bars.drop(lambda s: mine is not None and not mine(s), self.validator.symbols)

    def processed(self) -> int:
        return self.ticks_in

    def metrics(self) -> dict[str, object]:
        return {
            "ticks_in": self.ticks_in,
            "ticks_out": self.ticks_out,
            "rejected": self.rejected,
            "repeats": self.repeats,
            "bars_out": self.bars_out,
            "late_ticks": self.bars.late_ticks,
            "max_lateness_ms": self.bars.max_lateness_ns / 1e6,
            "open_bars": len(self.bars.open),
            "taken_over": self.taken_over + sum(f.refused for f in self.fences.values()),
            "lease_lost": self.lease_lost + sum(f.lease_lost for f in self.fences.values()),
            **({"partitions": self.parts.partitions(), "of": self.n} if self.n > 1 else {}),
        }

    async def on_raw(self, p: int, raw: list[tuple[bytes, RawTickBatch]]) -> None:
        if p in self.stale_bars:
            await self._load_bars(p)
        now = time.time_ns()
        part = self.parts.owned[p]
        t0 = time.perf_counter_ns()
        ids = [eid for eid, _ in raw]
        batches = [b for _, b in raw]
        cmds: list[fence.Command] = []
        result = self.validator.validate(batches, now, normalized_ns=now, check_hwm=not part.workers[0].redelivered)
        for rej in result.rejected:
            tick = rawcols.tick_at(batches[rej.batch], rej.index)
            cmds.append(
                deadletter.xadd(
                    part.stream,
                    codec.fields(tick),
                    rej.reason,
                    eid=ids[rej.batch],
                    group=self.name,
                    consumer=self.instance,
                )
            )
        bars: list[Bar] = []
        if result.ticks is not None:
            cmds.append(xadd(self._out(streams.MD_TICKS, p), result.ticks))
            self.bars.add(result.sym, result.price, result.qty, result.trade_ns, now)
            bars = self.bars.close_due(self.validator.symbols, now, only=self._in_partition(p))
            cmds += [xadd(self._bar_stream(b), b) for b in bars]
            marks = self.validator.hwm_map()
            if self.n > 1:  # this partition's symbols only (the key is in the partition's slot)
                marks = {s: m for s, m in marks.items() if partitions.partition_of(s, self.n) == p}
            cmds.append(["HSET", hwm_key(p, self.n, self.tagged), *(x for kv in marks.items() for x in kv)])
        cmds += self._bar_state(p)
        try:
            committed = await self.fences[p].commit(ids, cmds)
        except BaseException:
            self.stale_bars.add(p)  # the batch comes again: its bars are read again, not counted twice
            self._forget_bars(p)
            raise
        if not committed:
            # taken over: the new owner continues these bars from the last commit's state, with
            # these ticks; this instance forgets them (and reads them again if p comes back)
            self.log.warning("%d raw batches were taken over by another instance; not published here", len(raw))
            self._forget_bars(p)
            self.stale_bars.add(p)
            return
        self.bars_out += len(bars)
        n_in = sum(b.n for b in batches)
        self.ticks_in += n_in
        self.rejected += len(result.rejected)
        self.repeats += result.repeats
        self.ticks_out += result.ticks.n if result.ticks is not None else 0
        self.batch_lat.record_ns(time.perf_counter_ns() - t0)

    def _out(self, stream: str, p: int) -> str:
        """Where partition p's output goes: the same partition of `stream` when `stream` is split
        alike (what a Redis Cluster needs: one slot per commit), else `stream` itself."""
        alike = (self.n > 1 or self.tagged) and self.settings.partition_count(stream) == self.n
        return partitions.name(stream, p, self.n, tagged=self.tagged) if alike else stream

    def _bar_stream(self, bar: Bar) -> str:
        stream = streams.MD_BARS_1S if bar.interval == "1s" else streams.MD_BARS_1M
        return self._out(stream, partitions.partition_of(bar.symbol, self.n))

    def _in_partition(self, p: int) -> Callable[[str], bool] | None:
        """Which symbols' bars partition p's commit may close (all of them without partitions)."""
        if self.n == 1:
            return None
        return lambda s: partitions.partition_of(s, self.n) == p

    def _bar_state(self, p: int) -> list[list[Any]]:
        """The commands that keep partition p's open bars in Redis as this commit leaves them."""
        opened, closed = self.bars.state(self.validator.symbols, self._in_partition(p))
        key = bars_key(p, self.n, self.tagged)
        cmds: list[list[Any]] = []
        if opened:
            cmds.append(["HSET", key, *(x for kv in opened.items() for x in kv)])
        if closed:
            cmds.append(["HDEL", key, *closed])
        return cmds

    async def close_bars(self) -> None:
        """Close bars on their boundary even when no tick arrives: partition by partition, each
        in a fenced commit (the bars out and their state gone, only while the partition is ours)."""
        now = time.time_ns()
        for p in self.parts.partitions():
            f = self.fences.get(p)
            if f is None or p in self.stale_bars:
                continue
            bars = self.bars.close_due(self.validator.symbols, now, only=self._in_partition(p))
            if not bars:
                continue
            cmds: list[fence.Command] = [xadd(self._bar_stream(b), b) for b in bars]
            cmds += self._bar_state(p)
            try:
                committed = await f.commit([], cmds)
            except BaseException:
                self.stale_bars.add(p)
                self._forget_bars(p)
                raise
            if committed:
                self.bars_out += len(bars)
            else:  # the lease moved on: the new owner closes them
                self._forget_bars(p)
                self.stale_bars.add(p)


def bars_key(p: int, n: int, tagged: bool = False) -> str:
    """Partition p's open bars (the whole stream's when n is 1)."""
    return partitions.name(BARS_KEY, p, n, tagged=tagged)


def hwm_key(p: int, n: int, tagged: bool = False) -> str:
    """The trade-id high-water marks of partition p's symbols (the whole stream's when n is 1)."""
    return partitions.name(HWM_KEY, p, n, tagged=tagged)
