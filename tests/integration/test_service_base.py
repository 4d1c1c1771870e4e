"""The Service base: heartbeat visible in ops.health and the per-instance hash; clean stop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable

import msgspec
import pytest
import redis.asyncio as aioredis

from backend.bus import codec, streams
from backend.bus.access import Reads
from backend.bus.worker import Entry
from backend.errors import ConfigError
from backend.messages import Heartbeat, Order
from backend.services.base import Service
from backend.settings import Settings
from tests.conftest import await_for, wait_for


class CountingService(Service):
    name = "counting"
    reads = (Reads(streams.ORDERS_NEW, group=True),)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        label: str = "x"

    async def setup(self) -> None:
        self.seen = 0
        self.consume(streams.ORDERS_NEW, self.on_orders, block_ms=20)

    async def on_orders(self, entries: list[Entry]) -> None:
        rec = self.recorder("handle")
        for _ in entries:
            rec.record_ns(250_000)
        self.seen += len(entries)

    def metrics(self) -> dict[str, object]:
        return {"label": self.cfg.label}


async def test_heartbeat_is_visible_and_stop_is_clean(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    for i in range(30):
        await r.xadd(
            streams.ORDERS_NEW,
            codec.fields(Order(client_order_id=str(i), account="a", symbol="S", side="buy", type="market", quantity=1)),
        )
    svc = CountingService(redis_url=redis_url, instance="counting-1", environment="target", config={"label": "blue"})
    task = asyncio.create_task(svc.run())
    await await_for(lambda: getattr(svc, "seen", 0) == 30)

    async def beat() -> Heartbeat | None:
        raw = await r.hget("health:counting:counting-1", "d")
        hb = codec.decode(raw, Heartbeat) if raw else None
        return hb if hb and hb.processed == 30 else None

    hb = await await_for(beat)
    assert hb.environment == "target" and hb.state == "running"
    assert hb.extra == {"label": "blue"}
    assert hb.latency_ms["handle_p50"] == pytest.approx(0.25, rel=0.01)
    assert hb.pending == 0 and hb.dlq == 0
    assert 0 < await r.ttl("health:counting:counting-1") <= streams.HEALTH_TTL_S
    assert await r.xlen(streams.OPS_HEALTH) >= 1
    svc.request_stop()
    await asyncio.wait_for(task, 5)
    last = codec.decode((await r.xrevrange(streams.OPS_HEALTH, count=1))[0][1][b"d"], Heartbeat)
    assert last.state == "stopped" and last.processed == 30
    await r.aclose()


def test_a_typo_in_service_config_names_the_key(redis_url: str) -> None:
    settings = Settings(services={"counting": {"lable": "x"}})
    with pytest.raises(ConfigError, match=r"\[services.counting\]: .*unknown field `lable`"):
        CountingService(redis_url=redis_url, settings=settings)


def test_service_run_stops_on_sigterm(tradeops_env: dict[str, str], r) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "service", "run", "risk", "--instance", "t1"],
        env=tradeops_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
        if "not built yet" in first:
            pytest.skip("risk service not built yet")
        wait_for(lambda: r.exists("health:risk:t1"), what="risk heartbeat")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert r.hget("health:risk:t1", "state") == b"stopped"


class StuckService(Service):
    """Cannot make progress while `blocked` says why."""

    name = "stuck"

    async def setup(self) -> None:
        self.blocked = ""
        self.every(0.05, self.check)

    async def check(self) -> None:
        if self.blocked:
            self.degrade(self.blocked)
        else:
            self.recover()


async def test_a_service_that_cannot_progress_beats_degraded_with_its_reason(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    svc = StuckService(redis_url=redis_url, instance="stuck-1")
    task = asyncio.create_task(svc.run())

    async def beat() -> Heartbeat | None:
        raw = await r.hget("health:stuck:stuck-1", "d")
        return codec.decode(raw, Heartbeat) if raw else None

    try:
        await await_for(lambda: svc.state == "running")
        svc.blocked = "disk full (ENOSPC)"
        hb = await await_for(lambda: _with_state(beat(), "degraded"), what="a degraded beat")
        assert hb.reason == "disk full (ENOSPC)"
        assert await r.hget("health:stuck:stuck-1", "reason") == b"disk full (ENOSPC)"
        svc.blocked = ""
        hb = await await_for(lambda: _with_state(beat(), "running"), what="running again")
        assert hb.reason == "" and await r.hget("health:stuck:stuck-1", "reason") == b""
    finally:
        svc.request_stop()
        await asyncio.wait_for(task, 5)
    states = [codec.decode(f[b"d"], Heartbeat).state for _, f in await r.xrange(streams.OPS_HEALTH)]
    assert "degraded" in states and states[-1] == "stopped"
    await r.aclose()


async def _with_state(beat: Awaitable[Heartbeat | None], state: str) -> Heartbeat | None:
    hb = await beat
    return hb if hb is not None and hb.state == state else None
