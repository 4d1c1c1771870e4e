"""The completion tracker (the seed's COMPLETION_TRACKER.md), built from the inventory, the
migration events on ops.migration and the gate events on ops.gates."""

from __future__ import annotations

import time
from typing import Any

import redis

from backend.bus import archive, streams
from backend.bus.entries import Skips, decode_entries
from backend.messages import MigrationEvent
from backend.migration import inventory
from gates import decisions
from gates.model import Gate


def migration_states(r: redis.Redis, skips: Skips | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """service -> latest migration state; service -> hours spent (deploying -> migrated). Entries
    that are not migration events are skipped (counted in `skips`)."""
    states: dict[str, str] = {}
    started: dict[str, int] = {}
    spent: dict[str, float] = {}
    events, _ = decode_entries(
        archive.history(r, streams.OPS_MIGRATION), MigrationEvent, stream=streams.OPS_MIGRATION, skips=skips
    )
    for _, ev in events:
        states[ev.service] = ev.to_state
        if ev.to_state == "deploying":
            started.setdefault(ev.service, ev.ts_ns)
        if ev.to_state == "migrated" and ev.service in started:
            spent[ev.service] = spent.get(ev.service, 0.0) + (ev.ts_ns - started.pop(ev.service)) / 3.6e12
    return states, spent


def build(r: redis.Redis, gates: dict[str, Gate], skips: Skips | None = None) -> dict[str, Any]:
    inv = inventory.load()
    states, spent = migration_states(r, skips)
    prio = []
    for p, svcs in inv.by_priority().items():
        done = [s.name for s in svcs if states.get(s.name) == "migrated"]
        prio.append(
            {
                "priority": p,
                "task": svcs[0].task,
                "services": len(svcs),
                "migrated": len(done),
                "progress_pct": round(100 * len(done) / len(svcs), 1),
                "hours_estimated": sum(s.hours for s in svcs),
                "hours_spent": round(sum(spent.get(s.name, 0.0) for s in svcs), 2),
                "states": {s.name: states.get(s.name, "planned") for s in svcs},
            }
        )
    total = len(inv.services)
    migrated = sum(1 for s in inv.services if states.get(s.name) == "migrated")
    gate_rows = []
    risks = []
    gate_states = decisions.states(r, gates, skips)
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
                "approvers": st.approvers,
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
            "hours_spent": round(sum(spent.values()), 2),
        },
        "priorities": prio,
        "gates": gate_rows,
        "open_risks": risks,
    }


def markdown(rep: dict[str, Any]) -> str:
    o = rep["overall"]
    lines = [
        "# Completion tracker: Phase 2 backend migration",
        "",
        f"Generated {rep['generated']}.",
        "",
        f"**Overall**: {o['migrated']}/{o['services']} services migrated ({o['progress_pct']}%), "
        f"{o['hours_spent']:g} of {o['hours_estimated']:g} estimated hours spent.",
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
        lines += [
            f"### {g['id']}: {g['title']}",
            "",
            f"Decision: {dec}. Approvals: {', '.join(g['approvers']) or 'none'} "
            f"({len(g['approvers'])} of {g['approvals_required']}).",
            "",
            "| check | kind | required | outcome | by | evidence |",
            "|---|---|---|---|---|---|",
        ]
        for c in g["checks"]:
            ev = ", ".join(f"{k}={v}" for k, v in c["evidence"].items() if k not in ("services",))[:120]
            lines.append(
                f"| {c['id']} | {c['kind']} | {'yes' if c['required'] else 'no'} | {c['outcome']} | {c['by']} | {ev} |"
            )
        lines.append("")
    lines += ["## Open risks", ""] + [f"- {x}" for x in rep["open_risks"] or ["none"]]
    return "\n".join(lines) + "\n"
