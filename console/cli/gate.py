"""`tradeops gate list|show|run|attest|approve|decide`, `tradeops audit [verify]`, `tradeops report`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from console.cli._table import show
from console.cli.context import Context, command

if TYPE_CHECKING:
    from gates.checks import CheckContext
    from gates.model import Gate

ORDER = 50


def register(sub: Any) -> None:
    p = command(sub, "gate", "validation gates: checks with evidence, approvals, decisions")
    p.add_argument(
        "--gates-file",
        default=None,
        help="a TOML file adding or replacing gates (default: gates_file of the settings, env TRADEOPS_GATES_FILE)",
    )
    gsub = p.add_subparsers(dest="gate_cmd", metavar="ACTION", required=True)
    q = command(gsub, "list", "the gates, their checks and state")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(gsub, "show", "one gate: checks with outcomes and evidence, approvals, decision")
    q.add_argument("gate")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_show)
    q = command(gsub, "run", "run a gate's automated checks (or one check)")
    q.add_argument("gate")
    q.add_argument("check", nargs="?")
    q.set_defaults(func=cmd_run)
    q = command(gsub, "attest", "attest a manual check, with a note")
    q.add_argument("gate")
    q.add_argument("check")
    q.add_argument("--note", required=True)
    q.set_defaults(func=cmd_attest)
    q = command(gsub, "approve", "approve a gate")
    q.add_argument("gate")
    q.add_argument("--reason", required=True)
    q.set_defaults(func=cmd_approve)
    q = command(gsub, "decide", "decide proceed, fix or stop, with a reason")
    q.add_argument("gate")
    q.add_argument("decision", choices=["proceed", "fix", "stop"])
    q.add_argument("--reason", required=True)
    q.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="CHECK",
        help="proceed despite this failed check (lead role only)",
    )
    q.set_defaults(func=cmd_decide)

    p = command(sub, "audit", "the gate decision and approval log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
    asub = p.add_subparsers(dest="audit_cmd", metavar="ACTION")
    q = command(asub, "verify", "verify the hash chain: OK, or the first entry changed, removed or reordered")
    q.set_defaults(func=cmd_verify)

    p = command(sub, "report", "the completion tracker as Markdown (or --json)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gates-file", default=None, help="a TOML file adding or replacing gates")
    p.add_argument("-o", "--output", default=None, help="write to this file")
    p.set_defaults(func=cmd_report)


def _gates(ctx: Context) -> dict[str, Gate]:
    """The gates of the settings, as the console loads them (--gates-file overrides the setting)."""
    from gates import model

    return model.configured(ctx.settings)


def _ctx(ctx: Context) -> CheckContext:
    from gates.checks import CheckContext

    return CheckContext(ctx.redis, ctx.redis_url(), ctx.settings)


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions

    gates = _gates(ctx)
    states = decisions.states(ctx.redis, gates, ctx.skips)
    rows: list[dict[str, Any]] = []
    for g in gates.values():
        st = states[g.id]
        rows.append(
            {
                "id": g.id,
                "title": g.title,
                "state": st.status,
                "decision": st.decision,
                "approvals_required": g.approvals,
                "approvers": st.approvers,
                "critical": g.critical,
                "checks": [
                    {"id": c.id, "kind": c.kind, "required": c.required, "outcome": st.checks[c.id].outcome}
                    for c in g.checks
                ],
            }
        )
    if args.json:
        ctx.print_json(rows)
        return 0
    show(
        ["GATE", "STATE", "CHECKS PASSED", "APPROVALS", "TITLE"],
        [
            [
                r["id"],
                r["state"],
                f"{sum(c['outcome'] == 'passed' for c in r['checks'])}/{len(r['checks'])}",
                f"{len(r['approvers'])}/{r['approvals_required']}",
                r["title"],
            ]
            for r in rows
        ],
    )
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    st = decisions.states(ctx.redis, {g.id: g}, ctx.skips)[g.id]
    if args.json:
        ctx.print_json(
            {
                "id": g.id,
                "state": st.status,
                "decision": st.decision,
                "approvers": st.approvers,
                "needs": st.approvals_needed(),
                "checks": {
                    c: {"outcome": s.outcome, "by": s.operator, "evidence": s.evidence} for c, s in st.checks.items()
                },
            }
        )
        return 0
    print(
        f"{g.id}: {g.title}\nstate: {st.status}"
        + (f" ({st.decision} by {st.decided_by}: {st.decision_reason})" if st.decision else "")
    )
    show(
        ["CHECK", "KIND", "REQ", "OUTCOME", "BY", "EVIDENCE"],
        [
            [c.check.id, c.check.kind, "yes" if c.check.required else "no", c.outcome, c.operator, _brief(c.evidence)]
            for c in st.checks.values()
        ],
    )
    need = st.approvals_needed()
    print(
        f"\napprovals: {', '.join(st.approvers) or 'none'} ({len(st.approvers)} of {g.approvals})"
        + (f"; still needed: {'; '.join(need)}" if need else "")
    )
    return 0


def _brief(ev: dict[str, Any]) -> str:
    keys = [
        k
        for k in (
            "value",
            "op",
            "threshold",
            "entries",
            "rows",
            "probed",
            "reason",
            "note",
            "error",
            "redis_version",
            "skew_s",
            "free_gib",
        )
        if k in ev
    ]
    if "services" in ev and isinstance(ev["services"], dict):
        return ", ".join(
            f"{s}:{v.get('running_fresh') if isinstance(v, dict) else v}" for s, v in ev["services"].items()
        )
    return ", ".join(f"{k}={ev[k]}" for k in keys)[:90]


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    for ev in decisions.run(_ctx(ctx), g, ctx.operator, args.check):
        print(f"{g.id}/{ev.check}: {ev.outcome}  {_brief(ev.evidence)}")
    return 0


def cmd_attest(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    decisions.attest(ctx.redis, g, args.check, ctx.operator, args.note)
    print(f"{g.id}/{args.check}: attested by {ctx.operator}")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    decisions.approve(ctx.redis, g, ctx.operator, args.reason)
    st = decisions.states(ctx.redis, {g.id: g}, ctx.skips)[g.id]
    print(f"{g.id}: approved by {ctx.operator} ({len(st.approvers)} of {g.approvals})")
    return 0


def cmd_decide(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    decisions.decide(ctx.redis, ctx.settings, g, args.decision, ctx.operator, args.reason, args.override)
    print(f"{g.id}: {args.decision.upper()} by {ctx.operator}: {args.reason}")
    return 0


def cmd_audit(ctx: Context, args: argparse.Namespace) -> int:
    from gates import audit

    evs = audit.events(ctx.redis, ctx.skips)
    if args.json:
        ctx.print_json([{"id": eid, **msgspec.to_builtins(ev)} for eid, ev in evs])
        return 0
    show(
        ["TIME (UTC)", "GATE", "KIND", "CHECK", "OUTCOME/DECISION", "OPERATOR", "REASON/NOTE", "HASH"],
        [
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ev.ts_ns / 1e9)),
                ev.gate,
                ev.kind,
                ev.check or "",
                ev.decision or ev.outcome or "",
                ev.operator,
                (ev.reason or ev.evidence.get("note", ""))[:40],
                ev.hash[:12],
            ]
            for _, ev in evs
        ],
    )
    return 0


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    from gates import audit

    v = audit.verify(ctx.redis)
    if v.ok:
        print(f"audit OK: {v.checked} entries" + (f" ({v.archived} archived)" if v.archived else "") + ", chain intact")
        return 0
    print(f"audit FAILED: {v.problem}")
    return 1


def cmd_report(ctx: Context, args: argparse.Namespace) -> int:
    from gates import report

    rep = report.build(ctx.redis, _gates(ctx), ctx.skips)
    if args.json:
        import json

        text = json.dumps(rep, indent=2, default=str) + "\n"
    else:
        text = report.markdown(rep)
    if args.output:
        Path(args.output).write_text(text)
        print(f"report written to {args.output}")
    else:
        print(text, end="")
    return 0
