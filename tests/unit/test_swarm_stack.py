"""The swarm stack file as `tradeops deploy swarm` writes it (no engine needed; the end-to-end run
is tests/integration/test_swarm.py): each service a legacy and a target swarm service whose
replicas follow the inventory and the migration board, one overlay per CPGS lane (backend
internal), Docker secrets as files named by the `*_FILE` variables, the heartbeat's health check,
a start-first update policy, the bus's Redis in the stack or outside it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml

from backend.deploy import swarm, workload
from backend.migration import inventory
from backend.migration.state import ServiceState
from backend.runtime.image import ImageSpec


def board(**states: str) -> dict[str, ServiceState]:
    return {s.name: ServiceState(s.name, s.priority, states.get(s.name, "planned")) for s in inventory.load().services}


def test_every_service_is_legacy_and_target_with_the_replicas_the_board_wants(tmp_path: Path) -> None:
    inv = inventory.load()
    more = inventory.Inventory(
        services=[msgspec.structs.replace(s, replicas=3) if s.name == "oms" else s for s in inv.services],
        infra=inv.infra,
    )
    works = workload.workloads(more, secrets_dir=tmp_path / "secrets")
    data = swarm.stack_file(works, ImageSpec("tradeops:1.0"), tmp_path / "secrets", states=board(oms="deploying"))
    services = data["services"]
    assert set(services) == {"redis"} | {f"{s.name}-{env}" for s in inv.services for env in ("legacy", "target")}
    assert services["oms-legacy"]["deploy"]["replicas"] == services["oms-target"]["deploy"]["replicas"] == 3
    assert (services["risk-legacy"]["deploy"]["replicas"], services["risk-target"]["deploy"]["replicas"]) == (1, 0)
    for s in inv.services:
        svc = services[f"{s.name}-target"]
        assert svc["entrypoint"] == ["python", "-m", "backend.services"]
        assert svc["command"] == [s.name, "--environment", "target"]
        assert svc["environment"]["TRADEOPS_INSTANCE"] == f"{s.name}-target-{{{{.Task.Slot}}}}"
        assert svc["environment"]["TRADEOPS_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["environment"]["TRADEOPS_REDIS_PASSWORD_FILE"] == f"/run/secrets/redis-{s.name}"
        assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", "backend.runtime.healthcheck", s.name]
        assert svc["healthcheck"]["interval"] == "5s"
        assert svc["networks"] == list(s.lanes)
        assert svc["deploy"]["update_config"]["order"] == "start-first"
        assert svc["deploy"]["labels"]["tradeops.environment"] == "target"
        assert data["secrets"][f"redis-{s.name}"] == {"file": str(tmp_path / "secrets" / "redis" / s.name)}
    assert services["live-gateway-legacy"]["secrets"] == [
        "redis-live-gateway",
        "exchange-api-key",
        "exchange-api-secret",
    ]
    assert data["networks"]["backend"] == {
        "driver": "overlay",
        "labels": {"tradeops.lane": "backend"},
        "internal": True,
    }
    assert "internal" not in data["networks"]["frontend"]
    redis = services["redis"]
    assert redis["image"] == "redis:7.2" and redis["command"] == ["redis-server", *workload.redis_args()]
    assert redis["networks"] == list(inv.infra_spec("redis").lanes) and redis["deploy"]["endpoint_mode"] == "dnsrr"
    assert data["secrets"]["redis-acl"] == {"file": str(tmp_path / "secrets" / "redis.acl")}
    text = swarm.write_stack_file(data, tmp_path / "stack.yml").read_text()
    assert yaml.safe_load(text) == data
    assert "PASSWORD:" not in text and "API_KEY:" not in text  # only the _FILE variables


def test_before_any_move_legacy_only_and_an_external_redis(tmp_path: Path) -> None:
    works = workload.workloads(services=["risk", "gateway"], secrets_dir=tmp_path)
    data = swarm.stack_file(works, ImageSpec("tradeops:1.0"), tmp_path, redis_url="redis://bus:6379/0")
    assert set(data["services"]) == {"risk-legacy", "risk-target", "gateway-legacy", "gateway-target"}
    assert [data["services"][n]["deploy"]["replicas"] for n in ("risk-legacy", "risk-target")] == [1, 0]
    assert data["services"]["risk-legacy"]["environment"]["TRADEOPS_REDIS_URL"] == "redis://bus:6379/0"
    assert "redis-acl" not in data["secrets"] and "volumes" not in data
    stranded = workload.workloads(services=["sink-ticks"], secrets_dir=tmp_path)
    with pytest.raises(swarm.SwarmError, match="sink-ticks only on internal lanes"):
        swarm.stack_file(stranded, ImageSpec("tradeops:1.0"), tmp_path, redis_url="redis://bus:6379/0")
