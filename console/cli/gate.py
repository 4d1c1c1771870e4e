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
    q = command(gsub, "approve", "approve a gate: sign the evidence digest of its latest check runs")
    q.add_argument("gate")
    q.add_argument("--reason", required=True)
    q.add_argument(
        "--evidence",
        default=None,
        metavar="DIGEST",
        help="the evidence digest you reviewed (`gate show`): refused if the runs changed since",
    )
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
        help="proceed despite this failed check (lead role only, by the operator registry)",
    )
    q.add_argument(
        "--evidence",
        default=None,
        metavar="DIGEST",
        help="the evidence digest you reviewed (`gate show`): refused if the runs changed since",
    )
    q.set_defaults(func=cmd_decide)

    p = command(sub, "audit", "the gate decision and approval log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
    asub = p.add_subparsers(dest="audit_cmd", metavar="ACTION")
    q = command(
        asub,
        "verify",
        "verify the hash chains, every signature against the registry at its time, and "
        "that the live log extends the last anchor: OK, or the first entry that differs",
    )
    q.add_argument(
        "--from",
        dest="from_file",
        default=None,
        metavar="FILE",
        help="verify an export (`audit export`) instead of the live log: no Redis needed",
    )
    q.add_argument("--gates-file", default=None, help="a TOML file adding or replacing gates")
    q.set_defaults(func=cmd_verify)
    q = command(asub, "anchor", "write a signed checkpoint of the audit log to the data dir (and anchor_to places)")
    q.set_defaults(func=cmd_anchor)
    q = command(
        asub,
        "export",
        "write the log with its signatures (JSON Lines), the registry as an allowed_signers "
        "file, and each signed entry's message and signature for ssh-keygen -Y verify",
    )
    q.add_argument("file")
    q.set_defaults(func=cmd_export)

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
                "approvers": [a.operator for a in st.counted],
                "critical": g.critical,
                "evidence_digest": st.evidence_digest,
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
    from gates.operators import when

    g = model.get(_gates(ctx), args.gate)
    st = decisions.states(ctx.redis, {g.id: g}, ctx.skips)[g.id]
    counted = [
        {"operator": a.operator, "key": a.fingerprint, "reason": a.reason, "at": when(a.ts_ns)} for a in st.counted
    ]
    if args.json:
        ctx.print_json(
            {
                "id": g.id,
                "state": st.status,
                "decision": st.decision,
                "decided_by": st.decided_by,
                "approvers": [a["operator"] for a in counted],
                "approvals": counted,
                "needs": [] if st.decision else st.approvals_needed(),
                "evidence_digest": st.evidence_digest,
                "reopened": st.reopened,
                "cancelled": [{"operator": a.operator, "why": why} for a, why in st.cancelled],
                "not_counted": [
                    {"kind": ev.kind, "operator": ev.operator, "entry": ev.hash, "why": why} for ev, why in st.rejected
                ],
                "checks": {
                    c: {"outcome": s.outcome, "by": s.operator, "evidence": s.evidence} for c, s in st.checks.items()
                },
            }
        )
        return 0
    print(
        f"{g.id}: {g.title}\nstate: {st.status}"
        + (
            f" ({st.decision} by {st.decided_by} [{st.decided_fingerprint}]: {st.decision_reason})"
            if st.decision
            else ""
        )
    )
    if st.reopened:
        print(f"reopened: {st.reopened}")
    show(
        ["CHECK", "KIND", "REQ", "OUTCOME", "BY", "EVIDENCE"],
        [
            [c.check.id, c.check.kind, "yes" if c.check.required else "no", c.outcome, c.operator, _brief(c.evidence)]
            for c in st.checks.values()
        ],
    )
    print(f"\nevidence digest (what an approval signs): {st.evidence_digest}")
    need = [] if st.decision else st.approvals_needed()
    label = "approvals counted by the decision" if st.decision else "approvals"
    print(
        f"{label}: {', '.join(f'{a.operator} [{a.fingerprint}]' for a in st.counted) or 'none'} "
        f"({len(st.counted)} of {g.approvals}, role {g.role})" + (f"; still needed: {'; '.join(need)}" if need else "")
    )
    for a, why in st.cancelled[-5:]:
        print(f"cancelled: approval by {a.operator}: {why}")
    for ev, why in st.rejected[-5:]:
        print(f"not counted: {ev.kind} labelled {ev.operator!r} ({ev.hash[:12]}): {why}")
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
            "missing",
            "provide",
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
    text = ", ".join(f"{k}={ev[k]}" for k in keys)
    return text if "provide" in ev else text[:90]  # the command that provides what is missing, whole


def _say(who_note: str) -> None:
    if who_note:
        print(who_note)


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    evs = decisions.run(_ctx(ctx), g, ctx.signer, args.check, label=ctx.label)
    failed = []
    for ev in evs:
        print(f"{g.id}/{ev.check}: {ev.outcome}  {_brief(ev.evidence)}")
        if ev.outcome != "passed" and g.check(ev.check or "").required:
            failed.append(ev.check or "")
    _anchor(ctx)
    if failed:
        print(f"required check(s) not passed: {', '.join(failed)}")
        return 1
    return 0


def cmd_attest(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    ev = decisions.attest(ctx.redis, g, args.check, ctx.signer, args.note, label=ctx.label)
    _anchor(ctx)
    print(f"{g.id}/{args.check}: attested by {ev.operator} ({ev.signer})")
    return 0


def cmd_approve(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    ev = decisions.approve(ctx.redis, g, ctx.signer, args.reason, label=ctx.label, evidence=args.evidence)
    _anchor(ctx)
    st = decisions.states(ctx.redis, {g.id: g}, ctx.skips)[g.id]
    _say(decisions.Actor(ctx.signer, ev.operator, (), ctx.label).note)
    print(
        f"{g.id}: approved by {ev.operator} ({ev.signer}) of evidence {ev.evidence_digest[:16]} "
        f"({len(st.approvers)} of {g.approvals})"
    )
    return 0


def cmd_decide(ctx: Context, args: argparse.Namespace) -> int:
    from gates import decisions, model

    g = model.get(_gates(ctx), args.gate)
    ev = decisions.decide(
        ctx.redis, g, args.decision, ctx.signer, args.reason, args.override, label=ctx.label, evidence=args.evidence
    )
    _anchor(ctx)
    _say(decisions.Actor(ctx.signer, ev.operator, (), ctx.label).note)
    print(f"{g.id}: {args.decision.upper()} by {ev.operator} ({ev.signer}): {args.reason}")
    return 0


def _anchor(ctx: Context) -> None:
    """After an operator action: the audit log's signed checkpoint (gates/anchor.py). A log that
    no longer extends the anchor is not anchored: an alert, the action itself stands."""
    import sys

    from backend.bus.archive import ArchiveUnreadable
    from gates import anchor, proof

    try:
        logs = proof.from_redis(ctx.redis)
        anchor.write(logs.chains(), proof.registry_of(logs), ctx.signer, _places(ctx))
    except anchor.AnchorError as exc:
        print(f"tradeops: ALERT: the audit log was changed after it was anchored: {exc}", file=sys.stderr)
    except ArchiveUnreadable as exc:
        print(f"tradeops: ALERT: the audit log was not anchored: {exc}", file=sys.stderr)


def cmd_audit(ctx: Context, args: argparse.Namespace) -> int:
    from gates import audit, operators
    from gates.state import GateLedger

    evs = audit.events(ctx.redis, ctx.skips)
    trust = GateLedger(_gates(ctx), operators.load(ctx.redis, ctx.skips)).extend(ev for _, ev in evs).trust
    if args.json:
        ctx.print_json(
            [{"id": eid, **msgspec.to_builtins(ev), "signed": _signed(trust.get(ev.hash))} for eid, ev in evs]
        )
        return 0
    show(
        ["TIME (UTC)", "GATE", "KIND", "CHECK", "OUTCOME/DECISION", "OPERATOR", "REASON/NOTE", "SIGNED", "HASH"],
        [
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ev.ts_ns / 1e9)),
                ev.gate,
                ev.kind,
                ev.check or "",
                ev.decision or ev.outcome or "",
                ev.operator,
                (ev.reason or ev.evidence.get("note", ""))[:40],
                _signed(trust.get(ev.hash))[:40],
                ev.hash[:12],
            ]
            for _, ev in evs
        ],
    )
    return 0


def _signed(t: Any) -> str:
    """An entry's signature in words: valid by whom, invalid and why, or unsigned."""
    if t is None:
        return ""
    return f"valid: {t.name}" if t.ok else ("unsigned" if t.status == "unsigned" else f"INVALID: {t.why}")


def _places(ctx: Context) -> list[Path]:
    from gates import anchor

    return anchor.places(ctx.data_dir, ctx.settings.anchor_to)


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    from backend.bus.archive import ArchiveUnreadable
    from gates import proof, sealed

    try:
        logs = proof.from_export(Path(args.from_file)) if args.from_file else proof.from_redis(ctx.redis, ctx.skips)
    except ArchiveUnreadable as exc:
        print(f"audit FAILED: {exc}")
        return 1
    rep = proof.verify(logs, _gates(ctx), _places(ctx))
    print("\n".join(rep.lines))
    ok = rep.ok
    if logs.sealed:  # from Redis, or an export that holds them
        counts, bad = sealed.tally_logs(logs.sealed, rep.registry, ctx.skips)
        print(
            f"migration moves and kill switch toggles: {counts['valid']} signed and valid, {counts['invalid']} "
            f"invalid, {counts['unsigned']} unsigned"
        )
        for b in bad:
            print(f"problem: {b}")
        ok = ok and not bad
    return 0 if ok else 1


def cmd_anchor(ctx: Context, args: argparse.Namespace) -> int:
    from gates import anchor, proof

    logs = proof.from_redis(ctx.redis)
    cp = anchor.write(logs.chains(), proof.registry_of(logs), ctx.signer, _places(ctx))
    print(
        f"anchored: {', '.join(f'{k} {v} entries' for k, v in cp.counts.items())}, signed by {cp.signer}, at "
        f"{', '.join(str(p) for p in _places(ctx))}"
    )
    return 0


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    from gates import proof

    out = proof.export(ctx.redis, Path(args.file), _places(ctx))
    print(
        f"exported {out['gates']} gate and {out['operators']} registry entries ({out['signed']} signed) to "
        f"{args.file}; registry: {out['allowed_signers']}; signatures: {out['signatures']}/"
    )
    print(f"check it without Redis: tradeops audit verify --from {args.file}")
    return 0


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
