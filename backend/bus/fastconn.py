"""A lean pipelined Redis connection for the hot paths, on hiredis's C encoder and parser.

redis-py's asyncio client spends about 40 us of Python per command here (connection pool, retry
wrapper, per-command response callbacks); on a 2-core machine that is most of what a service does
per message. This connection is only hiredis's `pack_command` (encode) and `Reader` (parse) on
an asyncio Protocol: commands are written at once and their replies resolve futures in order, so
many coroutines may pipeline on one connection (about 8 us per command). It returns raw replies
(bytes, ints, nested lists); the hot paths that use it (the stream worker's reads and acks,
publishing, the OMS commit) parse what they need. Everything else keeps using redis-py.

A blocking command (XREADGROUP ... BLOCK) holds the connection until it returns, so each blocking
reader has its own connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import BusyLoadingError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

Arg = str | bytes | int | float
# hiredis's stub types the command as a 1-tuple (Tuple[X]); it takes any number of arguments
_pack_command = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream connection's (uvloop's transports are not asyncio.Transport subclasses: no isinstance)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        gets, waiters = self.reader.gets, self.waiters
        while True:
            reply = gets()
            if reply is False:
                return
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = RedisConnectionError(f"connection to Redis lost: {exc or 'closed by server'}")
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(self.lost)


class FastRedis:
    """One connection; `call` for one command, `pipeline` for many in one write."""

    def __init__(self, protocol: _Protocol) -> None:
        self._p = protocol

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 2.0, auth: Any = None) -> FastRedis:
        """redis://[user@]host:port[/db] or unix:///path/to/socket[?db=N]; `auth`: a
        backend.bus.connection.Login (its user and password), else the URL's."""
        u = urlparse(url)
        loop = asyncio.get_running_loop()
        try:
            if u.scheme == "unix":
                coro = loop.create_unix_connection(_Protocol, u.path)
            elif u.scheme in ("redis", ""):
                coro = loop.create_connection(_Protocol, u.hostname or "127.0.0.1", u.port or 6379)
            else:
                raise ValueError(f"unsupported Redis URL scheme {u.scheme!r} (redis:// or unix://)")
            _, proto = await asyncio.wait_for(coro, timeout)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {url}: {exc}") from None
        conn = cls(proto)
        if auth is not None:
            await conn.call("AUTH", auth.user, auth.password)
        elif u.password:
            user = unquote(u.username) if u.username else None
            await conn.call("AUTH", *([user] if user else []), unquote(u.password))
        db = (
            u.path.strip("/")
            if u.scheme != "unix"
            else dict(p.split("=", 1) for p in u.query.split("&") if "=" in p).get("db", "")
        )
        if db and db != "0":
            await conn.call("SELECT", int(db))
        return conn

    @classmethod
    async def like(cls, r: Any, key: str | bytes | None = None) -> FastRedis:
        """A fast connection to the same server as the redis-py client `r`; on a Redis Cluster
        (`r` a RedisCluster), to the primary serving `key`'s slot (any primary without a key)."""
        if hasattr(r, "nodes_manager"):
            node = r.get_node_from_key(key) if key is not None else r.get_default_node()
            conn = await cls.connect(f"redis://{node.host}:{node.port}/0")
            kw = node.connection_kwargs
            if kw.get("password"):
                user = kw.get("username")
                await conn.call("AUTH", *([user] if user else []), kw["password"])
            return conn
        kw = r.connection_pool.connection_kwargs
        if kw.get("path"):
            url = f"unix://{kw['path']}?db={kw.get('db', 0)}"
        else:
            url = f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
        conn = await cls.connect(url)
        if kw.get("password"):
            user = kw.get("username")
            await conn.call("AUTH", *([user] if user else []), kw["password"])
        return conn

    def _send(self, args: Sequence[Arg]) -> asyncio.Future[Any]:
        p = self._p
        if p.lost is not None or p.transport is None or p.transport.is_closing():
            raise p.lost or RedisConnectionError("connection to Redis lost: closed")
        fut = asyncio.get_running_loop().create_future()
        p.waiters.append(fut)
        p.transport.write(_pack_command(tuple(args)))
        return fut

    def send(self, *args: Arg) -> asyncio.Future[Any]:
        """Write one command now (in order with every other on this connection) and return the
        future of its raw reply, for a writer that does not wait for it."""
        return self._send(args)

    async def call(self, *args: Arg) -> Any:
        """Send one command and return its raw reply; an error reply raises ResponseError (a server
        still loading its data raises BusyLoadingError, a ConnectionError, as redis-py does)."""
        reply = await self._send(args)
        if isinstance(reply, ResponseError):
            raise _error(reply)
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]], *, raise_on_error: bool = True) -> list[Any]:
        """Send every command in one write, return their replies in order. With raise_on_error,
        the first error reply is raised after all replies have arrived (nothing is left unread)."""
        if not commands:
            return []
        p = self._p
        if p.lost is not None or p.transport is None or p.transport.is_closing():
            raise p.lost or RedisConnectionError("connection to Redis lost: closed")
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in commands]
        p.waiters.extend(futs)
        p.transport.write(b"".join(_pack_command(tuple(c)) for c in commands))
        replies = [await f for f in futs]
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise _error(reply)
        return replies

    @property
    def closed(self) -> bool:
        return self._p.lost is not None or self._p.transport is None or self._p.transport.is_closing()

    async def aclose(self) -> None:
        t = self._p.transport
        if t is not None and not t.is_closing():
            t.close()


def _error(reply: ResponseError) -> Exception:
    """A restarted server answers LOADING while it reads its AOF: a wait, like a lost connection.
    NOPERM (the ACL refused the command) is redis-py's NoPermissionError, as from its own client."""
    text = str(reply)
    if text.startswith("LOADING"):
        return BusyLoadingError(text)
    if text.startswith("NOPERM"):
        return NoPermissionError(text)
    return reply


async def refresh_slots(r: Any) -> None:
    """On a Redis Cluster, learn the slots' primaries again (after MOVED, or a primary lost: a
    failover); nothing on a single server."""
    if hasattr(r, "nodes_manager"):
        await r.nodes_manager.initialize()


def stream_entries(reply: Any) -> list[tuple[bytes, bytes, dict[bytes, bytes]]]:
    """XREAD/XREADGROUP raw reply -> [(stream, id, {field: value})] (entries deleted while pending
    skipped)."""
    out: list[tuple[bytes, bytes, dict[bytes, bytes]]] = []
    for stream, items in reply or ():
        for eid, flat in items:
            if flat is not None:
                it = iter(flat)
                out.append((stream, eid, dict(zip(it, it, strict=False))))
    return out


def entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD/XREADGROUP raw reply -> [(id, {field: value})] (entries deleted while pending skipped)."""
    return [(eid, fields) for _, eid, fields in stream_entries(reply)]
