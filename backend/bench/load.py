"""Open-loop load for the trading benchmarks: send on a fixed schedule (never waiting for
replies) while a collector reads the replies, both on one uvloop event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from backend.bus import codec, streams


async def open_loop(
    url: str,
    stream: str,
    make: Callable[[int, int], Any],
    rate: float,
    seconds: float,
    batch_ms: float = 1.0,
    stop: asyncio.Event | None = None,
) -> int:
    """XADD make(i, now_ns) to `stream` at `rate`/s for `seconds` (or until `stop` is set);
    returns how many were sent.

    Every `batch_ms` the messages due so far go out in one pipeline, stamped when sent."""
    r = aioredis.Redis.from_url(url)
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    limit = streams.maxlen(stream)
    try:
        while True:
            now = time.perf_counter()
            if now >= end or (stop is not None and stop.is_set()):
                break
            due = int((now - start) * rate) - sent
            if due > 0:
                pipe = r.pipeline(transaction=False)
                for _ in range(due):
                    pipe.xadd(stream, codec.fields(make(sent, time.time_ns())), maxlen=limit, approximate=True)
                    sent += 1
                await pipe.execute()
            await asyncio.sleep(batch_ms / 1000)
    finally:
        await r.aclose()
    return sent


async def collect(url: str, stream: str, on_entry: Callable[[bytes, int], None],
                  stop: asyncio.Event, start_id: str = "$") -> None:
    """Read `stream` as entries arrive; on_entry(payload, received_ns) for each."""
    r = aioredis.Redis.from_url(url)
    cursor = start_id
    try:
        while not stop.is_set():
            resp = await r.xread({stream: cursor}, count=2000, block=50)
            now = time.time_ns()
            for _, items in resp or []:
                for eid, f in items:
                    cursor = eid
                    on_entry(codec.payload(f), now)
    finally:
        await r.aclose()
