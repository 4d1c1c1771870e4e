"""`tradeops deploy k8s`: the manifests validate offline against the pinned Kubernetes version's
schemas (kubernetes-validate, strict: no unknown field), and hold what the inventory says: every
service a Deployment (its replicas, the heartbeat's health check as readiness, its secrets as
mounted files named by the `*_FILE` variables) and a Service on its port, every CPGS lane a
NetworkPolicy, a PodDisruptionBudget for each high-risk service, Redis as a StatefulSet or an
external URL; no secret value anywhere in the files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from backend.deploy import k8s, workload
from backend.migration import inventory
from backend.migration.compose import LANES
from backend.runtime.secretfiles import service_files

kv = pytest.importorskip("kubernetes_validate")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """`tradeops deploy k8s` run as the operator runs it: (manifests dir, data dir, its stdout)."""
    tmp = tmp_path_factory.mktemp("k8s")
    data, out = tmp / "data", tmp / "k8s"
    res = subprocess.run(
        [sys.executable, "-m", "console.cli", "--data-dir", str(data), "deploy", "k8s", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return out, data, res.stdout


def load(out: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for p in sorted(out.glob("*.yaml")) for d in yaml.load_all(p.read_text(), Loader=loader)]


def test_the_manifests_validate_against_the_pinned_kubernetes(written: tuple[Path, Path, str]) -> None:
    out, _, _ = written
    docs = load(out)
    for d in docs:  # raises ValidationError naming the field
        kv.validate(d, k8s.KUBERNETES_VERSION, strict=True)
    assert docs[0]["kind"] == "Namespace" and {d["metadata"].get("namespace") for d in docs[1:]} == {"tradeops"}


def test_every_service_lane_and_high_risk_service_is_there(written: tuple[Path, Path, str]) -> None:
    out, data, _ = written
    docs = load(out)
    inv = inventory.load()
    deployments, services, pdbs = (by_kind(docs, k) for k in ("Deployment", "Service", "PodDisruptionBudget"))
    assert set(deployments) == {s.name for s in inv.services}
    assert set(pdbs) == {s.name for s in inv.services if s.risk == "high"} == {"gateway", "live-gateway", "risk", "oms"}
    for s in inv.services:
        dep = deployments[s.name]["spec"]
        assert dep["replicas"] == s.replicas == 1
        assert dep["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}  # start-first
        pod = dep["template"]["spec"]
        (c,) = pod["containers"]
        assert c["command"] == ["python", "-m", "backend.services"]
        assert c["args"] == [s.name, "--environment", "target"]
        assert c["readinessProbe"]["exec"]["command"] == ["python", "-m", "backend.runtime.healthcheck", s.name]
        env = {e["name"]: e for e in c["env"]}
        assert env["TRADEOPS_INSTANCE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["TRADEOPS_REDIS_URL"]["value"] == "redis://redis.tradeops.svc:6379/0"
        assert env["TRADEOPS_REDIS_USER"]["value"] == s.name
        # secrets: a mounted Secret, one file per secret, the *_FILE variables naming them; no value
        (vol,) = pod["volumes"]
        assert vol["secret"]["secretName"] == f"tradeops-{s.name}"
        files = service_files(s.name, data / "secrets")
        assert [i["path"] for i in vol["secret"]["items"]] == [f.name for f in files]
        assert c["volumeMounts"] == [{"name": "secrets", "mountPath": "/run/secrets", "readOnly": True}]
        for f in files:
            assert env[f.env]["value"] == f"/run/secrets/{f.name}"
        assert not [n for n in env if n.endswith(("PASSWORD", "API_KEY", "API_SECRET"))]
        lanes = {k.removeprefix("tradeops.io/lane-") for k in dep["template"]["metadata"]["labels"] if "lane-" in k}
        assert lanes == set(s.lanes)
        assert services[s.name]["spec"]["ports"][0]["port"] == s.port
        if s.name in pdbs:
            assert pdbs[s.name]["spec"]["minAvailable"] == 1
            assert pdbs[s.name]["spec"]["selector"]["matchLabels"] == dep["selector"]["matchLabels"]
    policies = by_kind(docs, "NetworkPolicy")
    assert set(policies) == {f"lane-{lane}" for lane in LANES}
    for lane in LANES:
        spec = policies[f"lane-{lane}"]["spec"]
        sel = {f"tradeops.io/lane-{lane}": "true"}
        assert spec["podSelector"]["matchLabels"] == sel
        assert spec["ingress"] == [{"from": [{"podSelector": {"matchLabels": sel}}]}]
        outside = [e for e in spec["egress"] if any("ipBlock" in t for t in e["to"])]
        assert bool(outside) == (lane == "frontend")  # only the frontend lane reaches the venues
    # Redis: the embedded server's settings, its ACL file from a Secret, on its inventory lanes
    sts = by_kind(docs, "StatefulSet")["redis"]["spec"]
    (rc,) = sts["template"]["spec"]["containers"]
    assert rc["args"] == ["redis-server", *workload.redis_args()] and "command" not in rc  # the image's entrypoint
    assert rc["args"][rc["args"].index("--maxmemory-policy") + 1] == "noeviction"
    assert rc["args"][-2:] == ["--aclfile", "/run/secrets/redis-acl"]
    labels = sts["template"]["metadata"]["labels"]
    assert {k for k in labels if "lane-" in k} == {
        f"tradeops.io/lane-{x}" for x in inventory.load().infra_spec("redis").lanes
    }
    assert by_kind(docs, "Service")["redis"]["spec"]["clusterIP"] == "None"


def test_no_secret_value_is_in_the_manifests_or_the_output(written: tuple[Path, Path, str]) -> None:
    out, data, stdout = written
    values = [p.read_text().strip() for p in (data / "secrets").rglob("*") if p.is_file() and p.name != "redis.acl"]
    assert len(values) >= 20 and all(len(v) >= 16 for v in values)
    text = "".join(p.read_text() for p in out.glob("*.yaml"))
    assert "&id0" not in text  # written out, no YAML aliases
    acl_lines = (data / "secrets" / "redis.acl").read_text()
    hashes = [tok[1:] for tok in acl_lines.split() if tok.startswith("#")]
    assert hashes and not any(v in text or v in stdout for v in values + hashes)
    assert "kind: Secret\n" not in text and "stringData" not in text and "\ndata:" not in text
    # the Secrets are made from the data dir's files: the commands name paths only
    assert f"--from-file=redis-risk={data}/secrets/redis/risk" in stdout
    assert f"--from-file=redis-acl={data}/secrets/redis.acl" in stdout


def test_replicas_and_an_external_redis() -> None:
    inv = inventory.load()
    more = inventory.Inventory(
        services=[msgspec.structs.replace(s, replicas=3) if s.name == "oms" else s for s in inv.services],
        infra=inv.infra,
    )
    works = workload.workloads(more, ["oms", "sink-ticks"])
    docs = k8s.manifests(works, redis_url="redis://bus.example.com:6380/0")
    for d in docs:
        kv.validate(d, k8s.KUBERNETES_VERSION, strict=True)
    assert by_kind(docs, "Deployment")["oms"]["spec"]["replicas"] == 3
    assert by_kind(docs, "PodDisruptionBudget")["oms"]["spec"]["minAvailable"] == 2  # never below 2 of 3
    assert "StatefulSet" not in {d["kind"] for d in docs} and "redis" not in by_kind(docs, "Service")
    env = {
        e["name"]: e.get("value")
        for e in by_kind(docs, "Deployment")["sink-ticks"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRADEOPS_REDIS_URL"] == "redis://bus.example.com:6380/0"
    backend = by_kind(docs, "NetworkPolicy")["lane-backend"]["spec"]["egress"]
    assert {"protocol": "TCP", "port": 6380} in backend[-1]["ports"]  # every lane reaches the external Redis
    with pytest.raises(inventory.InventoryError, match="replicas 0 is not at least 1"):
        inventory.parse(
            (Path(inventory.__file__).with_name("inventory.toml").read_text()).replace(
                'name = "oms"\n', 'name = "oms"\nreplicas = 0\n'
            )
        )


def test_replicas_given_on_the_command_line() -> None:
    assert workload.parse_replicas(["oms=3", "risk=2"]) == {"oms": 3, "risk": 2}
    for bad, why in (("oms", "expected SERVICE=N"), ("oms=x", "expected SERVICE=N")):
        with pytest.raises(inventory.InventoryError, match=why):
            workload.parse_replicas([bad])
    with pytest.raises(inventory.InventoryError, match="unknown service 'nope'"):
        workload.workloads(replicas={"nope": 2})
    with pytest.raises(inventory.InventoryError, match="replicas of oms: 0 is not at least 1"):
        workload.workloads(replicas={"oms": 0})
    (w,) = workload.workloads(services=["oms"], replicas={"oms": 4})
    assert w.replicas == 4 and inventory.load().service("oms").replicas == 1
