"""The normalizer against real Redis: bars equal pandas' resample, bad ticks land in the DLQ with
their reason while the good ones around them pass, and trade-id marks survive a restart."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis

from backend.bus import codec, streams
from backend.marketdata import raw, ticks
from backend.messages import Bar, RawTick, TickBatch
from backend.services.normalizer import NormalizerService
from tests.conftest import await_for

SYMS = ["BTCUSDT", "ETHUSDT"]


def make_ticks(n: int, start_ns: int, seed: int = 1) -> list[RawTick]:
    rng = np.random.default_rng(seed)
    out = []
    t = start_ns
    ids = {s: 0 for s in SYMS}
    px = {"BTCUSDT": 65000.0, "ETHUSDT": 3200.0}
    for _ in range(n):
        s = SYMS[int(rng.integers(0, 2))]
        t += int(rng.integers(1_000_000, 40_000_000))  # 1..40 ms apart
        px[s] *= 1 + rng.normal(0, 1e-4)
        ids[s] += 1
        out.append(RawTick(s, ids[s], f"{px[s]:.2f}", f"{rng.uniform(0.001, 3):.4f}", t, t, False, t))
    return out


async def run_service(redis_url: str, **cfg) -> tuple[NormalizerService, asyncio.Task]:
    svc = NormalizerService(
        redis_url=redis_url, instance="norm-test", config={"symbols": SYMS, "bar_grace_s": 0.05, **cfg}
    )
    task = asyncio.create_task(svc.run())
    return svc, task


async def publish_raw(r: aioredis.Redis, batches: list[list[RawTick]]) -> None:
    for b in batches:
        await r.xadd(streams.MD_TICKS_RAW, codec.fields(raw.build(b)))


async def read_bars(r: aioredis.Redis, stream: str) -> list[Bar]:
    return [codec.decode(codec.payload(f), Bar) for _, f in await r.xrange(stream)]


@pytest.mark.timeout(60)
async def test_bars_equal_pandas_resample(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    start = (time.time_ns() // 60_000_000_000) * 60_000_000_000 - 180_000_000_000  # 3 min ago
    tks = make_ticks(6000, start)
    await publish_raw(r, [tks[i : i + 700] for i in range(0, len(tks), 700)])
    svc, task = await run_service(redis_url)
    # the last bars close once the watermark (newest trade + quiet wall time) passes their end
    last_1m = (tks[-1].trade_ns // 60_000_000_000) * 60_000_000_000
    df = pd.DataFrame(
        {
            "symbol": [t.symbol for t in tks],
            "price": [float(t.price) for t in tks],
            "qty": [float(t.qty) for t in tks],
            "ts": pd.to_datetime([t.trade_ns for t in tks], unit="ns"),
        }
    )
    try:
        for interval, stream, rule in (("1s", streams.MD_BARS_1S, "1s"), ("1m", streams.MD_BARS_1M, "1min")):
            expected = []
            for sym, g in df.groupby("symbol"):
                g = g.set_index("ts")
                rs = g.resample(rule)
                e = pd.DataFrame(
                    {
                        "open": rs.price.first(),
                        "high": rs.price.max(),
                        "low": rs.price.min(),
                        "close": rs.price.last(),
                        "volume": rs.qty.sum(),
                        "trades": rs.price.count(),
                        "pv": (g.price * g.qty).resample(rule).sum(),
                    }
                )
                e = e[e.trades > 0]
                for ts, row in e.iterrows():
                    expected.append((sym, int(ts.value), row))
            want = len(expected)
            got = await await_for(
                lambda s=stream, w=want: _bars_when(r, s, w), timeout=30, what=f"{want} {interval} bars"
            )
            by_key = {(b.symbol, b.start_ns): b for b in got}
            assert len(by_key) == want
            for sym, start_ns, row in expected:
                b = by_key[(sym, start_ns)]
                assert b.open == row.open and b.close == row.close
                assert b.high == row.high and b.low == row.low
                assert b.trades == row.trades
                assert b.volume == pytest.approx(row.volume, rel=1e-12)
                assert b.vwap == pytest.approx(row.pv / row.volume, rel=1e-12)
        assert last_1m > 0
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()


async def _bars_when(r: aioredis.Redis, stream: str, want: int) -> list[Bar] | None:
    bars = await read_bars(r, stream)
    return bars if len(bars) >= want else None


BAD = [
    (
        lambda t: RawTick(t.symbol, 1000, "abc", t.qty, t.trade_ns, t.event_ns, False, t.recv_ns),
        "unparseable price 'abc'",
    ),
    (
        lambda t: RawTick(t.symbol, 1001, t.price, "", t.trade_ns, t.event_ns, False, t.recv_ns),
        "unparseable quantity ''",
    ),
    (lambda t: RawTick(t.symbol, 1002, "-5", t.qty, t.trade_ns, t.event_ns, False, t.recv_ns), "non-positive price -5"),
    (
        lambda t: RawTick(t.symbol, 1003, t.price, "0", t.trade_ns, t.event_ns, False, t.recv_ns),
        "non-positive quantity 0",
    ),
    (
        lambda t: RawTick(t.symbol, 1004, "1e999", t.qty, t.trade_ns, t.event_ns, False, t.recv_ns),
        "non-finite price inf",
    ),
    (
        lambda t: RawTick("DOGEUSDT", 1, t.price, t.qty, t.trade_ns, t.event_ns, False, t.recv_ns),
        "unknown symbol 'DOGEUSDT'",
    ),
    (
        lambda t: RawTick(t.symbol, 1005, t.price, t.qty, t.trade_ns + 3600 * 10**9, t.event_ns, False, t.recv_ns),
        "in the future",
    ),
    (
        lambda t: RawTick(t.symbol, 1006, t.price, t.qty, t.trade_ns - 86400 * 10**9, t.event_ns, False, t.recv_ns),
        "in the past",
    ),
    (lambda t: RawTick(t.symbol, 1, t.price, t.qty, t.trade_ns, t.event_ns, False, t.recv_ns), "duplicate trade id 1"),
]


@pytest.mark.timeout(60)
async def test_bad_ticks_go_to_the_dlq_with_their_reason(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    now = time.time_ns()
    good = [RawTick("BTCUSDT", i, f"{100 + i}.5", "1.25", now + i, now, False, now) for i in range(1, 11)]
    bad = [make(good[0]) for make, _ in BAD]
    # interleave: good, bad, good, bad ...
    mixed = [x for pair in zip(good, bad + [None] * (len(good) - len(bad)), strict=True) for x in pair if x]
    await publish_raw(r, [mixed])
    await r.xadd(streams.MD_TICKS_RAW, {b"d": b"\x93 garbage"})  # an undecodable batch
    svc, task = await run_service(redis_url)
    try:

        async def dead() -> list:
            d = await r.xrange(streams.dlq(streams.MD_TICKS_RAW))
            return d if len(d) >= len(BAD) + 1 else None

        dl = await await_for(dead, timeout=20, what="dead letters")
        reasons = [f[b"dlq_reason"].decode() for _, f in dl]
        for _, why in BAD:
            assert any(why in reason for reason in reasons), (why, reasons)
        assert any("undecodable raw batch" in x for x in reasons)
        # the dead letter keeps the raw tick as the venue sent it
        first_tick = next(
            codec.decode(codec.payload(f), RawTick) for _, f in dl if f[b"dlq_reason"].startswith(b"unparseable price")
        )
        assert first_tick.price == "abc"

        async def clean() -> list:
            out = [
                t
                for _, f in await r.xrange(streams.MD_TICKS)
                for t in ticks.iter_ticks(codec.decode(codec.payload(f), TickBatch))
            ]
            return out if len(out) >= 10 else None

        got = await await_for(clean, timeout=20)
        assert [t.trade_id for t in got] == list(range(1, 11))
        assert [t.price for t in got] == [100 + i + 0.5 for i in range(1, 11)]
        assert (await r.xpending(streams.MD_TICKS_RAW, "normalizer"))["pending"] == 0
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)

    # a restart remembers the trade ids it accepted: replaying them is a duplicate
    await publish_raw(r, [good[:3]])
    before = await r.xlen(streams.dlq(streams.MD_TICKS_RAW))
    svc, task = await run_service(redis_url)
    try:
        await await_for(lambda: _xlen_at_least(r, streams.dlq(streams.MD_TICKS_RAW), before + 3), timeout=20)
        assert svc.ticks_out == 0
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()


async def _xlen_at_least(r: aioredis.Redis, stream: str, n: int) -> bool:
    return await r.xlen(stream) >= n


@pytest.mark.timeout(60)
async def test_a_quiet_symbol_still_closes_its_bar(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    now = time.time_ns()
    await publish_raw(r, [[RawTick("ETHUSDT", 1, "3200.5", "2", now, now, False, now)]])
    svc, task = await run_service(redis_url)
    try:
        bars = await await_for(lambda: _bars_when(r, streams.MD_BARS_1S, 1), timeout=10)
        assert bars[0].symbol == "ETHUSDT" and bars[0].trades == 1 and bars[0].start_ns == now // 10**9 * 10**9
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()


@pytest.mark.timeout(60)
async def test_an_overlap_of_two_gateways_is_counted_as_repeats_not_dead_lettered(redis_url: str) -> None:
    """During a gateway's blue/green both instances publish the same trades: each is on md.ticks
    once (the legacy's batches overtaken by the target's newer ones too), the second copies are
    counted in the heartbeat's `repeats`, and the DLQ holds only the genuine bad tick."""
    from backend.messages import Heartbeat

    r = aioredis.Redis.from_url(redis_url)
    tks = make_ticks(400, time.time_ns() - 10 * 10**9)
    legacy = [tks[i : i + 50] for i in range(0, 300, 50)]
    target = [tks[i : i + 40] for i in range(120, 400, 40)]  # connected later, both publish until 300
    bad = RawTick("BTCUSDT", 10**6, "-1", "1", tks[-1].trade_ns, tks[-1].event_ns, False, tks[-1].recv_ns)
    svc, task = await run_service(redis_url)
    try:
        for k in range(max(len(legacy), len(target))):
            for src, batches in (("gateway-legacy", legacy), ("gateway-target", target)):
                if k < len(batches):
                    await r.xadd(streams.MD_TICKS_RAW, codec.fields(raw.build(batches[k], src)))
        await r.xadd(streams.MD_TICKS_RAW, codec.fields(raw.build([bad], "gateway-target")))

        async def beat() -> Heartbeat | None:
            d = await r.hget("health:normalizer:norm-test", codec.FIELD_STR)
            hb = codec.decode(d, Heartbeat) if d else None
            return hb if hb and hb.extra.get("ticks_in") == 300 + 280 + 1 else None

        hb = await await_for(beat, timeout=30, what="a heartbeat after every raw batch")
        assert (hb.extra["repeats"], hb.extra["rejected"]) == (300 - 120, 1)
        got = [
            (t.symbol, t.trade_id)
            for _, f in await r.xrange(streams.MD_TICKS)
            for t in ticks.iter_ticks(codec.decode(codec.payload(f), TickBatch))
        ]
        assert sorted(got) == sorted((t.symbol, t.trade_id) for t in tks)
        dl = await r.xrange(streams.dlq(streams.MD_TICKS_RAW))
        assert [f[b"dlq_reason"] for _, f in dl] == [b"non-positive price -1"]
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 10)
        await r.aclose()
