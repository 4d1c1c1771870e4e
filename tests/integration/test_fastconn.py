"""The lean hot-path connection: replies in order, error replies raised without desyncing the
connection, a lost connection fails the waiting calls with a ConnectionError, unix sockets and db."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from backend.bus import streams
from backend.bus.embedded import EmbeddedRedis, local_url
from backend.bus.fastconn import FastRedis, entries
from backend.bus.publish import xadd


async def test_pipeline_replies_in_order_and_errors_do_not_desync(redis_url: str) -> None:
    conn = await FastRedis.connect(redis_url)
    try:
        assert await conn.pipeline([("SET", "a", 1), ("INCR", "a"), ("GET", "a")]) == [b"OK", 2, b"2"]
        with pytest.raises(ResponseError, match=r"WRONGTYPE|not an integer"):
            await conn.pipeline([("SET", "s", "x"), ("INCR", "s"), ("SET", "after", "ok")])
        assert await conn.call("GET", "after") == b"ok"  # the reply after the error was read
        replies = await conn.pipeline([("INCR", "s"), ("PING",)], raise_on_error=False)
        assert isinstance(replies[0], ResponseError) and replies[1] == b"PONG"
        await conn.call(*xadd(streams.ORDERS_NEW, {"x": 1}))
        got = entries(await conn.call("XREAD", "COUNT", 10, "STREAMS", streams.ORDERS_NEW, "0"))
        assert len(got) == 1 and b"d" in got[0][1]
    finally:
        await conn.aclose()


async def test_a_lost_connection_fails_the_call(redis_url: str) -> None:
    conn = await FastRedis.connect(redis_url)
    r = aioredis.Redis.from_url(redis_url)
    try:
        me = await conn.call("CLIENT", "ID")
        await r.client_kill_filter(_id=me)
        with pytest.raises(RedisConnectionError):
            await conn.call("PING")
        assert conn.closed
    finally:
        await r.aclose()
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await FastRedis.connect("redis://127.0.0.1:1/0", timeout=0.5)


async def test_unix_socket_and_database(tmp_path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        assert server.url
        unix = local_url(server.url, tmp_path).replace("db=0", "db=3")
        conn = await FastRedis.connect(unix)
        await conn.call("SET", "k", "in-db-3")
        await conn.aclose()
        r = aioredis.Redis.from_url(server.url.replace("/0", "/3"))
        assert await r.get("k") == b"in-db-3"
        like = await FastRedis.like(r)  # same server and db as a redis-py client
        assert await like.call("GET", "k") == b"in-db-3"
        await like.aclose()
        await r.aclose()
