"""Finding and connecting to the bus's Redis."""

from __future__ import annotations

from pathlib import Path

import redis
import redis.asyncio as aioredis

from backend.bus import embedded
from backend.errors import RedisUnavailable


def resolve_url(redis_url: str | None, data_dir: Path) -> str | None:
    """`--redis-url` / TRADEOPS_REDIS_URL if given, else the embedded server of the data dir."""
    if redis_url:
        return redis_url
    info = embedded.read_info(data_dir)
    return info.url if info else None


def require_url(redis_url: str | None, data_dir: Path) -> str:
    url = resolve_url(redis_url, data_dir)
    if url is None:
        raise RedisUnavailable(
            f"no Redis: none is running for data dir {data_dir} "
            "(start one with `tradeops redis up`, `tradeops up` or `tradeops demo`, "
            "or pass --redis-url)"
        )
    return url


def connect(url: str, *, timeout: float = 2.0) -> redis.Redis:
    """A sync client that has answered PING, or RedisUnavailable with one clear line."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout)
        client.ping()
        return client
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {_reason(exc)}") from None


async def connect_async(url: str, *, timeout: float = 2.0) -> aioredis.Redis:
    try:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout)
        await client.ping()
        return client
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {url}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
