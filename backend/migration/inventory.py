"""The inventory: the 18 application services and 8 core infrastructure services, and the plan's
figures, loaded from TOML and validated (unique names and ports, known dependencies, neither
relation cyclic, no service migrated after one of a later priority). Every error names the entry
and the rule it broke.

Two relations between services, kept apart:

- `needs`: what a service needs at run time, following the data flow (whose output it consumes,
  or whom it asks: oms needs risk and live-gateway). Its levels (`levels()`: level 1 needs no
  service, level n needs one of level n-1) are the plan's 5 dependency levels; `needed_by` is the
  reverse; `start_order()` starts what is needed first.
- `migrate_after`: what must be migrated before it (gateway after normalizer: the target gateway
  feeds a migrated normalizer). The migration rules (backend/migration/state.py) refuse a start
  before these are migrated; `order()` is the migration order; `migrate_before` the reverse."""

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
    needs: list[str] = []
    """Services it needs at run time (following the data flow)."""
    migrate_after: list[str] = []
    """Services that must be migrated before it."""
    external: list[str] = []
    """Dependencies outside the platform (a venue's API, a webhook)."""
    complexity: Literal["simple", "medium", "complex", "very complex"]
    risk: Literal["low", "medium", "high"]
    hours: float
    sla: dict[str, float] = {}
    testing: list[str] = []
    """Testing requirements, with the tests that meet them."""
    known_issues: list[str] = []
    replicas: int = 1
    """Instances of the service a deployment runs (swarm replicas, Kubernetes Deployment replicas)."""


class InfraSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    port: int
    lanes: list[Lane]
    probe: Probe
    standin: str


class PlanTask(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    title: str
    gate: str
    """The gate whose proceed decision completes the task."""
    priority: int | None = None
    """The priority it migrates (None: the survey, Task 01)."""
    hours: float | None = None
    """Estimated hours; None: the sum of its services' hours."""
    spent: float | None = None
    """Hours spent before this control plane recorded anything (Task 01's 2 h)."""
    optional: bool = False


class Plan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    phases: int = 8
    phases_complete: int = 1
    phase1_hours: float = 0.0
    steps_per_phase: int = 9
    mvp_priorities: list[int] = []
    surveyed_healthy: int = 0
    task: list[PlanTask] = []


class _File(msgspec.Struct, forbid_unknown_fields=True):
    service: list[ServiceSpec] = []
    infra: list[InfraSpec] = []
    plan: Plan = msgspec.field(default_factory=Plan)


LANES: tuple[Lane, ...] = ("frontend", "lowlatency", "backend")


class Inventory(msgspec.Struct):
    services: list[ServiceSpec]
    infra: list[InfraSpec]
    plan: Plan = msgspec.field(default_factory=Plan)

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
        """Services in a valid migration order: by priority, those to migrate after others last."""
        ts = TopologicalSorter({s.name: s.migrate_after for s in self.services})
        topo = {name: i for i, name in enumerate(ts.static_order())}
        return [s.name for s in sorted(self.services, key=lambda s: (s.priority, topo[s.name]))]

    def start_order(self) -> list[str]:
        """Services in the order to start them: what a service needs first (by level, then
        migration order)."""
        lv, mig = self.level_of(), {n: i for i, n in enumerate(self.order())}
        return sorted(lv, key=lambda n: (lv[n], mig[n]))

    def needed_by(self, name: str) -> list[str]:
        """The services that need `name` at run time (the reverse dependencies)."""
        return [s.name for s in self.services if name in s.needs]

    def migrate_before(self, name: str) -> list[str]:
        """The services that wait for `name` to be migrated."""
        return [s.name for s in self.services if name in s.migrate_after]

    def level_of(self) -> dict[str, int]:
        """service -> its dependency level: 1 when it needs no service, else one more than the
        highest level of what it needs."""
        out: dict[str, int] = {}
        deps = {s.name: s.needs for s in self.services}
        for name in TopologicalSorter(deps).static_order():
            out[name] = 1 + max((out[d] for d in deps[name]), default=0)
        return {s.name: out[s.name] for s in self.services}

    def levels(self) -> dict[int, list[str]]:
        """level -> its services (in migration order)."""
        lv = self.level_of()
        out: dict[int, list[str]] = {}
        for name in self.order():
            out.setdefault(lv[name], []).append(name)
        return dict(sorted(out.items()))

    def lane_totals(self) -> dict[str, int]:
        """Entries (services and infrastructure) per CPGS lane, and `multi`: entries on several."""
        entries: list[ServiceSpec | InfraSpec] = [*self.services, *self.infra]
        out: dict[str, int] = {lane: sum(lane in e.lanes for e in entries) for lane in LANES}
        out["multi"] = sum(len(e.lanes) > 1 for e in entries)
        out["entries"] = len(entries)
        return out

    def task_services(self, task: PlanTask) -> list[ServiceSpec]:
        return [s for s in self.services if s.priority == task.priority]

    def task_hours(self, task: PlanTask) -> float:
        """A task's estimated hours: its own, or the sum of its services'."""
        return task.hours if task.hours is not None else sum(s.hours for s in self.task_services(task))

    def to_json(self) -> dict[str, object]:
        lv = self.level_of()
        services = []
        for s in self.services:
            d = msgspec.to_builtins(s)
            d.update(level=lv[s.name], needed_by=self.needed_by(s.name), migrate_before=self.migrate_before(s.name))
            services.append(d)
        return {
            "services": services,
            "infra": msgspec.to_builtins(self.infra),
            "lanes": self.lane_totals(),
            "levels": {str(k): v for k, v in self.levels().items()},
            "plan": msgspec.to_builtins(self.plan),
        }


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
        if s.replicas < 1:
            raise InventoryError(f"{source}: service {s.name!r}: replicas {s.replicas} is not at least 1")
        if s.hours < 0:
            raise InventoryError(f"{source}: service {s.name!r}: hours must not be negative")
        for i in s.infra:
            if i not in infra_names:
                raise InventoryError(f"{source}: service {s.name!r}: unknown infrastructure dependency {i!r}")
        for field, what in (("needs", "needs"), ("migrate_after", "is migrated after")):
            for d in getattr(s, field):
                if d not in prio:
                    raise InventoryError(f"{source}: service {s.name!r}: unknown service {d!r} in {field}")
                if d == s.name:
                    raise InventoryError(f"{source}: service {s.name!r} {what} itself")
        for d in s.migrate_after:
            if prio[d] > s.priority:
                raise InventoryError(
                    f"{source}: service {s.name!r} (P{s.priority}) is migrated after {d!r} (P{prio[d]}), "
                    "a later priority"
                )
    for field in ("needs", "migrate_after"):
        try:
            TopologicalSorter({s.name: getattr(s, field) for s in inv.services}).prepare()
        except CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise InventoryError(f"{source}: cycle in {field}: {cycle}") from None
    priorities = set(prio.values())
    for task in inv.plan.task:
        if task.priority is not None and task.priority not in priorities:
            raise InventoryError(f"{source}: plan task {task.id!r}: no service has priority {task.priority}")
    for p in inv.plan.mvp_priorities:
        if p not in priorities:
            raise InventoryError(f"{source}: plan: MVP priority {p} has no service")
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
    return validate(Inventory(services=f.service, infra=f.infra, plan=f.plan), source)


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
