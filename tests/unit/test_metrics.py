"""The services' Prometheus metrics without Redis: what the collector reads off the Service base at
scrape time, the /metrics endpoint and its port, the scrape targets made from heartbeats, the
Grafana dashboards and their validation, `tradeops dashboards`, the grafana probe."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from backend import dashboards, metrics
from backend.errors import ConfigError
from backend.messages import Heartbeat
from backend.metrics import Exported, MetricsServer, registry_for
from backend.runtime.scrape import ScrapeConfig, config_text, scraped, targets
from backend.services.base import Service
from backend.services.normalizer import NormalizerService
from backend.settings import Settings
from console.cli import main
from gates import checks


class Widgets(Service):
    name = "widgets"
    exported = (
        Exported("made", "Widgets made.", counter=True),
        Exported("by_kind", "Widgets by kind.", label="kind"),
        Exported("absent", "Not in the heartbeat's metrics."),
    )

    def metrics(self) -> dict[str, Any]:
        return {"made": 3, "by_kind": {"a": 1, "b": 2}, "note": "text is not exported"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in metrics.LABELS))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_the_collector_reads_the_base_counts_and_the_declared_domain_metrics() -> None:
    svc = Widgets(redis_url="redis://127.0.0.1:1", settings=Settings(), instance="widgets-1")
    rec = svc.recorder("stage")
    rec.record_ns(400_000)  # 0.4 ms
    rec.record_ns(3_000_000)  # 3 ms
    svc.stream_stats = {"in": (7, 2, 1)}
    text = generate_latest(registry_for(svc)).decode()
    got = samples(text)
    assert got[("tradeops_processed_total", ())] == 0
    assert got[("tradeops_lag", (("stream", "in"),))] == 7
    assert got[("tradeops_pending", (("stream", "in"),))] == 2
    assert got[("tradeops_dlq_entries", (("stream", "in"),))] == 1
    assert got[("tradeops_state", (("state", "starting"),))] == 1
    assert got[("tradeops_state", (("state", "running"),))] == 0
    assert math.isnan(got[("tradeops_heartbeat_age_seconds", ())])  # no heartbeat yet
    hist = (("name", "stage"),)
    assert got[("tradeops_latency_seconds_bucket", (("le", "0.0001"), *hist))] == 0
    assert got[("tradeops_latency_seconds_bucket", (("le", "0.0005"), *hist))] == 1
    assert got[("tradeops_latency_seconds_bucket", (("le", "0.005"), *hist))] == 2
    assert got[("tradeops_latency_seconds_bucket", (("le", "+Inf"), *hist))] == 2
    assert got[("tradeops_latency_seconds_count", hist)] == 2
    assert got[("tradeops_latency_seconds_sum", hist)] == pytest.approx(0.0034)
    assert got[("tradeops_widgets_made_total", ())] == 3
    assert got[("tradeops_widgets_by_kind", (("kind", "b"),))] == 2
    assert 'instance_id="widgets-1"' in text and 'environment="legacy"' in text and 'service="widgets"' in text
    names = {name for name, _ in got if name.startswith("tradeops_")}
    assert names <= set(metrics.catalog({"widgets": Widgets.exported}))
    assert "tradeops_widgets_absent" in text  # declared: its family is there, without a sample


def test_the_port_is_the_inventory_one_and_a_target_instance_gets_its_own() -> None:
    assert metrics.default_port("normalizer", "legacy") == 8101
    assert metrics.default_port("normalizer", "target") == 8101 + metrics.TARGET_PORT_OFFSET
    assert metrics.default_port("widgets", "legacy") == 0  # not in the inventory: any free port
    svc = NormalizerService(redis_url="redis://127.0.0.1:1", environment="target")
    assert svc.metrics_port == 18101
    svc = NormalizerService(redis_url="redis://127.0.0.1:1", config={"metrics_port": 0})
    assert svc.metrics_port == 0
    with pytest.raises(ConfigError, match=r"\[services.normalizer\]: metrics_port must be a port number .* not 'x'"):
        NormalizerService(redis_url="redis://127.0.0.1:1", config={"metrics_port": "x"})


async def test_the_endpoint_serves_metrics_and_a_taken_port_falls_back() -> None:
    svc = Widgets(redis_url="redis://127.0.0.1:1", settings=Settings())
    first, second = MetricsServer(registry_for(svc)), MetricsServer(registry_for(svc))
    try:
        port = await first.start("127.0.0.1", 0)
        assert first.address == f"127.0.0.1:{port}"
        assert await second.start("127.0.0.1", port) != port  # taken: a free one instead
        with pytest.raises(OSError):
            await MetricsServer(registry_for(svc)).start("127.0.0.1", port, fallback=False)
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://{first.address}/metrics")
            assert resp.status_code == 200 and "tradeops_processed_total" in resp.text
            assert resp.headers["content-type"].startswith("text/plain")
            assert (await client.get(f"http://{second.address}/nothing")).status_code == 404
        wild = MetricsServer(registry_for(svc))
        await wild.start("0.0.0.0", 0)  # every interface: it says this host's name
        assert wild.address == f"{socket.gethostname()}:{wild.port}"
        await wild.close()
    finally:
        await first.close()
        await second.close()


def beat(instance: str, addr: str, state: str = "running", environment: str = "legacy") -> Heartbeat:
    return Heartbeat(
        service=instance.rsplit("-", 1)[0],
        instance=instance,
        environment=environment,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        ts_ns=1,
        started_ns=1,
        pid=1,
        metrics_addr=addr,
    )


def test_scrape_targets_follow_the_heartbeats(tmp_path: Path) -> None:
    beats = [
        beat("risk-legacy", "127.0.0.1:8301"),
        beat("risk-target", "127.0.0.1:18301", environment="target"),
        beat("oms-legacy", "127.0.0.1:8201", state="stopped"),  # gone
        beat("ptrc-legacy", ""),  # serves no metrics
        beat("risk-other", "127.0.0.1:40000"),  # not one of the supervisor's
    ]
    groups = targets(beats, ["risk-legacy", "risk-target", "oms-legacy", "ptrc-legacy"])
    assert groups == [
        {
            "targets": ["127.0.0.1:8301"],
            "labels": {"service": "risk", "environment": "legacy", "instance_id": "risk-legacy"},
        },
        {
            "targets": ["127.0.0.1:18301"],
            "labels": {"service": "risk", "environment": "target", "instance_id": "risk-target"},
        },
    ]
    sc = ScrapeConfig(tmp_path, scrape_interval="1s")
    assert sc.write_config() == tmp_path / "prometheus" / "prometheus.yml"
    assert json.loads(sc.targets_path.read_text()) == []
    assert sc.update(groups) and not sc.update(groups)  # written once, then unchanged
    assert scraped(tmp_path) == {"risk-legacy", "risk-target"}
    text = sc.config_path.read_text()
    assert "scrape_interval: 1s" in text and str(sc.targets_path) in text and "honor_labels: true" in text
    assert config_text("/x/t.json", job="j").count("job_name: j") == 1


def test_every_dashboard_query_names_an_exported_metric() -> None:
    known = metrics.catalog()
    for uid in dashboards.DASHBOARDS:
        model = dashboards.build(uid)
        assert model["uid"] == uid and model["panels"]
        assert dashboards.validate(model, known) == [], uid
    wanted = {"tradeops_processed_total", "tradeops_dead_lettered_total", "tradeops_lag"}
    wanted |= {"tradeops_latency_seconds_bucket", "tradeops_heartbeat_age_seconds"}
    used = {
        n
        for uid in dashboards.DASHBOARDS
        for _, q in dashboards.queries(dashboards.build(uid))
        for n in dashboards.metric_names(q)
    }
    assert wanted <= used


def test_metric_names_and_what_validation_catches() -> None:
    assert dashboards.metric_names(
        'histogram_quantile(0.99, sum by (le, name) (rate(x_bucket{name=~"a|b", le!="1e3"}[5m] offset 1h)))'
    ) == {"x_bucket"}
    assert dashboards.metric_names("sum(a_total) / ignoring(stream) group_left b * 1e3 and on(x) c") == {
        "a_total",
        "b",
        "c",
    }
    bad = {
        "title": "t",
        "panels": [
            {"title": "empty", "targets": []},
            {"title": "typo", "targets": [{"expr": "rate(tradeops_procesed_total[1m])"}]},
            {"title": "constant", "targets": [{"expr": "vector(1)"}]},
        ],
    }
    problems = dashboards.validate(bad, metrics.catalog())
    assert problems == [
        "t: panel 'empty' has no query",
        "t: panel 'typo': no metric 'tradeops_procesed_total' (query 'rate(tradeops_procesed_total[1m])')",
        "t: panel 'constant': query 'vector(1)' names no metric",
    ]
    assert dashboards.validate([], set()) == ["not a Grafana dashboard (no `panels` list)"]


def test_tradeops_dashboards_writes_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dash"
    assert main(["--data-dir", str(tmp_path / "data"), "dashboards", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(f"{uid}.json" for uid in dashboards.DASHBOARDS)
    assert "3 dashboards" in printed and "every metric they name exported" in printed
    assert dashboards.validate_dir(out, metrics.catalog()) == (sorted(out.glob("*.json")), [])
    (out / "broken.json").write_text("{")
    assert dashboards.validate_dir(out, metrics.catalog())[1][0].startswith("broken.json: not readable JSON")
    (tmp_path / "file").write_text("")
    assert main(["dashboards", "--out", str(tmp_path / "file")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_the_grafana_probe_validates_the_written_dashboards(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    ctx = checks.CheckContext(None, "", settings)  # type: ignore[arg-type]  # the probe reads no Redis
    res = checks.probe(ctx, {"target": "infra:grafana"})
    assert res.outcome == "failed" and "tradeops dashboards" in res.evidence["reason"]
    dashboards.write(dashboards.default_dir(tmp_path))
    res = checks.probe(ctx, {"target": "infra:grafana"})
    assert res.outcome == "passed", res.evidence
    assert res.evidence["problems"] == [] and len(res.evidence["files"]) == 3 and res.evidence["queries"] > 20
    model = json.loads((dashboards.default_dir(tmp_path) / "tradeops-services.json").read_text())
    model["panels"][1]["targets"][0]["expr"] = "rate(tradeops_nothing_total[1m])"
    (dashboards.default_dir(tmp_path) / "tradeops-services.json").write_text(json.dumps(model))
    res = checks.probe(ctx, {"target": "infra:grafana"})
    assert res.outcome == "failed" and "no metric 'tradeops_nothing_total'" in res.evidence["problems"][0]
