"""The shipped inventory and every validation rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backend.migration import inventory as inv
from backend.migration.inventory import InventoryError, parse

SEED_HOURS = {1: 8.0, 2: 11.0, 3: 14.0, 4: 13.0, 5: 22.0}


def test_shipped_inventory_has_18_services_and_8_infra() -> None:
    i = inv.load()
    assert len(i.services) == 18
    assert len(i.infra) == 8
    assert {x.name for x in i.infra} == {
        "redis",
        "questdb",
        "minio",
        "opensearch",
        "postgres",
        "prometheus",
        "grafana",
        "vault",
    }
    assert {p: sum(s.hours for s in ss) for p, ss in i.by_priority().items()} == SEED_HOURS
    assert sum(s.hours for s in i.services) == 68
    assert {s.name for s in i.by_priority()[4]} >= {"refdata", "scheduler", "alerting", "md-replay"}
    assert i.service("risk").sla == {"p50_ms": 1.5}
    assert i.service("oms").sla["p99_ms"] == 50.0
    assert all(s.task == inv.TASK_OF_PRIORITY[s.priority] for s in i.services)


def test_order_puts_dependencies_first() -> None:
    i = inv.load()
    order = i.order()
    for s in i.services:
        for d in s.migrate_after:
            assert order.index(d) < order.index(s.name)
    start = i.start_order()
    for s in i.services:
        for d in s.needs:
            assert start.index(d) < start.index(s.name)


BASE_INFRA = """
[[infra]]
name = "redis"
port = 6379
lanes = ["backend"]
probe = { kind = "tcp" }
standin = "embedded"
"""


def svc(name: str, priority: int = 1, port: int = 8000, deps: str = "", infra: str = '"redis"', needs: str = "") -> str:
    return f"""
[[service]]
name = "{name}"
priority = {priority}
task = "Task 02"
purpose = "p"
port = {port}
lanes = ["backend"]
infra = [{infra}]
needs = [{needs}]
migrate_after = [{deps}]
complexity = "simple"
risk = "low"
hours = 1
"""


def test_valid_small_file() -> None:
    i = parse(BASE_INFRA + svc("a") + svc("b", 2, 8001, '"a"'))
    assert i.order() == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (BASE_INFRA + svc("a", deps='"ghost"'), r"service 'a': unknown service 'ghost' in migrate_after"),
        (BASE_INFRA + svc("a", infra='"kafka"'), r"service 'a': unknown infrastructure dependency 'kafka'"),
        (BASE_INFRA + svc("a", 1, 8000, '"b"') + svc("b", 1, 8001, '"a"'), r"cycle in migrate_after: "),
        (BASE_INFRA + svc("a", needs='"ghost"'), r"service 'a': unknown service 'ghost' in needs"),
        (BASE_INFRA + svc("a", 1, 8000, needs='"b"') + svc("b", 2, 8001, needs='"a"'), r"cycle in needs: "),
        (BASE_INFRA + svc("a", needs='"a"'), r"service 'a' needs itself"),
        (
            BASE_INFRA + svc("a", 1, 8000, '"b"') + svc("b", 2, 8001),
            r"service 'a' \(P1\) is migrated after 'b' \(P2\), a later priority",
        ),
        (BASE_INFRA + svc("a") + svc("a", 1, 8001), r"service 'a': duplicate name"),
        (BASE_INFRA + svc("a") + svc("b", 1, 8000), r"service 'b': duplicate port 8000 \(also 'a'\)"),
        (BASE_INFRA + svc("a", 1, 6379), r"service 'a': duplicate port 6379 \(also 'redis'\)"),
        (BASE_INFRA + svc("a").replace("hours = 1", "hours = 1\nowner = 'x'"), r"service 'a': .*unknown field `owner`"),
        (BASE_INFRA + svc("a").replace('risk = "low"', 'risk = "extreme"'), r"service 'a': .*risk"),
        (BASE_INFRA + svc("a", priority=7), r"service 'a': priority 7 is not 1..5"),
        ("[[service]\nname=", r"not valid TOML"),
    ],
)
def test_each_validation_error_names_entry_and_rule(text: str, match: str) -> None:
    with pytest.raises(InventoryError, match=match):
        parse(text, "f.toml")


def test_every_service_is_registered_with_its_class_and_domain_package() -> None:
    """The registry (backend/services/__init__.py) is where a service's name meets its code: its
    class, and the domain package it runs on (named differently: ptrc -> backend.posttrade)."""
    from backend.services import SERVICES

    assert set(SERVICES) == {s.name for s in inv.load().services}
    root = Path(__file__).parents[2]
    for name, entry in SERVICES.items():
        module, _, cls = entry.target.partition(":")
        source = root.joinpath(*module.split(".")).with_suffix(".py")
        tree = ast.parse(source.read_text())
        assert any(isinstance(n, ast.ClassDef) and n.name == cls for n in tree.body), (name, entry.target)
        if entry.domain is None:
            continue
        assert root.joinpath(*entry.domain.split("."), "__init__.py").is_file(), (name, entry.domain)
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert any(m == entry.domain or m.startswith(entry.domain + ".") for m in imported), (name, entry.domain)
