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


def test_cpgs_lanes_total_as_the_plan_counts_them() -> None:
    """The survey: frontend 9 (public APIs), lowlatency 10 (the real-time critical path), backend 13
    (analytics, storage), 6 entries on several lanes, over 26 entries (18 services + 8 infra)."""
    i = inv.load()
    assert i.lane_totals() == {"frontend": 9, "lowlatency": 10, "backend": 13, "multi": 6, "entries": 26}
    lanes = {e.name: set(e.lanes) for e in [*i.services, *i.infra]}
    # by their meaning: the venue-facing gateways and the order entry are public and on the hot path
    for name in ("gateway", "live-gateway", "oms"):
        assert lanes[name] == {"frontend", "lowlatency"}, name
    assert lanes["risk"] == {"lowlatency"} and lanes["normalizer"] == {"lowlatency", "backend"}
    for name in ("sink-ticks", "sink-alt", "questdb", "minio", "opensearch", "postgres"):
        assert lanes[name] == {"backend"}, name
    assert lanes["grafana"] == {"frontend"}


def test_five_dependency_levels_from_what_each_service_needs() -> None:
    i = inv.load()
    levels = i.levels()
    assert sorted(levels) == [1, 2, 3, 4, 5]
    assert sorted(n for names in levels.values() for n in names) == sorted(s.name for s in i.services)
    lv = i.level_of()
    assert lv["gateway"] == 1 and lv["normalizer"] == 2 and lv["risk"] == 3 and lv["oms"] == 4 and lv["ptrc"] == 5
    for s in i.services:  # level n needs one of level n-1 and none of level n or above
        assert lv[s.name] == 1 + max((lv[d] for d in s.needs), default=0)


def test_reverse_dependencies_are_the_relations_reversed() -> None:
    i = inv.load()
    for s in i.services:
        assert i.needed_by(s.name) == [t.name for t in i.services if s.name in t.needs]
        assert i.migrate_before(s.name) == [t.name for t in i.services if s.name in t.migrate_after]
    # the run-time relation follows the data flow: the normalizer needs the gateway, not the reverse
    assert "gateway" in i.service("normalizer").needs and "normalizer" in i.needed_by("gateway")
    assert i.service("gateway").needs == [] and i.service("gateway").migrate_after == ["normalizer"]
    assert i.needed_by("risk") == ["oms"] and sorted(i.needed_by("oms")) == ["marketplace", "ptrc"]
    # the plan: the P1 services depend on core infrastructure only, and migrate in parallel
    assert all(s.migrate_after == [] for s in i.by_priority()[1])


# run-time needs served through a store rather than the bus (the service reads what the other stored)
STORED = {("md-replay", "sink-ticks"), ("scheduler", "sink-ticks"), ("bt-orchestrator", "sink-ticks")}


def test_every_run_time_need_is_a_data_flow_the_code_declares() -> None:
    """`A needs B` holds when A reads a stream or key B writes, or B consumes a stream A writes (a
    request): from the classes' declarations, so the inventory cannot claim a flow the code lacks."""
    from backend.migration.sheet import _overlap
    from backend.services import service_class

    i = inv.load()
    for s in i.services:
        a = service_class(s.name)
        for d in s.needs:
            b = service_class(d)
            b_writes = b.access().written() + [k.pattern for k in b.keys if k.write]  # its copies too
            a_reads = [r.stream for r in a.reads] + [k.pattern for k in a.keys]
            backed = any(_overlap(x, y) for x in a_reads for y in b_writes) or any(
                r.group and _overlap(r.stream, w.stream) for r in b.reads for w in a.writes
            )
            assert backed or (s.name, d) in STORED, f"{s.name} needs {d}: no declared flow"


def test_the_plan_figures_are_data() -> None:
    plan = inv.load().plan
    assert plan.phases == 8 and plan.phases_complete == 1 and plan.phase1_hours == 8.5
    assert [t.id for t in plan.task] == [f"Task 0{n}" for n in range(1, 7)]
    assert [t.id for t in plan.task if t.optional] == ["Task 06"]
    i = inv.load()
    mvp = [s for s in i.services if s.priority in plan.mvp_priorities]
    assert len(mvp) == 13 and sum(s.hours for s in mvp) == 46
    assert [i.task_hours(t) for t in plan.task] == [2.0, 8.0, 11.0, 14.0, 13.0, 22.0]
