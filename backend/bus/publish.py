"""Publishing: XADD with the one codec field and approximate MAXLEN trimming."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from backend.bus import codec, streams


async def publish(r: aioredis.Redis, stream: str, msg: Any) -> bytes:
    """XADD one message; trimmed with MAXLEN ~ per the stream's limit."""
    return await r.xadd(
        stream, codec.fields(msg), maxlen=streams.maxlen(stream), approximate=True
    )


async def publish_many(r: aioredis.Redis, stream: str, msgs: Iterable[Any]) -> int:
    """XADD many messages in one pipeline round trip."""
    n = 0
    limit = streams.maxlen(stream)
    async with r.pipeline(transaction=False) as pipe:
        for msg in msgs:
            pipe.xadd(stream, codec.fields(msg), maxlen=limit, approximate=True)
            n += 1
        if n:
            await pipe.execute()
    return n


def publish_sync(r: Any, stream: str, msg: Any) -> bytes:
    """XADD one message with a sync client (CLI commands)."""
    return r.xadd(stream, codec.fields(msg), maxlen=streams.maxlen(stream), approximate=True)
