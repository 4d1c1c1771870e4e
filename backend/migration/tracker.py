"""The completion tracker's figures, as the plan counts them (the inventory's [plan]): phases
complete of 8, Phase 2's tasks complete of 6 and the overall progress; the MVP (P1-P4) and full
(P1-P5) scopes with their services and hours; time invested and remaining; services migrated,
documented, in progress, ready and pending; the legacy fleet's operational status.

Everything is computed from the live state handed in as plain values: the migration events
(ops.migration), the gate decisions with when they were signed (ops.gates, folded by the caller),
the latest heartbeats. `figures(...)` is pure; the report (gates/report.py) and the console's
overview show what it returns.

Effort is what the plan means by it, per task: the hours operators logged against its services
(`tradeops migrate log-hours`), or, when none were logged, the time from the task's start (the
first start of one of its services) to its gate's proceed decision; an open task counts only the
hours logged so far. Task 01, the survey, was done before this control plane: its effort is the
plan's figure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backend.messages import Heartbeat, MigrationEvent
from backend.migration import inventory
from backend.migration.state import LOG_HOURS, blockers_of, fold

NS_PER_HOUR = 3.6e12
IN_FLIGHT = ("deploying", "validating")
MAY_START = ("planned", "rolled_back", "failed")


def _pct(part: float, whole: float) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def documented(spec: inventory.ServiceSpec) -> bool:
    """The service's sheet holds every part the plan documents (the rest is read from its code)."""
    return bool(spec.purpose and spec.lanes and spec.testing and spec.known_issues and spec.complexity)


def instances(beats: Iterable[Heartbeat]) -> list[tuple[str, str, str]]:
    """(service, environment, state) of each live instance, from its latest heartbeat."""
    return [(b.service, b.environment, b.state) for b in beats]


def figures(
    evs: Iterable[MigrationEvent],
    decisions: dict[str, tuple[str, int]],
    live: Iterable[tuple[str, str, str]],
    *,
    inv: inventory.Inventory | None = None,
) -> dict[str, Any]:
    """The tracker's figures. `evs`: every event on ops.migration, in order; `decisions`: gate id ->
        (its decision, when it was signed); `live`: (service, environment, state) of each live instance
    (`instances(heartbeats)`)."""
    inv = inv or inventory.load()
    plan = inv.plan
    evs = list(evs)
    states = {n: s.state for n, s in fold(evs).items()}
    logged: dict[str, float] = {}
    started: dict[str, int] = {}  # service -> its first start
    for ev in evs:
        if ev.action == LOG_HOURS:
            logged[ev.service] = logged.get(ev.service, 0.0) + float(ev.detail.get("hours", 0.0))
        elif ev.to_state == "deploying":  # a start
            started.setdefault(ev.service, ev.ts_ns)
    verdicts = {g: d for g, (d, _) in decisions.items()}

    tasks: list[dict[str, Any]] = []
    for task in plan.task:
        svcs = [s.name for s in inv.task_services(task)] if task.priority is not None else []
        decision, decided_ns = decisions.get(task.gate, (None, 0))
        complete = decision == "proceed"
        begun = [started[s] for s in svcs if s in started]
        hours_logged = sum(logged.get(s, 0.0) for s in svcs)
        if task.spent is not None:
            spent, source = task.spent + hours_logged, "plan"
        elif hours_logged:
            spent, source = hours_logged, "logged"
        elif begun and complete:
            spent, source = max(0.0, (decided_ns - min(begun)) / NS_PER_HOUR), "measured"
        else:
            spent, source = 0.0, "none"
        status = "complete" if complete else "in progress" if begun or hours_logged else "not started"
        tasks.append(
            {
                "id": task.id,
                "title": task.title,
                "gate": task.gate,
                "priority": task.priority,
                "optional": task.optional,
                "services": svcs,
                "migrated": sum(states.get(s) == "migrated" for s in svcs),
                "status": status,
                "decision": decision,
                "hours_estimated": inv.task_hours(task),
                "hours_spent": round(spent, 2),
                "spent_from": source,
            }
        )

    done = [t for t in tasks if t["status"] == "complete"]
    required = [t for t in tasks if not t["optional"]]
    phase2_complete = bool(required) and all(t["status"] == "complete" for t in required)
    phases_complete = plan.phases_complete + (1 if phase2_complete else 0)
    phase_part = 1.0 if phase2_complete else len(done) / plan.steps_per_phase
    overall = _pct(plan.phases_complete + phase_part, plan.phases)

    def scope(priorities: list[int]) -> dict[str, Any]:
        svcs = [s for s in inv.services if s.priority in priorities]
        ts = [t for t in tasks if t["priority"] in priorities]
        remaining = sum(max(0.0, t["hours_estimated"] - t["hours_spent"]) for t in ts if t["status"] != "complete")
        return {
            "priorities": priorities,
            "tasks": [t["id"] for t in ts],
            "services": len(svcs),
            "migrated": sum(states.get(s.name) == "migrated" for s in svcs),
            "hours_estimated": sum(s.hours for s in svcs),
            "hours_spent": round(sum(t["hours_spent"] for t in ts), 2),
            "hours_remaining": round(remaining, 2),
        }

    all_priorities = sorted(inv.by_priority())
    mvp = scope(plan.mvp_priorities or all_priorities)
    full = scope(all_priorities)

    in_flight = [n for n, s in states.items() if s in IN_FLIGHT]
    migrated = [n for n, s in states.items() if s == "migrated"]
    may_start = [n for n, s in states.items() if s in MAY_START]
    ready = [n for n in may_start if not blockers_of(n, states, verdicts)]
    pending = [n for n in may_start if n not in ready]

    healthy_legacy: set[str] = set()
    running: set[str] = set()
    for service, environment, state in live:
        if state == "running" and service in states:
            running.add(service)
            if environment == "legacy":
                healthy_legacy.add(service)
    n = len(inv.services)
    invested = plan.phase1_hours + sum(t["hours_spent"] for t in tasks)
    return {
        "phases": {"total": plan.phases, "complete": phases_complete, "pct": _pct(phases_complete, plan.phases)},
        "phase2": {
            "tasks": len(tasks),
            "complete": len(done),
            "pct": _pct(len(done), len(tasks)),
            "complete_ids": [t["id"] for t in done],
            "optional": [t["id"] for t in tasks if t["optional"]],
        },
        "overall_pct": overall,
        "tasks": tasks,
        "mvp": mvp,
        "full": full,
        "time": {
            "phase1": plan.phase1_hours,
            "phase2": round(sum(t["hours_spent"] for t in tasks), 2),
            "invested": round(invested, 2),
            "remaining_mvp": mvp["hours_remaining"],
            "remaining_full": full["hours_remaining"],
        },
        "services": {
            "total": n,
            "core_infrastructure": len(inv.infra),
            "migrated": len(migrated),
            "documented": sum(documented(s) for s in inv.services),
            "in_progress": len(in_flight),
            "ready": len(ready),
            "pending": len(pending),
            "ready_names": ready,
        },
        "fleet": {
            "services": n,
            "legacy_healthy": len(healthy_legacy),
            "legacy_healthy_pct": _pct(len(healthy_legacy), n),
            "operational": len(running),
            "down": sorted(set(states) - running),
            "surveyed_healthy": plan.surveyed_healthy,
        },
    }


def headline(fig: dict[str, Any]) -> list[str]:
    """The tracker in a few lines (the console's overview, the report's summary)."""
    ph, p2, t, sv, fl = fig["phases"], fig["phase2"], fig["time"], fig["services"], fig["fleet"]
    mvp, full = fig["mvp"], fig["full"]
    return [
        f"overall {fig['overall_pct']}% · phases {ph['complete']}/{ph['total']} ({ph['pct']}%) · "
        f"Phase 2 tasks {p2['complete']}/{p2['tasks']} ({p2['pct']}%)",
        f"MVP P1-P{max(mvp['priorities'])}: {mvp['migrated']}/{mvp['services']} services, "
        f"{t['remaining_mvp']:g} of {mvp['hours_estimated']:g} h left",
        f"full P1-P{max(full['priorities'])}: {full['migrated']}/{full['services']} services, "
        f"{t['remaining_full']:g} of {full['hours_estimated']:g} h left",
        f"invested {t['invested']:g} h (Phase 1 {t['phase1']:g} h, Phase 2 {t['phase2']:g} h)",
        f"services: {sv['migrated']} migrated (+{sv['core_infrastructure']} core infra), "
        f"{sv['documented']} documented, {sv['in_progress']} in progress, {sv['ready']} ready, "
        f"{sv['pending']} pending",
        f"legacy fleet: {fl['legacy_healthy']}/{fl['services']} healthy ({fl['legacy_healthy_pct']}%; "
        f"survey {fl['surveyed_healthy']}/{fl['services']}), {fl['operational']} operational",
    ]
