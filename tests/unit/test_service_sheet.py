"""Each service's sheet: the plan's parts, with data flows, configuration and secrets read from the
service's code (its class's declarations, its Config struct), so they cannot drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.bus import streams
from backend.migration import inventory
from backend.migration.inventory import InventoryError
from backend.migration.sheet import sections, sheet, text
from backend.services import service_class

NAMES = [s.name for s in inventory.load().services]


@pytest.mark.parametrize("name", NAMES)
def test_the_sheet_holds_every_part_the_plan_documents(name: str) -> None:
    sh = sheet(name)
    spec = inventory.load().service(name)
    assert sh.purpose and sh.port == spec.port and sh.lanes == spec.lanes and sh.infra
    assert sh.testing and sh.known_issues and sh.complexity and 1 <= sh.level <= 5
    heads = [h for h, _ in sections(sh)]
    assert heads == [
        "Overview",
        "Dependencies",
        "Data flows (declared in code)",
        f"Configuration [services.{name}]",
        "Environment variables",
        "Secrets",
        "Testing requirements",
        "Known issues",
    ]
    for entry in sh.testing:  # a test file named as a requirement exists
        for word in entry.replace(",", " ").split():
            if word.startswith("tests/"):
                assert (Path(__file__).parents[2] / word).is_file(), (name, word)


@pytest.mark.parametrize("name", NAMES)
def test_data_flows_are_the_classes_declarations(name: str) -> None:
    cls = service_class(name)
    sh = sheet(name)
    consumed = [(f.stream, f.group) for f in sh.flows if f.how == "consumes"]
    assert consumed == [(r.stream, name) for r in cls.reads if r.group]  # the group is the service's name
    assert [f.stream for f in sh.flows if f.how == "reads"] == [r.stream for r in cls.reads if not r.group]
    assert [f.stream for f in sh.flows if f.how == "writes"] == [w.stream for w in cls.writes]
    assert [f.stream for f in sh.flows if f.how == "dead letters"] == [
        streams.dlq(r.stream) for r in cls.reads if r.group
    ]
    assert [(k.pattern, k.how) for k in sh.keys if k.how != "scripts on"] == [
        (k.pattern, "changes" if k.write else "reads") for k in cls.keys
    ]
    assert [c.name for c in sh.config] == list(cls.Config.__struct_fields__)
    assert [n for n, _ in sh.secrets] == [f"redis/{name}", *(s.name for s in cls.secrets)]


def test_the_peers_of_a_flow_come_from_the_other_services_declarations() -> None:
    oms = {f.stream: f for f in sheet("oms").flows if f.how in ("consumes", "writes")}
    assert oms[streams.RISK_DECISIONS].peers == ["risk"]
    assert oms[streams.RISK_REQUESTS].peers == ["risk (group risk)"]
    assert oms[streams.EXEC_ORDERS].peers == ["live-gateway (group live-gateway)"]
    assert "operator (console, CLI)" in oms[streams.ORDERS_NEW].peers and "marketplace" in oms[streams.ORDERS_NEW].peers
    gw = sheet("gateway")
    assert [c.name for c in gw.config][:2] == ["urls", "news_url"]
    assert gw.config[0].doc.startswith("Websocket URLs")
    assert ("exchange/api-key", "TRADEOPS_EXCHANGE_API_KEY") in gw.secrets
    assert any(k.startswith("TRADEOPS_EXCHANGE_API_KEY") for k, _ in gw.env)
    assert gw.external and sheet("normalizer").external == []


def test_text_and_unknown_service() -> None:
    out = text(sheet("normalizer"))
    assert "consumes md.ticks.raw in group normalizer from gateway" in out
    assert "needs at run time: gateway, refdata" in out and "dependency level 2" in out
    with pytest.raises(InventoryError, match="unknown service 'nope'"):
        sheet("nope")
