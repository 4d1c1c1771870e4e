"""Each check kind passes and fails against real Redis and real services; a timeout is
inconclusive."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from pathlib import Path

import pytest
import redis

from backend.bus import codec, streams
from backend.bus.embedded import free_port
from backend.marketdata import store, ticks
from backend.messages import Tick
from backend.services.base import Service
from backend.settings import Settings
from gates.checks import CheckContext, run_check
from gates.model import Check


def ctx(r: redis.Redis, url: str, tmp_path: Path, **settings) -> CheckContext:
    return CheckContext(r, url, Settings(data_dir=str(tmp_path), **settings))


class Beating(Service):
    name = "normalizer"


@pytest.mark.timeout(30)
def test_health(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    c = Check(id="h", title="h", kind="health", params={"services": ["normalizer"]})
    res = run_check(ctx(r, redis_url, tmp_path), c)
    assert res.outcome == "failed" and res.evidence["services"]["normalizer"]["instances"] == 0
    svc = Beating(redis_url=redis_url, instance="n-1")
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_until_complete, args=(svc.run(),), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not r.exists("health:normalizer:n-1") and time.monotonic() < deadline:
            time.sleep(0.02)
        res = run_check(ctx(r, redis_url, tmp_path), c)
        assert res.outcome == "passed" and res.evidence["services"]["normalizer"]["running_fresh"] == 1
    finally:
        loop.call_soon_threadsafe(svc.request_stop)
        t.join(10)


def test_flow_passes_fails_and_times_out(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    c = Check(id="f", title="f", kind="flow", params={"from": "a.in", "to": "a.out", "window_s": 0.5})
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            r.xadd("a.in", {"x": 1})
            r.xadd("a.out", {"x": 1})
            stop.wait(0.02)

    th = threading.Thread(target=pump)
    th.start()
    try:
        res = run_check(ctx(r, redis_url, tmp_path), c)
    finally:
        stop.set()
        th.join()
    assert res.outcome == "passed" and res.evidence["entries"]["a.in"] > 0
    r.xadd("a.in", {"x": 1})
    res = run_check(ctx(r, redis_url, tmp_path), c)  # nothing flows now
    assert res.outcome == "failed" and res.evidence["reason"] == "nothing passed in the window"
    slow = Check(id="f", title="f", kind="flow", params={"from": "a.in", "to": "a.out", "window_s": 5}, timeout_s=0.3)
    res = run_check(ctx(r, redis_url, tmp_path), slow)
    assert res.outcome == "inconclusive" and "timed out after 0.3s" in res.evidence["reason"]


def test_a_flow_with_no_traffic_names_what_is_missing_and_what_provides_it(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # (task05's `positions` makes its own paper traffic now: tests/integration/test_gates_targets.py)
    params = {
        "from": "exec.reports",
        "to": "positions",
        "window_s": 0.2,
        "missing": "no fills: no paper orders traded in the window",
        "provide": "tradeops order submit buy 0.001 BTCUSDT (one fill), then run the check again",
    }
    c = Check(id="positions", title="fills -> positions flowing", kind="flow", params=params)
    res = run_check(ctx(r, redis_url, tmp_path), c)
    assert res.outcome == "failed"
    assert res.evidence["missing"] == "exec.reports 0 in 0.2s: no fills: no paper orders traded in the window"
    assert res.evidence["provide"].startswith("tradeops order submit buy 0.001 BTCUSDT")
    r.xadd("exec.reports", {"x": 1})
    stop = threading.Event()

    def fills() -> None:
        while not stop.is_set():
            r.xadd("exec.reports", {"x": 1})
            stop.wait(0.02)

    th = threading.Thread(target=fills)
    th.start()
    try:
        res = run_check(ctx(r, redis_url, tmp_path), c)
    finally:
        stop.set()
        th.join()
    assert res.outcome == "failed" and res.evidence["reason"] == "nothing reached positions"
    assert "positions 0 in 0.2s while exec.reports had" in res.evidence["missing"]


def test_data(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    c = Check(id="d", title="d", kind="data", params={"sink": "ticks", "min_rows": 3})
    assert run_check(ctx(r, redis_url, tmp_path), c).outcome == "failed"
    batch = ticks.from_ticks([Tick("BTCUSDT", i, 1.0, 1.0, time.time_ns()) for i in range(3)])
    store.ParquetStore(store.ticks_dir(tmp_path)).write(store.to_table([("1-0", batch)]), "1-0", "1-0")
    res = run_check(ctx(r, redis_url, tmp_path), c)
    assert res.outcome == "passed" and res.evidence["rows"] == 3


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/status" else 404)
        self.end_headers()

    def log_message(self, *a) -> None:
        pass


def test_probe_tcp_http_and_standin(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        port = srv.server_address[1]
        c = Check(id="p", title="p", kind="probe", params={"target": "infra:questdb"})
        res = run_check(ctx(r, redis_url, tmp_path, infra={"questdb": f"http://127.0.0.1:{port}"}), c)
        assert res.outcome == "passed" and res.evidence["probed"] == f"http://127.0.0.1:{port}/status"
        res = run_check(ctx(r, redis_url, tmp_path), c)  # nothing configured: the stand-in
        assert res.outcome == "passed" and res.evidence["probed"] == "embedded stand-in"
        dead = f"tcp://127.0.0.1:{free_port()}"
        pg = Check(id="p", title="p", kind="probe", params={"target": "infra:postgres"})
        res = run_check(ctx(r, redis_url, tmp_path, infra={"postgres": dead}), pg)
        assert res.outcome == "failed" and "refused" in res.evidence["error"].lower()
        res = run_check(
            ctx(r, redis_url, tmp_path), Check(id="v", title="v", kind="probe", params={"target": "bus:version"})
        )
        assert res.outcome == "passed" and res.evidence["redis_version"] >= "7"
    finally:
        srv.shutdown()


def test_prometheus_probe_fails_without_instances_or_with_no_prometheus_there(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """(Its passing cases, against a real Prometheus and live instances: test_prometheus.py.)"""
    c = Check(id="p", title="p", kind="probe", params={"target": "infra:prometheus"})
    res = run_check(ctx(r, redis_url, tmp_path), c)  # nothing configured, nothing running
    assert res.outcome == "failed" and res.evidence["instances"] == 0
    assert "start the stack" in res.evidence["reason"]
    dead = f"http://127.0.0.1:{free_port()}"
    res = run_check(ctx(r, redis_url, tmp_path, infra={"prometheus": dead}), c)
    assert res.outcome == "failed" and res.evidence["probed"] == f"{dead}/api/v1/query"
    assert res.evidence["query"] == 'up{job="tradeops"}' and res.evidence["error"]


@pytest.mark.timeout(120)
def test_perf_passes_fails_and_missing_bench_is_inconclusive(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    args = {"ticks": 200000, "batch": 500}
    ok = Check(
        id="p",
        title="p",
        kind="perf",
        params={"bench": "normalizer", "metric": "ticks_per_s", "op": ">=", "threshold": 1000, "args": args},
    )
    res = run_check(ctx(r, redis_url, tmp_path), ok)
    assert res.outcome == "passed" and res.evidence["value"] >= 1000 and res.evidence["threshold"] == 1000
    bad = Check(
        id="p",
        title="p",
        kind="perf",
        params={"bench": "normalizer", "metric": "dlq", "op": ">", "threshold": 0, "args": args},
    )
    assert run_check(ctx(r, redis_url, tmp_path), bad).outcome == "failed"
    missing = Check(
        id="p", title="p", kind="perf", params={"bench": "nosuch", "metric": "x", "op": ">", "threshold": 0}
    )
    res = run_check(ctx(r, redis_url, tmp_path), missing)
    assert res.outcome == "inconclusive" and "not built yet" in res.evidence["reason"]


def test_manual_checks_are_not_run() -> None:
    res = run_check(None, Check(id="m", title="m", kind="manual"))  # type: ignore[arg-type]  # manual: no context read
    assert res.outcome == "inconclusive"
    assert codec is not None and streams is not None
