"""Streams every instance reads in full (prices, fills, control commands, the registry's and the
gates' events): XREAD from cursors, no consumer group. Every such read of ours goes through here.

`Broadcast` (asyncio) reads on a connection of its own (a blocking read holds it); `BroadcastSync`
does the same with a sync redis-py client (CLI commands, the console's poll thread).

Reads are paced: at most one every `min_interval_s`, so at a high tick rate one wake-up carries
everything since the last instead of one wake-up per entry (each costs more than the entry). A
cursor given as "$" starts at the stream's newest entry when it is resolved (`start()`, else the
first read), and from then on no entry is skipped between two reads. `block_ms=None` reads
without waiting (a periodic look).

Given `decode=T` (or `{stream: T}`), a read returns `(stream, id, message)`: one msgspec decoder
per type, built once. An entry that does not decode (backend/bus/entries.py says when) is skipped
and counted in `skipped` (and, per stream, in `skips`: a tally the reader may share with its
owner's other reads), never dead-lettered: a broadcast stream belongs to whoever consumes it in
its group.

A stream split into partitions (this process's layout: backend/bus/partitions.py) is read whole:
its cursor becomes one per partition, read in the same XREAD, and its items carry the stream's
own name (an account's or a symbol's entries are in one partition, in order; entries of different
partitions come in no set order). On a Redis Cluster one XREAD names the streams of one slot only:
the streams are read slot by slot, on a connection per primary, all at once and without blocking
(a blocking read would wait on one of them), paced to every 20 ms while nothing comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from backend.bus import codec, outage, partitions
from backend.bus.entries import UNDECODABLE, Skips, payload, reason
from backend.bus.fastconn import FastRedis, refresh_slots, stream_entries
from backend.bus.outage import redis_away

log = logging.getLogger("tradeops.broadcast")

Item = tuple[str, bytes, Any]  # (stream, entry id, fields, or the decoded message with decode=)


class _Cursors:
    """What both readers share: the cursors, and decoding what was read."""

    skip_level = logging.WARNING  # a service's log says which entry it skipped, and why

    def __init__(
        self,
        cursors: Mapping[str, str | bytes],
        count: int,
        block_ms: int | None,
        decode: Any,
        skips: Skips | None,
        tagged: bool = False,
    ) -> None:
        self.cursors: dict[str, str | bytes] = {}
        self.base: dict[str, str] = {}
        """Partition -> the stream it is part of (for the streams read in partitions)."""
        for stream, cur in cursors.items():
            n = partitions.count(stream)
            if n == 1 and not (tagged and partitions.partitionable(stream)):
                self.cursors[stream] = cur
                continue
            for name in partitions.names(stream, n, tagged=tagged):
                self.cursors[name] = cur
                self.base[name] = stream
        self.count = count
        self.block_ms = block_ms
        if decode is None:
            self._decoders: dict[str, Any] | None = None
        elif isinstance(decode, Mapping):
            self._decoders = {s: codec.decoder(t).decode for s, t in decode.items()}
        else:
            self._decoders = {s: codec.decoder(decode).decode for s in cursors}
        if self._decoders is not None:
            self._decoders.update({name: self._decoders[b] for name, b in self.base.items() if b in self._decoders})
        self.skipped = 0  # entries that did not decode
        self.skips = skips if skips is not None else Skips()  # the same, per stream

    def _args(self) -> list[Any]:
        """The raw XREAD command from the cursors."""
        names = list(self.cursors)
        args: list[Any] = ["XREAD", "COUNT", self.count]
        if self.block_ms is not None:
            args += ["BLOCK", self.block_ms]
        return [*args, "STREAMS", *names, *[self.cursors[n] for n in names]]

    def _items(self, reply: Any) -> list[Item]:
        """A raw XREAD reply -> items; the cursors move past every entry read."""
        for stream, items in reply or ():  # cursors past every entry, deleted ones too
            self.cursors[stream.decode()] = items[-1][0]
        return self._decoded(stream_entries(reply))

    def seed(self, stream: str, entries: list[tuple[bytes, dict[Any, Any]]]) -> list[Item]:
        """Entries of `stream` read another way, oldest first (its newest few, by XREVRANGE, for a
        reader that starts with them), decoded and counted as a read would; the reader reads on
        after the last of them (from the stream's start when there are none)."""
        self.cursors[stream] = entries[-1][0] if entries else b"0-0"
        return self._decoded([(stream.encode(), eid, fields) for eid, fields in entries if fields is not None])

    def _decoded(self, got: list[tuple[bytes, bytes, dict[bytes, bytes]]]) -> list[Item]:
        base = self.base
        if self._decoders is None:
            return [(base.get(n := name.decode(), n), eid, fields) for name, eid, fields in got]
        out: list[Item] = []
        decoders = self._decoders
        for s, eid, fields in got:
            stream = s.decode()
            try:
                out.append((base.get(stream, stream), eid, decoders[stream](payload(fields))))
            except UNDECODABLE as exc:
                self.skipped += 1
                self.skips.add(stream)
                log.log(self.skip_level, "skipping undecodable %s entry %s: %s", stream, eid.decode(), reason(exc))
        return out


class Broadcast(_Cursors):
    def __init__(
        self,
        r: Any,
        cursors: Mapping[str, str | bytes],
        *,
        count: int = 1000,
        block_ms: int | None = 100,
        min_interval_s: float = 0.005,
        decode: Any = None,
        skips: Skips | None = None,
    ) -> None:
        super().__init__(cursors, count, block_ms, decode, skips, partitions.on_cluster(r))
        self.r = r  # where to connect: a redis-py client (the service's), or a redis:// URL
        self.min_interval_s = min_interval_s
        self._conn: FastRedis | None = None
        self._last = 0.0
        self.cluster = partitions.on_cluster(r)
        self._at: dict[str, FastRedis] = {}  # on a cluster: a connection per primary read

    async def _connect(self) -> FastRedis:
        if self._conn is None or self._conn.closed:
            if isinstance(self.r, str):  # a URL: logged in as this process was told (TRADEOPS_REDIS_USER)
                from backend.bus.connection import env_login

                self._conn = await FastRedis.connect(self.r, auth=env_login())
            else:
                self._conn = await FastRedis.like(self.r)
        return self._conn

    async def start(self) -> None:
        """Resolve "$" cursors now: what is added from here on is read."""
        if self.cluster:
            for (node, _), names in self._by_slot().items():
                conn = self._at.get(node)
                if conn is None or conn.closed:
                    conn = self._at[node] = await FastRedis.like(self.r, names[0])
                await self._resolve_newest(conn, names)
            return
        await self._resolve_newest(await self._connect())

    async def read(self) -> list[Item]:
        """The entries since the last read (waits up to block_ms for one); [] while Redis is away."""
        wait = self._last + self.min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = time.monotonic()
        if self.cluster:
            return await self._read_cluster()
        try:
            conn = await self._connect()
            await self._resolve_newest(conn)
            reply = await conn.call(*self._args())
        except outage.CAUGHT as exc:
            if not redis_away(exc):
                raise
            log.warning("broadcast read failed: %s; retrying", exc)
            await self.close()
            await asyncio.sleep(0.5)
            return []
        return self._items(reply)

    async def _resolve_newest(self, conn: FastRedis, names: list[str] | None = None) -> None:
        for name in names if names is not None else list(self.cursors):
            if self.cursors[name] == "$":
                last = await conn.call("XREVRANGE", name, "+", "-", "COUNT", 1)
                self.cursors[name] = last[0][0] if last else b"0-0"

    def _by_slot(self) -> dict[tuple[str, int], list[str]]:
        """The cursors' streams grouped by (node, slot): one XREAD may name keys of one slot only."""
        groups: dict[tuple[str, int], list[str]] = defaultdict(list)
        for name in self.cursors:
            groups[(self.r.get_node_from_key(name).name, self.r.keyslot(name))].append(name)
        return groups

    async def _read_cluster(self) -> list[Item]:
        try:
            groups = self._by_slot().items()
            replies = await asyncio.gather(*(self._read_at(node, names) for (node, _), names in groups))
        except outage.CAUGHT as exc:
            if not redis_away(exc):
                raise
            log.warning("broadcast read failed: %s; retrying", exc)
            await self.close()
            await refresh_slots(self.r)
            await asyncio.sleep(0.5)
            return []
        items = [item for reply in replies for item in self._items(reply)]
        if not items and self.block_ms:
            await asyncio.sleep(min(self.block_ms, 20) / 1000)
        return items

    async def _read_at(self, node: str, names: list[str]) -> Any:
        conn = self._at.get(node)
        if conn is None or conn.closed:
            conn = self._at[node] = await FastRedis.like(self.r, names[0])
        for name in names:
            if self.cursors[name] == "$":
                last = await conn.call("XREVRANGE", name, "+", "-", "COUNT", 1)
                self.cursors[name] = last[0][0] if last else b"0-0"
        return await conn.call("XREAD", "COUNT", self.count, "STREAMS", *names, *[self.cursors[n] for n in names])

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None
        for conn in self._at.values():
            await conn.aclose()
        self._at.clear()


class BroadcastSync(_Cursors):
    """The same reads with a sync redis-py client (errors are the caller's: a CLI reports them).
    Skipped entries are logged at debug only: a CLI prints its `skips` as one note per stream,
    the console shows them in its alerts."""

    skip_level = logging.DEBUG

    def __init__(
        self,
        r: Any,
        cursors: Mapping[str, str | bytes],
        *,
        count: int = 1000,
        block_ms: int | None = None,
        decode: Any = None,
        skips: Skips | None = None,
    ) -> None:
        super().__init__(cursors, count, block_ms, decode, skips, partitions.on_cluster(r))
        self.r = r

    def start(self) -> None:
        """Resolve "$" cursors now: what is added from here on is read."""
        for name, cur in self.cursors.items():
            if cur == "$":
                last = self.r.xrevrange(name, count=1)
                self.cursors[name] = last[0][0] if last else b"0-0"

    def read(self) -> list[Item]:
        """The entries since the last read (waits up to block_ms for one when given)."""
        self.start()
        reply = self.r.xread(dict(self.cursors), count=self.count, block=self.block_ms)
        got: list[tuple[bytes, bytes, dict[bytes, bytes]]] = []
        for stream, items in reply or ():
            name = stream if isinstance(stream, bytes) else stream.encode()
            if items:
                self.cursors[name.decode()] = items[-1][0]
            got += [(name, eid, fields) for eid, fields in items if fields is not None]
        return self._decoded(got)


def newest_sync(r: Any, stream: str, count: int) -> list[tuple[bytes, dict[Any, Any]]]:
    """The newest `count` entries of `stream`, oldest first, with a sync client: of each of its
    partitions when this process's layout splits it, merged by entry id (Redis's clock)."""
    from backend.bus import replies

    n = partitions.count(stream)
    tagged = partitions.on_cluster(r) and partitions.partitionable(stream)
    names = partitions.names(stream, n, tagged=tagged)
    got = [e for name in names for e in replies.entries(r.xrevrange(name, count=count))]
    got.sort(key=lambda e: tuple(int(x) for x in e[0].split(b"-")))
    return got[-count:] if count else got
