"""Publishing: every XADD of ours goes through here, with the one codec field and the stream's
trimming (`streams.maxlen`: MAXLEN ~ n, or none at all for the control-plane logs, which are archived
before they are trimmed), and its size limit: an entry whose encoded size is over its stream's
`streams.max_entry` is refused here (PayloadTooLarge, naming the stream, the size and the limit)
before anything is sent, so no producer can put an entry a thousand times the usual size on the bus.

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
from backend.errors import TradeopsError

Arg = str | bytes | int | float


class PayloadTooLarge(TradeopsError):
    """An entry larger than its stream allows (streams.max_entry), refused by the producer."""

    def __init__(self, stream: str, size: int, limit: int) -> None:
        self.stream, self.size, self.limit = stream, size, limit
        super().__init__(
            f"refused to publish to {stream}: the entry is {size:,} bytes, over the stream's limit of {limit:,} bytes"
        )


@lru_cache(maxsize=1024)
def limit(stream: str) -> int:
    """The largest encoded entry `stream` takes (its budget's max_entry)."""
    return streams.max_entry(stream)


def check(stream: str, size: int) -> None:
    """PayloadTooLarge if an entry of `size` bytes is over `stream`'s limit."""
    if size > limit(stream):
        raise PayloadTooLarge(stream, size, limit(stream))


def size_of(fields: Mapping[Any, Any]) -> int:
    """The encoded size of an entry's fields (names and values)."""
    return sum(_len(k) + _len(v) for k, v in fields.items())


def _len(x: Any) -> int:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return len(x)
    if isinstance(x, str):
        return len(x.encode())
    return len(str(x))


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
    data = codec.encode(msg)
    check(stream, len(data))
    return (*_head(stream), data)


def xadd_fields(stream: str, fields: Mapping[Any, Any]) -> tuple[Arg, ...]:
    """The XADD of any fields (a dead letter, a raw frame), trimmed as `stream` is, as a raw command."""
    check(stream, size_of(fields))
    return ("XADD", stream, *trim(stream), "*", *(x for kv in fields.items() for x in kv))


def queue(pipe: Any, stream: str, msg: Any) -> Any:
    """XADD one message on a redis-py pipeline or client, trimmed as `stream` is."""
    data = codec.encode(msg)
    check(stream, len(data))
    return pipe.xadd(stream, {codec.FIELD: data}, **_trim_kw(stream))


def queue_fields(pipe: Any, stream: str, fields: Mapping[Any, Any]) -> Any:
    """XADD any fields on a redis-py pipeline or client, trimmed as `stream` is."""
    check(stream, size_of(fields))
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
