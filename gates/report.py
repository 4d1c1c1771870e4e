"""The completion tracker (the seed's COMPLETION_TRACKER.md), built from the inventory and its
plan figures, the migration events on ops.migration, the gate events on ops.gates (folded and
verified) and the live heartbeats: backend/migration/tracker.py computes the figures."""

from __future__ import annotations

import time
from typing import Any

import redis

from backend.bus.entries import Skips
from backend.health import read_heartbeats
from backend.migration import inventory, tracker
from backend.migration.state import events as migration_events
from backend.migration.state import fold
from gates import decisions
from gates.model import Gate


def build(r: redis.Redis, gates: dict[str, Gate], skips: Skips | None = None) -> dict[str, Any]:
    inv = inventory.load()
    evs = migration_events(r, skips)
    states = {n: s.state for n, s in fold(evs).items()}
    gate_states = decisions.states(r, gates, skips)
    decided = {g: (st.decision, st.decided_ts_ns) for g, st in gate_states.items() if st.decision}
    fig = tracker.figures(evs, decided, tracker.instances(read_heartbeats(r)), inv=inv)
    task_of = {t["priority"]: t for t in fig["tasks"] if t["priority"] is not None}
    prio: list[dict[str, Any]] = []
    for p, svcs in inv.by_priority().items():
        done = [s.name for s in svcs if states.get(s.name) == "migrated"]
        task = task_of.get(p)
        prio.append(
            {
                "priority": p,
                "task": svcs[0].task,
                "services": len(svcs),
                "migrated": len(done),
                "progress_pct": round(100 * len(done) / len(svcs), 1),
                "hours_estimated": sum(s.hours for s in svcs),
                "hours_spent": task["hours_spent"] if task else 0.0,
                "task_status": task["status"] if task else "",
                "states": {s.name: states.get(s.name, "planned") for s in svcs},
            }
        )
    total = len(inv.services)
    migrated = sum(1 for s in inv.services if states.get(s.name) == "migrated")
    gate_rows = []
    risks = []
    for g in gates.values():
        st = gate_states[g.id]
        gate_rows.append(
            {
                "id": g.id,
                "title": g.title,
                "status": st.status,
                "decision": st.decision,
                "reason": st.decision_reason,
                "decided_by": st.decided_by,
                "decided_key": st.decided_fingerprint,
                "override": st.override,
                "approvers": [a.operator for a in st.counted],
                "approvals": [
                    {"operator": a.operator, "key": a.fingerprint, "reason": a.reason, "evidence": a.evidence_digest}
                    for a in st.counted
                ],
                "cancelled": [f"approval by {a.operator}: {why}" for a, why in st.cancelled],
                "not_counted": [f"{ev.kind} labelled {ev.operator}: {why}" for ev, why in st.rejected],
                "reopened": st.reopened,
                "approvals_required": g.approvals,
                "checks": [
                    {
                        "id": c.check.id,
                        "kind": c.check.kind,
                        "required": c.check.required,
                        "outcome": c.outcome,
                        "by": c.operator,
                        "evidence": {k: v for k, v in c.evidence.items() if k != "result"},
                    }
                    for c in st.checks.values()
                ],
            }
        )
        for c in st.checks.values():
            if c.outcome == "failed":
                risks.append(f"gate {g.id}: check {c.check.id} failed ({c.check.title})")
        if st.decision == "stop":
            risks.append(f"gate {g.id} decided STOP: {st.decision_reason}")
        if st.reopened:
            risks.append(f"gate {g.id}: {st.reopened}")
    for s in inv.services:
        if s.risk == "high" and states.get(s.name) != "migrated":
            risks.append(f"{s.name} (P{s.priority}, high risk) not migrated yet: {states.get(s.name, 'planned')}")
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "overall": {
            "services": total,
            "migrated": migrated,
            "progress_pct": round(100 * migrated / total, 1),
            "hours_estimated": sum(s.hours for s in inv.services),
            "hours_spent": round(sum(p["hours_spent"] for p in prio), 2),
        },
        "tracker": fig,
        "priorities": prio,
        "gates": gate_rows,
        "open_risks": risks,
    }


def markdown(rep: dict[str, Any]) -> str:
    o, f = rep["overall"], rep["tracker"]
    ph, p2, tm, sv, fl = f["phases"], f["phase2"], f["time"], f["services"], f["fleet"]
    lines = [
        "# Completion tracker: Phase 2 backend migration",
        "",
        f"Generated {rep['generated']}.",
        "",
        f"**Overall progress**: {f['overall_pct']}% ({ph['complete']} of {ph['total']} phases complete, "
        f"{ph['pct']}%; Phase 2: {p2['complete']} of {p2['tasks']} tasks, {p2['pct']}%"
        + (f"; optional: {', '.join(p2['optional'])}" if p2["optional"] else "")
        + ").",
        "",
        f"**Services**: {o['migrated']}/{o['services']} migrated ({o['progress_pct']}%), "
        f"{o['hours_spent']:g} of {o['hours_estimated']:g} estimated hours spent.",
        "",
        "## Scope and time",
        "",
        "| scope | priorities | services | migrated | hours est. | hours spent | hours remaining |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s in (("MVP", f["mvp"]), ("full", f["full"])):
        lines.append(
            f"| {label} | P{min(s['priorities'])}-P{max(s['priorities'])} | {s['services']} | {s['migrated']} | "
            f"{s['hours_estimated']:g} | {s['hours_spent']:g} | {s['hours_remaining']:g} |"
        )
    lines += [
        "",
        f"Time invested: {tm['invested']:g} h (Phase 1 {tm['phase1']:g} h, Phase 2 {tm['phase2']:g} h). "
        f"Remaining: {tm['remaining_mvp']:g} h for the MVP, {tm['remaining_full']:g} h for the full migration.",
        "",
        f"Services: {sv['core_infrastructure']} core infrastructure migrated (Phase 1); of the {sv['total']} "
        f"application services {sv['migrated']} migrated, {sv['documented']} documented, "
        f"{sv['in_progress']} in progress, {sv['ready']} ready to migrate"
        + (f" ({', '.join(sv['ready_names'])})" if sv["ready_names"] else "")
        + f", {sv['pending']} pending.",
        "",
        f"Legacy fleet: {fl['legacy_healthy']} of {fl['services']} services healthy ({fl['legacy_healthy_pct']}%; "
        f"the survey found {fl['surveyed_healthy']} of {fl['services']}); {fl['operational']} operational "
        "in either environment"
        + (f"; not running: {', '.join(fl['down'])}" if fl["down"] and len(fl["down"]) <= 6 else "")
        + ".",
        "",
        "## Tasks",
        "",
        "| task | title | gate | status | services | hours est. | hours spent | from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in f["tasks"]:
        svcs = f"{t['migrated']}/{len(t['services'])} migrated" if t["services"] else "-"
        lines.append(
            f"| {t['id']}{' (optional)' if t['optional'] else ''} | {t['title']} | {t['gate']} | {t['status']} | "
            f"{svcs} | {t['hours_estimated']:g} | {t['hours_spent']:g} | {t['spent_from']} |"
        )
    lines += [
        "",
        "## Progress per priority",
        "",
        "| P | task | services | migrated | progress | hours est. | hours spent |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in rep["priorities"]:
        lines.append(
            f"| P{p['priority']} | {p['task']} | {p['services']} | {p['migrated']} | "
            f"{p['progress_pct']}% | {p['hours_estimated']:g} | {p['hours_spent']:g} |"
        )
    lines += ["", "## Gates", ""]
    for g in rep["gates"]:
        dec = f"**{g['decision'].upper()}** by {g['decided_by']}: {g['reason']}" if g["decision"] else g["status"]
        who = ", ".join(f"{a['operator']} ({a['key']})" for a in g["approvals"])
        lines += [
            f"### {g['id']}: {g['title']}",
            "",
            f"Decision: {dec}"
            + (f" (overriding {', '.join(g['override'])})" if g["override"] else "")
            + f". Approvals{' that went into it' if g['decision'] else ''}: {who or 'none'} "
            f"({len(g['approvers'])} of {g['approvals_required']}).",
            "",
        ]
        notes = ([f"- {g['reopened']}"] if g["reopened"] else []) + [f"- cancelled: {c}" for c in g["cancelled"]]
        notes += [f"- not counted: {c}" for c in g["not_counted"]]
        lines += [*notes, ""] if notes else []
        lines += ["| check | kind | required | outcome | by | evidence |", "|---|---|---|---|---|---|"]
        for c in g["checks"]:
            ev = ", ".join(f"{k}={v}" for k, v in c["evidence"].items() if k not in ("services",))[:120]
            lines.append(
                f"| {c['id']} | {c['kind']} | {'yes' if c['required'] else 'no'} | {c['outcome']} | {c['by']} | {ev} |"
            )
        lines.append("")
    lines += ["## Open risks", ""] + [f"- {x}" for x in rep["open_risks"] or ["none"]]
    return "\n".join(lines) + "\n"
