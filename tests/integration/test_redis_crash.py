"""A crash of the embedded Redis needs no operator: the stack's supervisor starts it again on the
same port and data dir, every service heartbeats `running` again, no child is left a zombie, and
the OMS takes orders again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bus import codec, connection, embedded, streams
from backend.health import read_heartbeats
from backend.messages import Order, OrderEvent
from backend.runtime.redis_watch import RedisWatch
from backend.runtime.scrape import scraped
from backend.runtime.supervisor import read_table
from tests.conftest import TRADEOPS, wait_for


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of every child of `pid`, from /proc."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in kids:
            try:
                stat = Path(f"/proc/{k}/stat").read_text()
            except OSError:
                continue
            out.append((int(k), stat.rsplit(") ", 1)[1][0]))
    return out


def _fresh_heartbeats(r: redis.Redis, since_ns: int) -> set[str]:
    try:
        return {b.instance for b in read_heartbeats(r) if b.state == "running" and b.ts_ns > since_ns}
    except redis.RedisError:
        return set()


@pytest.mark.timeout(240)
def test_the_stack_rides_through_a_kill_9_of_its_redis(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TRADEOPS_REDIS_URL", None)
    up = subprocess.run(
        [*TRADEOPS, "--data-dir", str(data), "up"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        table = read_table(data)
        assert table is not None
        sup = table["supervisor_pid"]
        services = {i["instance"] for i in table["instances"] if i["service"] != "exchange"}
        assert scraped(data) == services  # `up` wrote the Prometheus targets of every instance
        assert (data / "prometheus" / "prometheus.yml").exists() and "prometheus.yml" in up.stdout
        pids = {i["instance"]: i["pid"] for i in table["instances"]}
        info = embedded.read_info(data)
        assert info is not None
        url, old_pid = info.url, info.pid

        killed_ns = time.time_ns()
        os.kill(old_pid, signal.SIGKILL)  # no command typed after this

        def back() -> embedded.ServerInfo | None:
            now = embedded.live_info(data)
            return now if now is not None and now.pid != old_pid else None

        again = wait_for(back, 60, what="the supervisor to start redis again")
        assert again.url == url  # the same port: every client finds it where it was
        assert again.socket_url == info.socket_url
        r = connection.client(url, connection.admin_login(data_dir=data))  # the stack runs with its ACL users
        wait_for(
            lambda: services <= _fresh_heartbeats(r, killed_ns),
            120,
            what=f"every service heartbeating running after the crash: {sorted(services)}",
        )
        wait_for(lambda: not [p for p, st in _children(sup) if st == "Z"], 30, what="no zombie child of the supervisor")
        table = read_table(data)
        assert table is not None and table["supervisor_pid"] == sup  # the same supervisor: the stack was not restarted
        now = {i["instance"]: i["pid"] for i in table["instances"]}
        # consumers and periodic tasks wait for Redis: they ride through without a restart
        for rode_through in ("risk-legacy", "normalizer-legacy", "sink-ticks-legacy"):
            assert now[rode_through] == pids[rode_through], rode_through
        out = subprocess.run(
            [*TRADEOPS, "--data-dir", str(data), "redis", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 1 and "a stack is up on this Redis" in out.stderr  # it would only come back
        assert embedded.live_info(data) is not None
        r.close()
    finally:
        subprocess.run(
            [*TRADEOPS, "--data-dir", str(data), "down"], env=env, capture_output=True, timeout=120, check=False
        )
        embedded.stop_data_dir(data)  # never leave a server behind, whatever failed


def test_the_watch_restarts_a_server_it_started_and_reaps_the_old_one(tmp_path: Path) -> None:
    server = embedded.EmbeddedRedis(tmp_path, detach=True)
    url = server.start()
    watch = RedisWatch(tmp_path, server)
    try:
        assert watch.check()
        assert server.proc is not None
        old = server.proc
        os.kill(old.pid, signal.SIGKILL)
        wait_for(lambda: watch.check() and watch.pid != old.pid, 30, what="the server started again")
        assert old.returncode == -signal.SIGKILL  # reaped, not a zombie
        info = embedded.live_info(tmp_path)
        assert info is not None and info.url == url and info.pid == watch.pid != old.pid
        first_restart = watch.proc
        assert first_restart is not None
        os.kill(first_restart.pid, signal.SIGKILL)  # the one it started itself: its child, reaped by polling
        wait_for(lambda: watch.check() and watch.pid != first_restart.pid, 30, what="the server started a second time")
        assert first_restart.returncode == -signal.SIGKILL
        assert watch.restarts == 2 and embedded.read_info(tmp_path).url == url
    finally:
        watch.close()
        embedded.stop_data_dir(tmp_path)


def _events(r: redis.Redis, coid: str) -> list[str]:
    evs = (codec.decode(codec.payload(f), OrderEvent) for _, f in r.xrange(streams.ORDERS_EVENTS))
    return [e.state for e in evs if e.client_order_id == coid]


def _submit(r: redis.Redis, coid: str) -> None:
    r.xadd(
        streams.ORDERS_NEW,
        codec.fields(
            Order(client_order_id=coid, account="acc-1", symbol="BTCUSDT", side="buy", type="market", quantity=0.5)
        ),
    )


@pytest.mark.timeout(120)
def test_the_oms_takes_orders_again_once_its_redis_is_back() -> None:
    # it rides through the outage, and its batches then take a new connection: the one Redis
    # closed failed every batch, and each order was dead-lettered after five tries
    with BenchStack() as stack:
        assert stack.r is not None and stack.server is not None and stack.server.proc is not None
        stack.start("oms")
        _submit(stack.r, "before")
        wait_for(lambda: "PENDING_RISK" in _events(stack.r, "before"), 30, what="the first order taken in")
        url, pid = stack.server.url, stack.server.proc.pid
        os.kill(pid, signal.SIGKILL)
        stack.server.proc.wait()
        again = embedded.EmbeddedRedis(stack.data_dir)
        try:
            assert again.start() == url  # the same port and socket: the OMS reconnects by itself
            r = connection.client(url, stack.auth)  # the server comes back with its ACL users
            _submit(r, "after")
            wait_for(lambda: "PENDING_RISK" in _events(r, "after"), 30, what="an order taken in after the restart")
            assert r.xlen(streams.dlq(streams.ORDERS_NEW)) == 0
            assert r.hget("health:oms:oms-bench", "pid") == str(stack.procs["oms-bench"].pid).encode()  # rode through
            stack.stop("oms-bench")
            r.close()
        finally:
            again.stop()
