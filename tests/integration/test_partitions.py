"""Partitioned streams on a real Redis: leases give each partition one owner among the live
instances, hand partitions over when one joins or leaves (fencing tokens rising), and a
partitioned normalizer with two instances publishes every trade once, in order per symbol,
through a handover."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from backend.bus import codec, partitions, streams
from backend.bus.fence import Fence
from backend.bus.leases import Leases, lease_key
from backend.marketdata import raw, ticks
from backend.messages import Bar, RawTick, TickBatch
from backend.services.normalizer import NormalizerService
from backend.settings import Settings
from tests.conftest import await_for

SYMS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT"]
N = 4


def leases(r: aioredis.Redis, instance: str, log: list[tuple[str, str, int]]) -> Leases:
    async def acquire(p: int, token: int) -> None:
        log.append((instance, "acquire", p))

    async def release(p: int) -> None:
        log.append((instance, "release", p))

    return Leases(r, "g", instance, N, acquire, release, ttl_ms=600)


async def test_each_partition_has_one_owner_and_moves_when_an_instance_comes_or_goes(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    log: list[tuple[str, str, int]] = []
    a, b = leases(r, "a", log), leases(r, "b", log)
    ta = asyncio.create_task(a.run())
    await await_for(lambda: a.owned() == [0, 1, 2, 3], what="a alone owns all four")
    tokens = {p: a.held[p].token for p in range(N)}
    tb = asyncio.create_task(b.run())
    try:
        await await_for(
            lambda: sorted(a.owned() + b.owned()) == [0, 1, 2, 3] and a.owned() and b.owned(),
            what="the partitions shared out",
        )
        for p in b.owned():  # taken over: released by a first, with a higher fencing token
            assert ("a", "release", p) in log and b.held[p].token > tokens[p]
            assert (await r.get(lease_key("g", p, N))).decode() == b.held[p].value
        # a stops (its last round gives everything up): b owns all at once, not after a lapse
        a.stop()
        await asyncio.wait_for(ta, 5)
        await await_for(lambda: b.owned() == [0, 1, 2, 3], what="b owns all four")
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(ta, tb, return_exceptions=True)
    await r.aclose()


async def test_a_lease_that_lapsed_fences_off_its_old_owner(redis_url: str) -> None:
    # a paused owner (its lease lapsed and was taken) writes nothing: the fenced commit checks the
    # lease's token as well as the pending entries
    r = aioredis.Redis.from_url(redis_url)
    stream = partitions.name("s", 0, 2)
    await r.xgroup_create(stream, "g", id="0", mkstream=True)
    eid = await r.xadd(stream, {"d": "1"})
    await r.xreadgroup("g", "old", {stream: ">"})
    key = lease_key("g", 0, 2)
    await r.set(key, "old/1")
    old = Fence(r.execute_command, stream, "g", "old", lease=(key, "old/1"))
    await r.set(key, "new/2")  # taken by another
    assert not await old.commit([eid], [("XADD", "out", "*", "d", "x")])
    assert old.lease_lost == 1 and await r.xlen("out") == 0
    await r.set(key, "old/1")
    assert await old.commit([eid], [("XADD", "out", "*", "d", "x")])  # its own again: it commits
    assert await r.xlen("out") == 1
    await r.aclose()


def raw_ticks(n: int, seed: int, ids: dict[str, int]) -> list[RawTick]:
    rng = np.random.default_rng(seed)
    now = time.time_ns()
    out = []
    for i in range(n):
        s = SYMS[int(rng.integers(0, len(SYMS)))]
        ids[s] += 1
        t = now - (n - i) * 1_000_000
        out.append(RawTick(s, ids[s], "100.00", "0.5000", t, t, False, t))
    return out


async def publish(r: aioredis.Redis, tks: list[RawTick]) -> None:
    """What the gateway does: each symbol's ticks to its partition, in order."""
    by: dict[str, list[RawTick]] = {}
    for t in tks:
        by.setdefault(partitions.route(streams.MD_TICKS_RAW, t.symbol, N), []).append(t)
    for stream, part in by.items():
        for i in range(0, len(part), 50):
            await r.xadd(stream, codec.fields(raw.build(part[i : i + 50])))


async def published(r: aioredis.Redis) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for _, f in await r.xrange(streams.MD_TICKS):
        out += [(t.symbol, t.trade_id) for t in ticks.iter_ticks(codec.decode(codec.payload(f), TickBatch))]
    return out


@pytest.mark.timeout(90)
async def test_a_partitioned_normalizer_publishes_every_trade_once_in_order_through_a_handover(
    redis_url: str,
) -> None:
    r = aioredis.Redis.from_url(redis_url)
    settings = Settings(partitions={streams.MD_TICKS_RAW: N})
    ids = dict.fromkeys(SYMS, 0)

    def start(name: str) -> tuple[NormalizerService, asyncio.Task]:
        svc = NormalizerService(redis_url=redis_url, settings=settings, instance=name, config={"symbols": SYMS})
        return svc, asyncio.create_task(svc.run())

    one, t1 = start("norm-1")
    two: NormalizerService | None = None
    t2: asyncio.Task | None = None
    try:
        await await_for(lambda: getattr(one, "parts", None) and one.parts.partitions() == [0, 1, 2, 3])
        await publish(r, raw_ticks(2000, 1, ids))
        two, t2 = start("norm-2")  # joins while the first works: partitions move to it
        await publish(r, raw_ticks(2000, 2, ids))
        await await_for(lambda: two.parts.partitions() and one.parts.partitions(), what="both own partitions")
        await publish(r, raw_ticks(2000, 3, ids))
        one.request_stop()  # leaves: its partitions go to the second
        await asyncio.wait_for(t1, 20)
        await publish(r, raw_ticks(2000, 4, ids))
        want = sum(ids.values())
        await await_for(lambda: _count(r, want), 30, what=f"{want} trades published")
        got = await published(r)
        assert len(got) == want and len(set(got)) == want  # every trade, once
        for s in SYMS:  # in order per symbol
            mine = [tid for sym, tid in got if sym == s]
            assert mine == sorted(mine) == list(range(1, ids[s] + 1)), s
        assert two.parts.partitions() == [0, 1, 2, 3]
        assert await r.xlen(streams.dlq(streams.MD_TICKS_RAW)) == 0
    finally:
        for svc, t in ((one, t1), (two, t2)):
            if svc is not None and t is not None:
                svc.request_stop()
                await asyncio.wait_for(t, 20)
    await r.aclose()


async def _count(r: aioredis.Redis, want: int) -> bool:
    return len(await published(r)) >= want


@pytest.mark.timeout(90)
async def test_a_bar_open_at_a_handover_is_emitted_once_and_whole(redis_url: str) -> None:
    # every trade in one 1 s bar (grace 8 s: it stays open through the handover): the first
    # instance opens it, a second takes half the partitions, the first leaves; each symbol's bar
    # comes out once, holding all its trades (the open bars travel with the partition's commits)
    r = aioredis.Redis.from_url(redis_url)
    settings = Settings(partitions={streams.MD_TICKS_RAW: N})
    config = {"symbols": SYMS, "bar_grace_s": 8.0, "bar_max_delay_s": 8.0}
    start_ns = (time.time_ns() // 10**9 + 1) * 10**9  # the next second: the bar's start
    ids = dict.fromkeys(SYMS, 0)
    sent = 0

    def in_the_bar(n: int) -> list[RawTick]:
        nonlocal sent
        out = []
        for i in range(n):
            s = SYMS[(sent + i) % len(SYMS)]
            ids[s] += 1
            t = start_ns + (sent + i) * 100_000  # 0.1 ms apart: all inside [start, start + 1 s)
            out.append(RawTick(s, ids[s], "100.00", "0.5000", t, t, False, time.time_ns()))
        sent += n
        return out

    def start(name: str) -> tuple[NormalizerService, asyncio.Task]:
        svc = NormalizerService(redis_url=redis_url, settings=settings, instance=name, config=config)
        return svc, asyncio.create_task(svc.run())

    one, t1 = start("norm-1")
    two: NormalizerService | None = None
    t2: asyncio.Task | None = None
    try:
        await await_for(lambda: getattr(one, "parts", None) and one.parts.partitions() == [0, 1, 2, 3])
        await publish(r, in_the_bar(400))
        await await_for(lambda: one.ticks_in == 400, what="the first ticks in the open bars")
        two, t2 = start("norm-2")
        await await_for(
            lambda: getattr(two, "parts", None) and two.parts.partitions() and one.parts.partitions(),
            what="both own partitions",
        )
        await publish(r, in_the_bar(400))
        await await_for(lambda: one.ticks_in + two.ticks_in == 800, what="the second ticks")
        one.request_stop()  # leaves: the bars it holds open go on with their partitions
        await asyncio.wait_for(t1, 20)
        await publish(r, in_the_bar(400))

        async def bars() -> list[Any] | None:
            got = [codec.decode(codec.payload(f), Bar) for _, f in await r.xrange(streams.MD_BARS_1S)]
            return got if len({b.symbol for b in got if b.start_ns == start_ns}) == len(SYMS) else None

        got = await await_for(bars, 40, what="every symbol's bar closed")
        mine = [b for b in got if b.start_ns == start_ns]
        assert sorted(b.symbol for b in mine) == sorted(SYMS)  # one bar per symbol, not one per owner
        assert {b.symbol: b.trades for b in mine} == ids  # each holds every trade of its symbol
        assert all(b.volume == pytest.approx(0.5 * ids[b.symbol]) for b in mine)
    finally:
        for svc, t in ((one, t1), (two, t2)):
            if svc is not None and t is not None and not t.done():
                svc.request_stop()
                await asyncio.wait_for(t, 20)
    await r.aclose()
