"""Publishing: every XADD of ours goes through here, with the one codec field and the stream's
trimming (`streams.maxlen`: MAXLEN ~ n, or none at all for the event logs that are never trimmed).

Two shapes of the same command:
- `xadd(stream, msg)` / `xadd_fields(stream, fields)`: the raw command, for the fast connection
  (`Service.send`, a MULTI of raw commands), the fenced commit and the OMS's compare-and-set;
- `queue(pipe, stream, msg)` / `queue_fields(pipe, stream, fields)`: on a redis-py pipeline, or a
  client (sync or async: what its `xadd` returns is returned, so `await queue(r, ...)` publishes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import redis.asyncio as aioredis

from backend.bus import codec, streams

Arg = str | bytes | int | float


@lru_cache(maxsize=1024)
def trim(stream: str) -> tuple[Arg, ...]:
    """The trimming arguments of an XADD to `stream`: ("MAXLEN", "~", n), or () if never trimmed."""
    limit = streams.maxlen(stream)
    return ("MAXLEN", "~", limit) if limit else ()


@lru_cache(maxsize=1024)
def _head(stream: str) -> tuple[Arg, ...]:
    return ("XADD", stream, *trim(stream), "*", codec.FIELD)


def _trim_kw(stream: str) -> dict[str, Any]:
    limit = streams.maxlen(stream)
    return {"maxlen": limit, "approximate": True} if limit else {}


def xadd(stream: str, msg: Any) -> tuple[Arg, ...]:
    """The XADD of one message, trimmed as `stream` is, as a raw command."""
    return (*_head(stream), codec.encode(msg))


def xadd_fields(stream: str, fields: Mapping[Any, Any]) -> tuple[Arg, ...]:
    """The XADD of any fields (a dead letter, a raw frame), trimmed as `stream` is, as a raw command."""
    return ("XADD", stream, *trim(stream), "*", *(x for kv in fields.items() for x in kv))


def queue(pipe: Any, stream: str, msg: Any) -> Any:
    """XADD one message on a redis-py pipeline or client, trimmed as `stream` is."""
    return pipe.xadd(stream, codec.fields(msg), **_trim_kw(stream))


def queue_fields(pipe: Any, stream: str, fields: Mapping[Any, Any]) -> Any:
    """XADD any fields on a redis-py pipeline or client, trimmed as `stream` is."""
    return pipe.xadd(stream, dict(fields), **_trim_kw(stream))


async def publish(r: aioredis.Redis, stream: str, msg: Any) -> bytes:
    """XADD one message (async client); its entry id."""
    return await queue(r, stream, msg)


async def publish_many(r: aioredis.Redis, stream: str, msgs: Iterable[Any]) -> int:
    """XADD many messages in one pipeline round trip."""
    n = 0
    async with r.pipeline(transaction=False) as pipe:
        for msg in msgs:
            queue(pipe, stream, msg)
            n += 1
        if n:
            await pipe.execute()
    return n


def publish_sync(r: Any, stream: str, msg: Any) -> bytes:
    """XADD one message with a sync client (CLI commands)."""
    return queue(r, stream, msg)
