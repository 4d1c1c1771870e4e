"""The inventory: the 18 application services and 8 core infrastructure services, loaded from
TOML and validated (unique names and ports, known dependencies, no cycle, no service depending on
one of a later priority). Every error names the entry and the rule it broke."""

from __future__ import annotations

import tomllib
from functools import cache
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from backend.errors import TradeopsError

Lane = Literal["frontend", "lowlatency", "backend"]
TASK_OF_PRIORITY = {1: "Task 02", 2: "Task 03", 3: "Task 04", 4: "Task 05", 5: "Task 06"}


class InventoryError(TradeopsError):
    """The inventory file breaks a rule; the message names the entry and the rule."""


class Probe(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["tcp", "http"]
    path: str = "/"


class ServiceSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    priority: int
    task: str
    purpose: str
    port: int
    lanes: list[Lane]
    infra: list[str] = []
    depends_on: list[str] = []
    complexity: Literal["simple", "medium", "complex", "very complex"]
    risk: Literal["low", "medium", "high"]
    hours: float
    sla: dict[str, float] = {}


class InfraSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    port: int
    lanes: list[Lane]
    probe: Probe
    standin: str


class _File(msgspec.Struct, forbid_unknown_fields=True):
    service: list[ServiceSpec] = []
    infra: list[InfraSpec] = []


class Inventory(msgspec.Struct):
    services: list[ServiceSpec]
    infra: list[InfraSpec]

    def service(self, name: str) -> ServiceSpec:
        for s in self.services:
            if s.name == name:
                return s
        raise InventoryError(f"unknown service {name!r}; known: {', '.join(s.name for s in self.services)}")

    def infra_spec(self, name: str) -> InfraSpec:
        for i in self.infra:
            if i.name == name:
                return i
        raise InventoryError(f"unknown infrastructure service {name!r}")

    def by_priority(self) -> dict[int, list[ServiceSpec]]:
        out: dict[int, list[ServiceSpec]] = {}
        for s in self.services:
            out.setdefault(s.priority, []).append(s)
        return dict(sorted(out.items()))

    def order(self) -> list[str]:
        """Services in a valid migration order: by priority, dependencies first."""
        ts = TopologicalSorter({s.name: s.depends_on for s in self.services})
        topo = {name: i for i, name in enumerate(ts.static_order())}
        return [s.name for s in sorted(self.services, key=lambda s: (s.priority, topo[s.name]))]

    def dependents(self, name: str) -> list[str]:
        return [s.name for s in self.services if name in s.depends_on]

    def to_json(self) -> dict[str, object]:
        return msgspec.to_builtins({"services": self.services, "infra": self.infra})


def validate(inv: Inventory, source: str = "inventory") -> Inventory:
    if not inv.services:
        raise InventoryError(
            f"{source}: no [[service]] entries: an inventory lists the services to migrate "
            "(see the shipped one with `tradeops inventory`)"
        )
    names: dict[str, str] = {}
    ports: dict[int, str] = {}
    infra_names = {i.name for i in inv.infra}
    for kind, entries in (("infra", inv.infra), ("service", inv.services)):
        for e in entries:
            if e.name in names:
                raise InventoryError(f"{source}: {kind} {e.name!r}: duplicate name")
            names[e.name] = kind
            if e.port in ports:
                raise InventoryError(f"{source}: {kind} {e.name!r}: duplicate port {e.port} (also {ports[e.port]!r})")
            ports[e.port] = e.name
    prio = {s.name: s.priority for s in inv.services}
    for s in inv.services:
        if not 1 <= s.priority <= 5:
            raise InventoryError(f"{source}: service {s.name!r}: priority {s.priority} is not 1..5")
        if s.hours < 0:
            raise InventoryError(f"{source}: service {s.name!r}: hours must not be negative")
        for i in s.infra:
            if i not in infra_names:
                raise InventoryError(f"{source}: service {s.name!r}: unknown infrastructure dependency {i!r}")
        for d in s.depends_on:
            if d not in prio:
                raise InventoryError(f"{source}: service {s.name!r}: unknown dependency {d!r}")
            if d == s.name:
                raise InventoryError(f"{source}: service {s.name!r}: depends on itself")
            if prio[d] > s.priority:
                raise InventoryError(
                    f"{source}: service {s.name!r} (P{s.priority}) depends on {d!r} (P{prio[d]}), a later priority"
                )
    try:
        TopologicalSorter({s.name: s.depends_on for s in inv.services}).prepare()
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise InventoryError(f"{source}: dependency cycle: {cycle}") from None
    return inv


def parse(text: str, source: str = "inventory") -> Inventory:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{source}: not valid TOML: {exc}") from None
    try:
        f = msgspec.convert(raw, _File)
    except msgspec.ValidationError as exc:
        raise InventoryError(f"{source}: {_where(raw, exc)}") from None
    return validate(Inventory(services=f.service, infra=f.infra), source)


def load_file(path: str | Path) -> Inventory:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InventoryError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse(text, str(p))


@cache
def load() -> Inventory:
    """The inventory shipped in the package."""
    text = resources.files("backend.migration").joinpath("inventory.toml").read_text()
    return parse(text, "inventory.toml")


def _where(raw: dict[str, object], exc: msgspec.ValidationError) -> str:
    """Name the entry (by its `name`) that a validation error points at: `$.service[3].port`."""
    msg = str(exc)
    import re

    m = re.search(r"\$\.(service|infra)\[(\d+)\]", msg)
    if m:
        entries = raw.get(m.group(1))
        idx = int(m.group(2))
        if isinstance(entries, list) and idx < len(entries) and isinstance(entries[idx], dict):
            name = entries[idx].get("name", f"#{idx + 1}")
            return f"{m.group(1)} {name!r}: {msg}"
    return msg
