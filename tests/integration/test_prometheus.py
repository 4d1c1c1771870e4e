"""A real Prometheus (Debian's `prometheus`) scrapes a running stack: the supervisor runs normalizer
(legacy and target, as during a cutover), risk and oms as real processes and writes the scrape
config from their heartbeats; Prometheus, on a free loopback port, is queried through its HTTP API
until their metrics arrive (processed, dead-lettered, lag, latency histograms, heartbeat age). The
dashboards query only metrics the live endpoints show, and the phase1 gate's prometheus probe asks
that Prometheus whether the platform's targets are up."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from backend import dashboards, metrics
from backend.bench.risk import seed_prices
from backend.bus import codec, streams
from backend.bus.embedded import free_port
from backend.health import read_heartbeats
from backend.messages import GateEvent, Order
from backend.migration.state import move
from backend.runtime.process import ProcessSupervisor
from backend.runtime.scrape import scraped
from backend.runtime.spawn import spawn_service, stop_process, wait_healthy
from backend.settings import Settings
from gates import audit, checks
from tests.conftest import wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="Debian's prometheus is not installed (`apt-get install prometheus`; .ci/run installs it as root)",
    ),
]
INSTANCES = {"normalizer-legacy", "normalizer-target", "risk-legacy", "oms-legacy"}
# Admission control is not what this test is about: a loaded machine must not make the OMS refuse
# the orders as `overloaded` (tests/integration/test_oms_admission.py covers that).
PATIENT_OMS = "[services.oms.admission]\nmax_intake_age_ms = 30000.0\n"


@pytest.fixture
def stack(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[ProcessSupervisor]:
    """normalizer (legacy + target: it was started, not yet cut over), risk and oms, supervised."""
    seed_prices(r)  # risk approves against a last price
    audit.append(r, GateEvent(gate="phase1", kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="ok"))
    move(r, "normalizer", "start", "ann", "cutover under way")
    config = tmp_path / "config.toml"
    config.write_text(PATIENT_OMS)
    sup = ProcessSupervisor(redis_url, tmp_path / "data", with_exchange=False, config=config)
    sup.services = ["normalizer", "risk", "oms"]
    sup.scrape.scrape_interval = "1s"
    thread = threading.Thread(target=sup.run, name="supervisor", daemon=True)
    thread.start()
    try:
        for inst in INSTANCES:
            service = inst.rsplit("-", 1)[0]
            wait_healthy(r, service, inst, timeout=60, log_path=tmp_path / "data" / "logs" / f"{inst}.log")
        wait_for(lambda: scraped(sup.data_dir) == INSTANCES, 10, what="every instance in the scrape targets")
        yield sup
    finally:
        sup.stop()
        thread.join(10)
        sup.shutdown()


@pytest.fixture
def prometheus(stack: ProcessSupervisor, tmp_path: Path) -> Iterator[str]:
    """A Prometheus on a free loopback port, with the config the supervisor wrote."""
    assert PROMETHEUS is not None
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={stack.scrape.config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, interval=0.1, what="prometheus ready")
        yield url
    finally:
        stop_process(proc)
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def by(results: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {x["metric"].get(label, ""): float(x["value"][1]) for x in results}


@pytest.mark.timeout(240)
def test_prometheus_scrapes_the_running_instances(prometheus: str, stack: ProcessSupervisor, r: redis.Redis) -> None:
    # the scrape config follows the heartbeats: legacy and target on their own ports
    groups = json.loads(stack.scrape.targets_path.read_text())
    addrs = {g["labels"]["instance_id"]: g["targets"][0] for g in groups}
    assert set(addrs) == INSTANCES
    assert addrs["normalizer-legacy"] != addrs["normalizer-target"]
    assert "file_sd_configs" in stack.scrape.config_path.read_text()

    for i in range(5):  # orders through oms -> risk -> oms: the risk round trip is recorded
        order = Order(
            client_order_id=f"m{i}", account="acc-1", symbol="BTCUSDT", side="buy", type="market", quantity=0.01
        )
        r.xadd(streams.ORDERS_NEW, codec.fields(order))
    r.xadd(streams.RISK_REQUESTS, {b"d": b"\xc1poison"})  # dead-lettered by risk

    processed = wait_for(
        lambda: (res := query(prometheus, "tradeops_processed_total")) and set(by(res, "instance_id")) == INSTANCES,
        60,
        interval=0.2,
        what="tradeops_processed_total of every instance in prometheus",
    )
    assert processed
    wait_for(
        lambda: (
            by(query(prometheus, 'tradeops_latency_seconds_count{service="oms", name="risk_rt"}'), "service").get(
                "oms", 0
            )
            >= 5
        ),
        60,
        interval=0.2,
        what="5 risk round trips in the oms histogram",
    )
    wait_for(
        lambda: (
            by(query(prometheus, 'tradeops_dead_lettered_total{service="risk"}'), "stream").get("risk.requests") == 1
        ),
        60,
        interval=0.2,
        what="risk's dead letter counted",
    )
    total = query(prometheus, "sum by (service) (tradeops_processed_total)")
    print("\nsum by (service) (tradeops_processed_total):", json.dumps(total))
    assert by(total, "service")["oms"] >= 5 and by(total, "service")["risk"] >= 5
    p50 = query(
        prometheus,
        'histogram_quantile(0.5, sum by (le) (tradeops_latency_seconds_bucket{name="risk_rt"}))',
    )
    print("risk round trip p50 (s):", json.dumps(p50))
    assert float(p50[0]["value"][1]) > 0
    assert set(by(query(prometheus, 'up{job="tradeops"}'), "instance_id").items()) == {(i, 1.0) for i in INSTANCES}
    assert set(by(query(prometheus, "tradeops_heartbeat_age_seconds"), "instance_id")) == INSTANCES
    assert by(query(prometheus, 'tradeops_lag{service="oms"}'), "stream").keys() == {
        streams.ORDERS_NEW,
        streams.RISK_DECISIONS,
        streams.EXEC_REPORTS,
    }
    normalizer_batch = query(prometheus, 'tradeops_latency_seconds_count{service="normalizer", name="batch"}')
    assert len(normalizer_batch) == 2  # legacy and target, each its own series

    # the dashboards query only metrics that exist: the live endpoints', for the services running
    live: set[str] = set()
    for addr in addrs.values():
        for fam in text_string_to_metric_families(httpx.get(f"http://{addr}/metrics", timeout=5).text):
            live |= metrics.sample_names(fam.name, fam.type)
    assert {n for n in live if n.startswith("tradeops_")} <= set(metrics.catalog())  # the catalog tells the truth
    not_running = tuple(f"tradeops_{s}_" for s in ("gateway", "sink_ticks", "live_gateway"))
    expected = {n for n in metrics.catalog() if not n.startswith(not_running)}
    assert expected <= live, expected - live  # the base's metrics and the running services' are all live
    for uid in dashboards.DASHBOARDS:
        for problem in dashboards.validate(dashboards.build(uid), live):
            assert any(s in problem for s in not_running), problem  # only metrics of services not started here

    # the phase1 gate's probe asks this Prometheus whether the platform's targets are up
    settings = Settings(data_dir=str(stack.data_dir), infra={"prometheus": prometheus})
    ctx = checks.CheckContext(r, "", settings)
    res = checks.probe(ctx, {"target": "infra:prometheus"})
    print("phase1 infra-prometheus:", res.outcome, json.dumps(res.evidence))
    assert res.outcome == "passed", res.evidence
    assert res.evidence["up"] == sorted(INSTANCES) and res.evidence["down"] == []

    # an instance serving metrics that Prometheus does not scrape fails it (its port was taken: it
    # fell back to a free one, published in its heartbeat)
    data = stack.data_dir
    extra = spawn_service("risk", redis_url=stack.redis_url, data_dir=data, instance="risk-extra")
    try:
        wait_healthy(r, "risk", "risk-extra", proc=extra, timeout=60, log_path=data / "logs" / "risk-extra.log")
        beat = {b.instance: b for b in read_heartbeats(r)}
        assert beat["risk-extra"].metrics_addr not in ("", addrs["risk-legacy"])
        res = checks.probe(ctx, {"target": "infra:prometheus"})
        assert res.outcome == "failed" and res.evidence["not_scraped"] == ["risk-extra"], res.evidence
        # without a Prometheus configured, the probe scrapes every live instance itself
        res = checks.probe(checks.CheckContext(r, "", Settings(data_dir=str(data))), {"target": "infra:prometheus"})
        assert res.outcome == "passed" and set(res.evidence["answered"]) == INSTANCES | {"risk-extra"}, res.evidence
    finally:
        stop_process(extra)
