"""Each service's migration checklist: the plan's migration approach (the seed's eight steps for
every task: copy the source, update the configuration paths, build the image, add it to the
compose file, component tests, integration tests, validate performance, update the tracker), as
steps that either tick themselves from what the platform observes or are attested by an operator.

Automatic steps and what ticks them:
- `image`: the target runs from a built image (the docker runtime's container); on the process
  runtime there is no image to build, which the evidence says;
- `compose`: the service is in the inventory, from which `tradeops compose` writes the file;
- `integration`: the target instance runs on the bus (its heartbeat says running);
- `performance`: the service's task gate decided proceed (its performance checks measure the
  deployed targets), or every one of its required checks has passed (the gate is `ready`);
- `tracker`: the service is migrated (cut over): the tracker counts it.

Manual steps (`source`, `config`, `component`) are attested with `tradeops migrate attest SERVICE
STEP --reason`, signed like a move; the evidence names who attested and when.

`checklist(...)` is pure: the caller hands in the migration events, the gate outcomes and the
live instances as plain values (the console's poll, the CLI), as the tracker does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from backend.messages import MigrationEvent
from backend.migration import inventory
from backend.migration.state import ATTEST_STEP, LOG_HOURS, fold

__all__ = ["ATTEST_STEP", "MANUAL", "STEPS", "Row", "checklist", "checklists", "hours"]


class Step(NamedTuple):
    id: str
    title: str
    manual: bool


STEPS = (
    Step("source", "Copy the source", True),
    Step("config", "Update configuration paths (localhost -> service names)", True),
    Step("image", "Build the image", False),
    Step("compose", "Add it to the compose file", False),
    Step("component", "Component tests", True),
    Step("integration", "Integration tests (the target on the bus)", False),
    Step("performance", "Validate performance", False),
    Step("tracker", "Update the tracker", False),
)
MANUAL = tuple(s.id for s in STEPS if s.manual)


class Row(NamedTuple):
    step: str
    title: str
    how: str  # "auto" (observed) or "manual" (attested)
    done: bool
    evidence: str


def checklist(
    service: str,
    evs: Iterable[MigrationEvent],
    gates: dict[str, tuple[str, str]],
    live: Iterable[tuple[str, str, str]],
    *,
    runtime: str = "process",
    inv: inventory.Inventory | None = None,
) -> list[Row]:
    """`service`'s steps. `evs`: ops.migration's events in order; `gates`: gate id -> (its status,
    its decision or "", as gates/state.py's GateState has them); `live`: (instance, environment,
    state) of the service's live instances; `runtime`: what the supervisor runs instances on
    (process, docker)."""
    inv = inv or inventory.load()
    spec = inv.service(service)
    evs = [e for e in evs if e.service == service]
    state = fold(evs)[service].state
    attested: dict[str, MigrationEvent] = {}
    for e in evs:
        if e.action == ATTEST_STEP:
            attested[str(e.detail.get("step", ""))] = e
    targets = [(i, st) for i, env, st in live if env == "target"]
    running = [i for i, st in targets if st == "running"]
    gate = next((t.gate for t in inv.plan.task if t.priority == spec.priority), "")
    status, decision = gates.get(gate, ("", "")) if gate else ("", "")
    rows: list[Row] = []
    for step in STEPS:
        if step.manual:
            ev = attested.get(step.id)
            done = ev is not None
            evidence = (
                f"attested by {ev.operator} {_ago(ev.ts_ns)}: {ev.reason}"
                if ev is not None
                else f"not attested (tradeops migrate attest {service} {step.id} --reason ...)"
            )
            rows.append(Row(step.id, step.title, "manual", done, evidence))
            continue
        if step.id == "image":
            if runtime == "docker":
                done, evidence = (
                    bool(running),
                    (f"target runs from the image ({', '.join(running)})" if running else "no target container yet"),
                )
            else:
                done = False
                evidence = "process runtime: no image (tradeops image build-local; tradeops up --runtime docker)"
        elif step.id == "compose":
            done, evidence = True, "in the inventory: tradeops compose writes its service"
        elif step.id == "integration":
            done = bool(running)
            evidence = (
                f"{', '.join(running)} running on the bus"
                if running
                else ("target " + ", ".join(f"{i} {st}" for i, st in targets) if targets else "no target instance")
            )
        elif step.id == "performance":
            done = decision == "proceed" or status == "ready"  # ready: every required check passed
            evidence = (f"gate {gate}: {decision or status or 'not run'}" if gate else "no gate for its task") + (
                f" (tradeops gate run {gate})" if gate and not done else ""
            )
        else:  # tracker
            done = state == "migrated"
            evidence = f"{state}: counted as migrated" if done else f"{state}: counted when cut over"
        rows.append(Row(step.id, step.title, "auto", done, evidence))
    return rows


def hours(service: str, evs: Iterable[MigrationEvent], inv: inventory.Inventory | None = None) -> tuple[float, float]:
    """(estimated, logged) hours of `service`'s migration."""
    inv = inv or inventory.load()
    logged = sum(float(e.detail.get("hours", 0.0)) for e in evs if e.service == service and e.action == LOG_HOURS)
    return inv.service(service).hours, logged


def _ago(ts_ns: int) -> str:
    s = max(0.0, time.time() - ts_ns / 1e9)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts_ns / 1e9))


def as_rows(rows: list[Row]) -> list[tuple[str, str, bool, str]]:
    """Plain values for the console's checklist widget: (title, how, done, evidence)."""
    return [(r.title, r.how, r.done, r.evidence) for r in rows]


def summary(rows: list[Row]) -> dict[str, Any]:
    return {"done": sum(r.done for r in rows), "of": len(rows)}


DECISIONS = ("proceed", "fix", "stop")


def checklists(
    snap: Any,
    evs: list[MigrationEvent],
    gates: dict[str, tuple[str, str]],
    beats: Iterable[Any],
    runtime: str,
    inv: inventory.Inventory,
) -> None:
    """Every service's checklist and hours onto `snap` (the console's Snapshot: `checklists`,
    `hours`), from the poll's events, gates and heartbeats."""
    beats = list(beats)
    for spec in inv.services:
        live = [(b.instance, b.environment, b.state) for b in beats if b.service == spec.name]
        snap.checklists[spec.name] = as_rows(checklist(spec.name, evs, gates, live, runtime=runtime, inv=inv))
        snap.hours[spec.name] = hours(spec.name, evs, inv)
