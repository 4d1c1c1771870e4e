"""Open-loop load for the trading benchmarks: send on a fixed schedule (never waiting for
replies) while a collector reads the replies, both on one uvloop event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from backend.bus import codec
from backend.bus.broadcast import Broadcast
from backend.bus.connection import env_login
from backend.bus.entries import Skips
from backend.bus.fastconn import FastRedis
from backend.bus.publish import xadd


async def open_loop(
    url: Any,
    stream: str,
    make: Callable[[int, int], Any],
    rate: float,
    seconds: float,
    batch_ms: float = 1.0,
    stop: asyncio.Event | None = None,
) -> int:
    """XADD make(i, now_ns) to `stream` at `rate`/s for `seconds` (or until `stop` is set);
    returns how many were sent.

    Every `batch_ms` the messages due so far go out in one pipeline, stamped when sent. `url`: a
    URL (logged in as this process was told), or a redis-py client to connect like (its login)."""
    r = await (FastRedis.connect(url, auth=env_login()) if isinstance(url, str) else FastRedis.like(url))
    sent = 0
    start = time.perf_counter()
    end = start + seconds
    try:
        while True:
            now = time.perf_counter()
            if now >= end or (stop is not None and stop.is_set()):
                break
            due = int((now - start) * rate) - sent
            if due > 0:
                await r.pipeline([xadd(stream, make(sent + k, time.time_ns())) for k in range(due)])
                sent += due
            await asyncio.sleep(batch_ms / 1000)
    finally:
        await r.aclose()
    return sent


async def collect(
    url: Any,
    stream: str,
    on_entry: Callable[[Any, int], None],
    stop: asyncio.Event,
    start_id: str = "$",
    *,
    decode: Any = None,
    skips: Skips | None = None,
) -> None:
    """Read `stream` as entries arrive; on_entry(payload, received_ns) for each, or with `decode=T`
    on_entry(message, received_ns) (what does not decode skipped, counted in `skips`). `url`: a
    URL or a redis-py client, as for open_loop."""
    reader = Broadcast(url, {stream: start_id}, count=2000, block_ms=50, min_interval_s=0, decode=decode, skips=skips)
    try:
        while not stop.is_set():
            got = await reader.read()
            now = time.time_ns()
            for _, _, f in got:
                on_entry(f if decode is not None else codec.payload(f), now)
    finally:
        await reader.close()
