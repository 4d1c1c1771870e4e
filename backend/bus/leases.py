"""One owner per partition: the live instances of a service share its partitions, each held
under a lease with a fencing token.

Each instance of a group (a service's consumer group on a partitioned stream):
1. renews its membership (`members:<group>`, a sorted set scored by when the membership lapses);
   an instance that stops renewing (killed, paused, cut off) lapses after `ttl_ms`;
2. computes the assignment from the live members alone, by rendezvous hashing (each partition to
   the member with the highest CRC-32 of "member/partition"): every instance computes the same
   one, and a member joining or leaving moves only the partitions it gains or had;
3. gives up (after its work on them is done: `on_release`) the partitions assigned elsewhere, and
   takes the ones assigned to it whose lease is free: a lease is a key in the partition's slot
   (`lease:<group>:{pNofM}`) holding "<instance>/<token>", the token a counter raised on every
   change of owner (the fencing token). A lease not renewed lapses after `ttl_ms`.

A new owner takes the partition's pending entries over before it reads (`on_acquire`: the
worker's XAUTOCLAIM of everything pending in the group), so they are handed in order by the one
owner. An old owner that was only paused finds out in its fenced commit (backend/bus/fence.py
checks the lease's token and that the batch is still pending to it) and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from backend.bus import partitions
from backend.bus.outage import CAUGHT, redis_away
from backend.bus.scripts import Script

log = logging.getLogger("tradeops.leases")

MEMBERS = "members:{group}"
LEASE = "lease:{group}:{tag}"
TOKEN = "lease:{group}:{tag}:token"

# KEYS: lease, token counter. ARGV: instance, ttl ms. Returns the token held ("" if another holds it).
_ACQUIRE = Script(
    """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '/', 1, true)
  if string.sub(cur, 1, sep - 1) ~= ARGV[1] then return '' end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return string.sub(cur, sep + 1)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. token, 'PX', ARGV[2])
return tostring(token)
"""
)
# KEYS: lease. ARGV: "<instance>/<token>", ttl ms. 1 renewed, 0 lost.
_RENEW = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)
# KEYS: lease. ARGV: "<instance>/<token>". 1 released, 0 not ours.
_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


def lease_key(group: str, p: int, n: int) -> str:
    return LEASE.format(group=group, tag=partitions.tag(p, n))


def token_key(group: str, p: int, n: int) -> str:
    return TOKEN.format(group=group, tag=partitions.tag(p, n))


def assign(members: list[str], n: int) -> dict[int, str]:
    """Partition -> member: the same everywhere for the same members, balanced (no member holds
    more than ceil(n / members)), and a member joining or leaving moves few partitions. Each
    partition ranks the members by CRC-32 of "member/partition" (rendezvous hashing) and goes to
    the best-ranked member that still has room, partitions taken in order."""
    if not members:
        return {}
    room = -(-n // len(members))
    held: dict[str, int] = dict.fromkeys(members, 0)
    out: dict[int, str] = {}
    for p in range(n):
        ranked = sorted(members, key=lambda m: (zlib.crc32(f"{m}/{p}".encode()), m), reverse=True)
        m = next(m for m in ranked if held[m] < room)
        out[p] = m
        held[m] += 1
    return out


@dataclass
class Held:
    token: int
    value: str  # "<instance>/<token>", what the lease key holds


@dataclass
class Leases:
    """The partitions this instance owns in `group`, kept up to date by `run()`.

    `r`: an async redis-py client (a cluster client routes each lease to its slot). `on_acquire(p,
    token)` runs when a partition becomes ours (take its pending entries, start its worker);
    `on_release(p)` before we give one up or after we lost it (stop its worker: the batch in hand
    is finished, its commit is fenced)."""

    r: Any
    group: str
    instance: str
    n: int
    on_acquire: Callable[[int, int], Awaitable[None]]
    on_release: Callable[[int], Awaitable[None]]
    ttl_ms: int = 3000
    held: dict[int, Held] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    changes: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def interval_s(self) -> float:
        return self.ttl_ms / 3000

    def owned(self) -> list[int]:
        return sorted(self.held)

    def lease(self, p: int) -> tuple[str, str] | None:
        """(lease key, value) of a partition we hold: what a fenced commit checks."""
        h = self.held.get(p)
        return None if h is None else (lease_key(self.group, p, self.n), h.value)

    async def round(self) -> None:
        """One round: renew membership, compute the assignment, release and acquire."""
        now_ms = int(time.time() * 1000)
        key = MEMBERS.format(group=self.group)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {self.instance: now_ms + self.ttl_ms})
            pipe.zremrangebyscore(key, "-inf", now_ms)
            pipe.zrange(key, 0, -1)
            _, _, raw = await pipe.execute()
        self.members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)
        want = {p for p, m in assign(self.members, self.n).items() if m == self.instance}
        for p in sorted(set(self.held) - want):
            await self._give_up(p)
        for p in sorted(set(self.held) & want):
            h = self.held[p]
            if not int(await _RENEW.run(self._call, [lease_key(self.group, p, self.n)], [h.value, self.ttl_ms])):
                log.warning("%s lost the lease of %s partition %d (it lapsed)", self.instance, self.group, p)
                del self.held[p]
                self.changes += 1
                await self.on_release(p)
        for p in sorted(want - set(self.held)):
            keys = [lease_key(self.group, p, self.n), token_key(self.group, p, self.n)]
            got = await _ACQUIRE.run(self._call, keys, [self.instance, self.ttl_ms])
            got = got.decode() if isinstance(got, bytes) else str(got)
            if got:
                token = int(got)
                self.held[p] = Held(token, f"{self.instance}/{token}")
                self.changes += 1
                log.info("%s owns %s partition %d (token %d)", self.instance, self.group, p, token)
                await self.on_acquire(p, token)

    async def _give_up(self, p: int) -> None:
        h = self.held.pop(p)
        self.changes += 1
        await self.on_release(p)
        await _RELEASE.run(self._call, [lease_key(self.group, p, self.n)], [h.value])
        log.info("%s gave up %s partition %d", self.instance, self.group, p)

    async def _call(self, *args: Any) -> Any:
        return await self.r.execute_command(*args)

    async def run(self) -> None:
        """Rounds every ttl/3 until stopped; then every partition is given up (others take them
        at once instead of waiting for the leases to lapse) and the membership withdrawn."""
        try:
            while not self._stop.is_set():
                try:
                    await self.round()
                except CAUGHT as exc:
                    if not redis_away(exc):
                        raise
                    log.warning("leases of %s: redis unavailable: %s", self.group, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            with contextlib.suppress(*CAUGHT):
                for p in sorted(self.held):
                    await self._give_up(p)
                await self.r.zrem(MEMBERS.format(group=self.group), self.instance)

    def stop(self) -> None:
        self._stop.set()
