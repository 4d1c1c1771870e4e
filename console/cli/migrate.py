"""`tradeops migrate status | start | cutover | rollback SERVICE --reason`, `tradeops migrate log-hours
SERVICE HOURS --reason`, `tradeops migrate checklist SERVICE`, `tradeops migrate attest SERVICE STEP --reason`."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from console.cli._table import show
from console.cli.context import Context, command

ORDER = 40


def register(sub: Any) -> None:
    p = command(sub, "migrate", "move services through the migration (P1..P5), behind the gates")
    msub = p.add_subparsers(dest="migrate_cmd", metavar="ACTION", required=True)
    q = command(msub, "status", "each service's migration state and what blocks it")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)
    for action, help_ in (
        ("start", "bring up the target instance beside the legacy one"),
        ("cutover", "wait until the target is healthy, then drain and stop the legacy instance"),
        ("rollback", "bring the legacy instance back; once it is healthy, drain and stop the target"),
    ):
        q = command(msub, action, help_)
        q.add_argument("service")
        q.add_argument("--reason", required=True)
        if action != "start":
            q.add_argument(
                "--timeout",
                type=float,
                default=30.0,
                help="seconds to wait for each side (healthy, drained); default 30",
            )
        q.set_defaults(func=cmd_move, action=action)
    q = command(
        msub,
        "log-hours",
        "log hours of work on a service's migration (the effort the completion tracker counts for its task), "
        "signed like a move",
    )
    q.add_argument("service")
    q.add_argument("hours", type=float)
    q.add_argument("--reason", required=True, help="what the hours went into")
    q.set_defaults(func=cmd_log_hours)
    q = command(
        msub,
        "checklist",
        "a service's migration checklist: the plan's eight steps, ticked from what the platform observes "
        "or attested; hours estimated and logged",
    )
    q.add_argument("service")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_checklist)
    q = command(
        msub,
        "attest",
        "attest a manual step of a service's checklist (source, config, component), signed like a move",
    )
    q.add_argument("service")
    q.add_argument("step", help="source, config or component")
    q.add_argument("--reason", required=True, help="what was done and where it is recorded")
    q.set_defaults(func=cmd_attest)


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    from backend.migration.gate_status import latest_decisions
    from backend.migration.state import blockers_of, board

    states = board(ctx.redis, ctx.skips)
    decisions = latest_decisions(ctx.redis, ctx.skips)  # read once (and its skipped entries counted once)
    gates = ctx.settings.gates_path()
    rows: list[dict[str, Any]] = []
    for name, st in sorted(states.items(), key=lambda kv: kv[1].priority):
        why = (
            blockers_of(name, {k: v.state for k, v in states.items()}, decisions, gates_file=gates)
            if st.state in ("planned", "rolled_back", "failed")
            else []
        )
        last = st.history[-1] if st.history else None
        rows.append(
            {
                "service": name,
                "priority": st.priority,
                "state": st.state,
                "blocked_by": why,
                "last_by": last.operator if last else None,
                "last_reason": last.reason if last else None,
            }
        )
    if args.json:
        ctx.print_json(rows)
        return 0
    table: list[list[Any]] = []
    for r in rows:
        # every blocker whole, wrapped onto lines of their own under the service, never cut
        blocked = [line for why in r["blocked_by"] for line in textwrap.wrap(why, BLOCKED_WIDTH)] or [""]
        last_move = f"{r['last_by']}: {r['last_reason']}" if r["last_by"] else ""
        table.append([r["priority"], r["service"], r["state"], blocked[0], last_move])
        table.extend(["", "", "", more, ""] for more in blocked[1:])
    show(["P", "SERVICE", "STATE", "BLOCKED BY", "LAST MOVE"], table)
    return 0


BLOCKED_WIDTH = 60


def cmd_move(ctx: Context, args: argparse.Namespace) -> int:
    from backend.errors import TradeopsError
    from backend.migration.cutover import switch
    from backend.migration.state import move
    from console.cli.gate import _anchor
    from gates import decisions, model, sealed

    who = sealed.actor(ctx.redis, ctx.signer, f"{args.action} {args.service}", ctx.label)
    seal = sealed.seal_move(ctx.signer)
    if args.action == "start":  # the gate decisions counted are the signed ones the fold verified
        ev = move(
            ctx.redis,
            args.service,
            args.action,
            who,
            args.reason,
            gates_file=ctx.settings.gates_path(),
            seal=seal,
            decisions=decisions.verified_decisions(ctx.redis, model.configured(ctx.settings)),
        )
        print(f"{args.service}: {ev.from_state} -> {ev.to_state} ({who}, {ev.signer}: {args.reason})")
        _anchor(ctx)
        return 0
    if args.timeout <= 0:
        raise TradeopsError("--timeout must be positive")
    res = switch(ctx.redis, args.service, args.action, who, args.reason, timeout=args.timeout, seal=seal)
    first, *warnings = res.summary().split("\n")
    print(f"{first} ({who}, {ctx.signer.fingerprint}: {args.reason})")
    for line in warnings:  # a rollback under services that depend on it and stay moved
        print(f"tradeops: {line}", file=sys.stderr)
    _anchor(ctx)
    return 0


def cmd_log_hours(ctx: Context, args: argparse.Namespace) -> int:
    from backend.migration.state import log_hours
    from gates import sealed

    who = sealed.actor(ctx.redis, ctx.signer, f"log hours {args.service}", ctx.label)
    ev = log_hours(ctx.redis, args.service, args.hours, who, args.reason, seal=sealed.seal_move(ctx.signer))
    print(f"{args.service}: {args.hours:g} h logged ({who}, {ev.signer}: {args.reason})")
    return 0


def cmd_checklist(ctx: Context, args: argparse.Namespace) -> int:
    from backend.health import read_heartbeats
    from backend.migration import checklist, inventory
    from backend.migration.state import events
    from backend.runtime.supervisor import read_table
    from gates import decisions, model

    inv = inventory.load()
    inv.service(args.service)  # unknown: one clear line
    evs = events(ctx.redis, ctx.skips)
    folded = decisions.states(ctx.redis, model.configured(ctx.settings), ctx.skips)  # signed, by the rules
    gates = {g: (st.status, st.decision or "") for g, st in folded.items()}
    live = [(b.instance, b.environment, b.state) for b in read_heartbeats(ctx.redis) if b.service == args.service]
    table = read_table(ctx.data_dir) or {}
    rows = checklist.checklist(args.service, evs, gates, live, runtime=table.get("runtime", "process"), inv=inv)
    est, logged = checklist.hours(args.service, evs, inv)
    if args.json:
        ctx.print_json(
            {
                "service": args.service,
                "steps": [r._asdict() for r in rows],
                "hours_estimated": est,
                "hours_logged": logged,
                **checklist.summary(rows),
            }
        )
        return 0
    show(
        ["", "STEP", "HOW", "EVIDENCE"],
        [["✔" if r.done else "·", r.title, r.how, r.evidence] for r in rows],
    )
    done = checklist.summary(rows)
    print(f"{args.service}: {done['done']} of {done['of']} steps done; {logged:g} of {est:g} estimated hours logged")
    return 0


def cmd_attest(ctx: Context, args: argparse.Namespace) -> int:
    from backend.migration.state import attest_step
    from gates import sealed

    who = sealed.actor(ctx.redis, ctx.signer, f"attest {args.service} {args.step}", ctx.label)
    ev = attest_step(ctx.redis, args.service, args.step, who, args.reason, seal=sealed.seal_move(ctx.signer))
    print(f"{args.service}: step {args.step} attested ({who}, {ev.signer}: {args.reason})")
    from console.cli.gate import _anchor

    _anchor(ctx)
    return 0
