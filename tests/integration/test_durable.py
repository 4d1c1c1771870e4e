"""The writes an operator is told succeeded wait for the AOF fsync (backend/bus/durable.py): they are
still there after a `kill -9` of the server right after the call returned; the OMS waits once per
batch of orders.new; a server that cannot wait says so."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from backend.bench.harness import BenchStack
from backend.bus import codec, connection, embedded, streams
from backend.bus.durable import NotDurable, wait_durable, wait_durable_async
from backend.bus.embedded import EmbeddedRedis
from backend.bus.fastconn import FastRedis
from backend.messages import ControlCommand, GateEvent, Order, OrderEvent
from backend.migration.state import board, move
from backend.services.oms import read_order
from backend.trading.killswitch import KILL_KEY, set_kill_switch
from gates import audit
from tests.conftest import wait_for


def test_the_wait_is_confirmed_by_waitaof(r: redis.Redis) -> None:
    r.set("k", "v")
    assert wait_durable(r) is True


async def test_the_async_wait_on_a_fast_connection_and_on_redis_py(redis_url: str) -> None:
    fast = await FastRedis.connect(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await fast.call("SET", "k", "v")
        assert await wait_durable_async(fast) is True
        await client.set("k2", "v")
        assert await wait_durable_async(client) is True
    finally:
        await fast.aclose()
        await client.aclose()


def test_a_server_that_cannot_wait_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with EmbeddedRedis(tmp_path) as server:
        c = redis.Redis.from_url(server.url)
        c.config_set("appendonly", "no")  # WAITAOF refuses: nothing to fsync to
        c.set("k", "v")
        with caplog.at_level(logging.WARNING, logger="tradeops.durable"):
            assert wait_durable(c) is False
            assert wait_durable(c) is False
        warned = [rec.getMessage() for rec in caplog.records if rec.name == "tradeops.durable"]
        assert len(warned) == 1 and "cannot wait for the AOF fsync" in warned[0] and "everysec" in warned[0]
        c.close()


def test_redis_gone_before_the_fsync_is_one_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    c = redis.Redis.from_url(server.start())
    c.set("k", "v")
    server.stop()
    with pytest.raises(NotDurable, match="Redis went away before confirming the write on disk"):
        wait_durable(c)
    c.close()


@pytest.mark.timeout(60)
def test_acknowledged_control_plane_writes_survive_a_kill_9(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, detach=True)
    url = server.start()
    r = redis.Redis.from_url(url)
    try:
        ev = audit.append(
            r, GateEvent(gate="phase1", kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="durable")
        )
        moved = move(r, "normalizer", "start", "ann", "durable")
        set_kill_switch(r, True, "ann", "durable")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)  # at once: nothing had time to be written later
        server.proc.wait()
        r.close()

        again = EmbeddedRedis(tmp_path)
        assert again.start() == url  # the recorded port, free again
        r = redis.Redis.from_url(url)
        assert [e.hash for _, e in audit.events(r)] == [ev.hash]
        assert audit.verify(r).ok
        assert [(h.to_state, h.ts_ns) for h in board(r)["normalizer"].history] == [("deploying", moved.ts_ns)]
        assert r.get(KILL_KEY) == b"1"
        cmds = [codec.decode(codec.payload(f), ControlCommand) for _, f in r.xrange(streams.OPS_CONTROL)]
        assert [(c.command, c.args) for c in cmds] == [("kill_switch", {"on": True})]
        r.close()
        again.stop()
    finally:
        embedded.stop_data_dir(tmp_path)  # never leave a server behind, whatever failed


def _waitaof_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0))


@pytest.mark.timeout(90)
def test_the_oms_waits_once_for_a_batch_of_orders_and_they_survive_a_kill_9() -> None:
    n = 300
    with BenchStack() as stack:  # a server of its own: its command counts are the OMS's
        assert stack.r is not None and stack.server is not None and stack.server.proc is not None
        pipe = stack.r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(
                streams.ORDERS_NEW,
                codec.fields(
                    Order(
                        client_order_id=f"d{i}",
                        account="acc-1",
                        symbol="BTCUSDT",
                        side="buy",
                        type="market",
                        quantity=0.5,
                    )
                ),
            )
        pipe.execute()
        stack.start("oms")  # reads all of them as one batch

        def pending_risk() -> int:
            evs = (codec.decode(codec.payload(f), OrderEvent) for _, f in stack.r.xrange(streams.ORDERS_EVENTS))
            return sum(1 for e in evs if e.state == "PENDING_RISK")

        wait_for(lambda: pending_risk() == n, 30, what="every order taken in")
        wait_for(lambda: _waitaof_calls(stack.r) >= 1, 10, what="the OMS's fsync wait")
        assert _waitaof_calls(stack.r) == 1  # one fsync acknowledged the whole batch
        stack.stop("oms-bench")
        url = stack.server.url
        os.kill(stack.server.proc.pid, signal.SIGKILL)
        stack.server.proc.wait()
        again = EmbeddedRedis(stack.data_dir)
        try:
            assert again.start() == url  # with the data dir's ACL users again
            r = connection.client(url, connection.admin_login(data_dir=stack.data_dir))
            assert all(read_order(r, f"d{i}") is not None for i in range(n))
            assert r.xlen(streams.RISK_REQUESTS) == n
            r.close()
        finally:
            again.stop()
