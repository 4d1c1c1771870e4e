"""Publishing: every XADD of ours goes through here, with the one codec field and the stream's
trimming (`streams.maxlen`: MAXLEN ~ n, or none at all for the control-plane logs, which are archived
before they are trimmed), and its size limit: an entry whose encoded size is over its stream's
`streams.max_entry` is refused here (PayloadTooLarge, naming the stream, the size and the limit)
before anything is sent, so no producer can put an entry a thousand times the usual size on the bus.

A stream with copies (`streams.COPIES`: exec.reports -> exec.reports.ptrc, so that each stream
consumed in groups has one consuming service) is never written alone: each entry goes to the
stream and to each copy, trimmed alike, in one MULTI, so a crash leaves it everywhere or nowhere
and every copy holds the stream's entries in the stream's order (each has its own entry ids).

Two shapes of the same command:
- `xadd(stream, msg)` / `xadd_fields(stream, fields)`: the raw command, for the fast connection
  (`Service.send`, a MULTI of raw commands), the fenced commit and the OMS's compare-and-set;
  `xadds(stream, msg)` / `xadds_fields(stream, fields)`: the raw commands for a stream and its
  copies, to be sent inside one MULTI (or a fenced commit); `xadd` refuses a stream with copies
  (`CopiesLeftOut`), so no producer can leave a copy out;
- `queue(pipe, stream, msg)` / `queue_fields(pipe, stream, fields)`: on a redis-py pipeline, or a
  client (sync or async: what its `xadd` returns is returned, so `await queue(r, ...)` publishes).
  For a stream with copies: on a MULTI pipeline (transaction=True) the XADDs are queued together;
  on a client they are sent in a MULTI of their own (the stream's entry id is returned); a
  pipeline that is not a MULTI is refused (`CopiesLeftOut`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio as aioredis

from backend.bus import codec, partitions, streams
from backend.errors import TradeopsError

Arg = str | bytes | int | float


class PayloadTooLarge(TradeopsError):
    """An entry larger than its stream allows (streams.max_entry), refused by the producer."""

    def __init__(self, stream: str, size: int, limit: int) -> None:
        self.stream, self.size, self.limit = stream, size, limit
        super().__init__(
            f"refused to publish to {stream}: the entry is {size:,} bytes, over the stream's limit of {limit:,} bytes"
        )


class Unroutable(TradeopsError):
    """A message for a partitioned stream without the key it is routed by."""

    def __init__(self, stream: str, msg: object) -> None:
        self.stream = stream
        super().__init__(
            f"refused to publish {type(msg).__name__} to {stream}: the stream is split into "
            f"{partitions.count(stream)} partitions by {partitions.ROUTE_KEY.get(stream, 'key')}, and the message "
            f"names none (a cancel names its order's account)"
        )


def routed(stream: str, msg: object, *, tagged: bool = False) -> str:
    """The stream `msg` goes to: `stream` itself, or, when this process's layout splits it
    (backend/bus/partitions.py), the partition of the message's key. A partition's name, or a
    stream whose producer routes for itself (market data), is left as it is."""
    n = partitions.count(stream)
    if (n == 1 and not tagged) or stream not in partitions.ROUTE_KEY:
        return stream
    key = partitions.key_of(stream, msg)
    if key is None:
        raise Unroutable(stream, msg)
    return partitions.route(stream, key, n, tagged=tagged)


class CopiesLeftOut(TradeopsError):
    """A stream with copies written in a way that would leave them out (a lone XADD, a pipeline
    that is not a MULTI): a bug in the producer."""

    def __init__(self, stream: str, how: str) -> None:
        self.stream = stream
        super().__init__(
            f"refused to publish to {stream} {how}: it has copies ({', '.join(streams.copies(stream))}) that must be "
            "written with each entry in one MULTI (publish.xadds, or queue on a MULTI pipeline or a client)"
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


@lru_cache(maxsize=1024)
def _targets(stream: str) -> tuple[str, ...]:
    return (stream, *streams.copies(stream))


def _alone(stream: str) -> None:
    if streams.copies(stream):
        raise CopiesLeftOut(stream, "with a lone XADD")


def xadd(stream: str, msg: Any) -> tuple[Arg, ...]:
    """The XADD of one message, trimmed as `stream` is, as a raw command (CopiesLeftOut for a
    stream with copies: use `xadds`); to its key's partition when the process's layout splits
    the stream (a service writing a partition names it)."""
    stream = routed(stream, msg)
    _alone(stream)
    data = codec.encode(msg)
    check(stream, len(data))
    return (*_head(stream), data)


def xadd_fields(stream: str, fields: Mapping[Any, Any]) -> tuple[Arg, ...]:
    """The XADD of any fields (a dead letter, a raw frame), trimmed as `stream` is, as a raw command
    (CopiesLeftOut for a stream with copies: use `xadds_fields`)."""
    _alone(stream)
    check(stream, size_of(fields))
    return ("XADD", stream, *trim(stream), "*", *(x for kv in fields.items() for x in kv))


def xadds(stream: str, msg: Any) -> list[tuple[Arg, ...]]:
    """The XADDs of one message to `stream` and to each of its copies, trimmed alike, as raw
    commands to send inside one MULTI (or a fenced commit) with the rest of the step."""
    stream = routed(stream, msg)
    data = codec.encode(msg)
    check(stream, len(data))
    return [(*_head(s), data) for s in _targets(stream)]


def xadds_fields(stream: str, fields: Mapping[Any, Any]) -> list[tuple[Arg, ...]]:
    """`xadds` of any fields."""
    check(stream, size_of(fields))
    flat = tuple(x for kv in fields.items() for x in kv)
    return [("XADD", s, *trim(s), "*", *flat) for s in _targets(stream)]


def queue(pipe: Any, stream: str, msg: Any) -> Any:
    """XADD one message on a redis-py pipeline or client, trimmed as `stream` is (and to its
    copies: see the module's docstring); to its key's partition when the stream is split."""
    stream = routed(stream, msg, tagged=partitions.on_cluster(pipe))
    data = codec.encode(msg)
    check(stream, len(data))
    return _queue(pipe, stream, {codec.FIELD: data})


def queue_fields(pipe: Any, stream: str, fields: Mapping[Any, Any]) -> Any:
    """XADD any fields on a redis-py pipeline or client, trimmed as `stream` is (and to its
    copies)."""
    check(stream, size_of(fields))
    return _queue(pipe, stream, dict(fields))


def _queue(pipe: Any, stream: str, fields: dict[Any, Any]) -> Any:
    if not streams.copies(stream):
        return pipe.xadd(stream, fields, **_trim_kw(stream))
    if isinstance(pipe, (redis.client.Pipeline, aioredis.client.Pipeline)):
        if not (pipe.transaction or pipe.explicit_transaction):
            raise CopiesLeftOut(stream, "on a pipeline that is not a MULTI")
        for s in _targets(stream):
            pipe.xadd(s, fields, **_trim_kw(s))
        return pipe
    if isinstance(pipe, aioredis.Redis):
        return _multi_async(pipe, stream, fields)
    with pipe.pipeline(transaction=True) as p:
        for s in _targets(stream):
            p.xadd(s, fields, **_trim_kw(s))
        return p.execute()[0]


async def _multi_async(r: aioredis.Redis, stream: str, fields: dict[Any, Any]) -> Any:
    async with r.pipeline(transaction=True) as p:
        for s in _targets(stream):
            p.xadd(s, fields, **_trim_kw(s))
        return (await p.execute())[0]


async def publish(r: aioredis.Redis, stream: str, msg: Any) -> bytes:
    """XADD one message (async client); its entry id."""
    return await queue(r, stream, msg)


async def publish_many(r: aioredis.Redis, stream: str, msgs: Iterable[Any]) -> int:
    """XADD many messages in one pipeline round trip (a MULTI when the stream has copies)."""
    n = 0
    async with r.pipeline(transaction=bool(streams.copies(stream))) as pipe:
        for msg in msgs:
            queue(pipe, stream, msg)
            n += 1
        if n:
            await pipe.execute()
    return n


def publish_sync(r: Any, stream: str, msg: Any) -> bytes:
    """XADD one message with a sync client (CLI commands)."""
    return queue(r, stream, msg)
