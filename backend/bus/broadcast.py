"""Streams every instance reads in full (prices, fills, control commands): XREAD from cursors, no
consumer group, on a connection of its own (a blocking read holds it).

Reads are paced: at most one every `min_interval_s`, so at a high tick rate one wake-up carries
everything since the last instead of one wake-up per entry (each costs more than the entry). A
cursor given as "$" starts at the stream's newest entry at the first read, and from then on no
entry is skipped between two reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from backend.bus.fastconn import FastRedis, stream_entries

log = logging.getLogger("tradeops.broadcast")

Item = tuple[str, bytes, dict[bytes, bytes]]  # (stream, entry id, fields)


class Broadcast:
    def __init__(self, r: Any, cursors: dict[str, str], *, count: int = 1000, block_ms: int = 100,
                 min_interval_s: float = 0.005) -> None:
        self.r = r  # the service's redis-py client: where to connect
        self.cursors: dict[str, str | bytes] = dict(cursors)
        self.count = count
        self.block_ms = block_ms
        self.min_interval_s = min_interval_s
        self._conn: FastRedis | None = None
        self._last = 0.0

    async def read(self) -> list[Item]:
        """The entries since the last read (waits up to block_ms for one); [] while Redis is away."""
        wait = self._last + self.min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await FastRedis.like(self.r)
            await self._resolve_newest()
            names = list(self.cursors)
            reply = await self._conn.call("XREAD", "COUNT", self.count, "BLOCK", self.block_ms, "STREAMS",
                                          *names, *[self.cursors[n] for n in names])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("broadcast read failed: %s; retrying", exc)
            await self.close()
            await asyncio.sleep(0.5)
            return []
        for stream, items in reply or ():  # cursors past every entry, deleted ones too
            self.cursors[stream.decode()] = items[-1][0]
        return [(stream.decode(), eid, fields) for stream, eid, fields in stream_entries(reply)]

    async def _resolve_newest(self) -> None:
        assert self._conn is not None
        for name, cur in self.cursors.items():
            if cur == "$":
                last = await self._conn.call("XREVRANGE", name, "+", "-", "COUNT", 1)
                self.cursors[name] = last[0][0] if last else b"0-0"

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None
