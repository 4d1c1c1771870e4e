"""The task04 performance checks measure the deployed target instances (kind `target`): paper
probe orders through `risk-target` and `oms-target` as real processes on real Redis, the figures
taken from what those instances stamp, the instance measured named with its pid; with no target
deployed the check fails naming what is missing and the command that provides it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bench.risk import seed_prices
from backend.settings import Settings
from gates import model
from gates.checks import CheckContext, run_check
from gates.model import Check
from tests.integration.test_trading_path import PATIENT_OMS


def ctx(r: redis.Redis, url: str, tmp_path: Path) -> CheckContext:
    return CheckContext(r, url, Settings(data_dir=str(tmp_path)))


def target_check(service: str, metric: str, op: str, threshold: float, rate: float = 50, seconds: float = 1) -> Check:
    return Check(
        id=f"{service}-{metric}",
        title="t",
        kind="target",
        params={"service": service, "metric": metric, "op": op, "threshold": threshold}
        | {"rate": rate, "seconds": seconds},
    )


def test_task04_perf_checks_are_target_checks() -> None:
    g = model.load()["task04"]
    perf = {c.id: c for c in g.checks if c.id in ("risk-p50", "oms-p50", "oms-p99", "throughput", "paper-trading")}
    assert len(perf) == 5 and {c.kind for c in perf.values()} == {"target"}
    assert perf["risk-p50"].params["service"] == "risk" and perf["oms-p99"].params["service"] == "oms"


@pytest.mark.timeout(120)
def test_no_target_deployed_fails_naming_what_is_missing(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        st.start("risk", instance="risk-legacy")  # a legacy instance is not what is measured
        res = run_check(ctx(r, redis_url, tmp_path), target_check("risk", "p50_ms", "<=", 1000))
    assert res.outcome == "failed"
    ev = res.evidence
    assert ev["missing"].startswith("no deployed risk target: risk is planned in the migration, so no risk-target")
    assert ev["provide"].startswith("tradeops migrate start risk --reason")
    assert [i["instance"] for i in ev["instances"]] == []  # the legacy instance is not a target
    assert "measured" not in ev


@pytest.mark.timeout(180)
def test_target_checks_measure_the_deployed_targets(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        oms_config = st.data_dir / "oms.toml"
        oms_config.write_text(PATIENT_OMS)
        risk = st.start("risk", instance="risk-target", environment="target")
        st.start("live-gateway")
        oms = st.start("oms", instance="oms-target", environment="target", config=oms_config)
        c = ctx(r, redis_url, tmp_path)
        res = run_check(c, target_check("risk", "p50_ms", "<=", 10_000))
        ev = res.evidence
        assert res.outcome == "passed", ev
        (m,) = ev["measured"]
        assert m["instance"] == "risk-target" and m["environment"] == "target" and m["pid"] == risk.pid
        assert m["pid_unchanged"] and m["processed_during_probe"] >= ev["probe"]["orders"] > 0
        assert "check_p50" in m["recorded_latency_ms"]  # the target's own recorder, from its heartbeat
        assert ev["result"]["handled_by"] == {"risk-target": ev["probe"]["orders"]}
        assert ev["result"]["handled_by_target"] == ev["probe"]["orders"] and ev["value"] == ev["result"]["p50_ms"]
        assert any(p.startswith("oms-target (target, pid ") for p in ev["path"]["oms"])

        res = run_check(c, target_check("oms", "lost", "==", 0))
        ev = res.evidence
        assert res.outcome == "passed", ev
        (m,) = ev["measured"]
        assert m["instance"] == "oms-target" and m["pid"] == oms.pid
        assert ev["result"]["handled_by"] == {"oms-target": ev["probe"]["orders"]} and ev["value"] == 0
        assert ev["result"]["accepted"] == ev["probe"]["orders"] and ev["result"]["p50_ms"] is not None
        assert "intake_to_accepted_p50" in m["recorded_latency_ms"]

        # a threshold the target does not meet fails, with the same evidence
        res = run_check(c, target_check("oms", "p50_ms", "<=", 0.0))
        assert res.outcome == "failed" and res.evidence["measured"][0]["instance"] == "oms-target"


@pytest.mark.timeout(180)
def test_positions_makes_its_own_paper_probe_through_the_services(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    c = model.load()["task05"].check("positions")
    assert c.kind == "paper"
    res = run_check(ctx(r, redis_url, tmp_path), c)
    assert res.outcome == "failed"
    assert res.evidence["missing"].startswith("no running oms, risk, live-gateway, ptrc: a paper probe order")
    assert res.evidence["provide"].startswith("tradeops up")
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        oms_config = st.data_dir / "oms.toml"
        oms_config.write_text(PATIENT_OMS)
        st.start("risk", instance="risk-target", environment="target")
        st.start("live-gateway")
        st.start("ptrc", instance="ptrc-target", environment="target")
        st.start("oms", instance="oms-target", environment="target", config=oms_config)
        res = run_check(ctx(r, redis_url, tmp_path), c)
    ev = res.evidence
    assert res.outcome == "passed", ev
    assert ev["taken_in_by"] == dict.fromkeys(ev["probe"]["orders"], "oms-target")
    assert [f["order"] for f in ev["fills"]] == ev["probe"]["orders"]
    assert [p["quantity"] for p in ev["positions"]][-1] == 0.0  # the closing order leaves the probe account flat
    assert any(p.startswith("ptrc-target (target, pid ") for p in ev["path"]["ptrc"])
