"""Broadcast reads: every entry after the start, from several streams, none skipped between two
reads (a "$" cursor is resolved once, at the first read)."""

from __future__ import annotations

import redis.asyncio as aioredis

from backend.bus.broadcast import Broadcast
from tests.conftest import await_for


async def test_nothing_is_skipped_between_reads(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    await r.xadd("prices", {"d": b"before"})  # older than the start: not read
    b = Broadcast(r, {"prices": "$", "control": "0"}, block_ms=20, min_interval_s=0.0)
    seen: list[tuple[str, bytes]] = []

    async def read() -> bool:
        seen.extend((name, f[b"d"]) for name, _, f in await b.read())
        return bool(seen)

    try:
        await r.xadd("control", {"d": b"kill"})
        await await_for(read, what="the first entries")
        # written while no read is waiting: a "$" read again would miss them
        await r.xadd("prices", {"d": b"p1"})
        await r.xadd("prices", {"d": b"p2"})
        await await_for(lambda: read() if len(seen) < 3 else True, what="the entries between reads")
        assert sorted(seen) == [("control", b"kill"), ("prices", b"p1"), ("prices", b"p2")]
    finally:
        await b.close()
        await r.aclose()
