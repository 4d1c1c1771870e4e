"""`tradeops operators init|list|add|revoke|remove|roles|confirm`: the signed operator registry
(gates/operators.py). Every change is signed with the acting lead's SSH key (--key, the config's
signing_key, or the ssh-agent); the first lead is set once, by `init`, with its own key."""

from __future__ import annotations

import argparse
import calendar
import time
from typing import Any

from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 51


def register(sub: Any) -> None:
    p = command(sub, "operators", "the operator registry: names, roles and SSH keys, every change signed by a lead")
    osub = p.add_subparsers(dest="operators_cmd", metavar="ACTION", required=True)
    q = command(
        osub, "init", "set the first lead, once, with its own key (--key FILE.pub in ssh-agent, or a private key file)"
    )
    q.add_argument("--name", default=None, help="the first lead's name (default: --operator, or your user name)")
    q.set_defaults(func=cmd_init)
    q = command(osub, "list", "operators, roles, keys and their validity")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(osub, "add", "add an operator with one or more public keys (signed by a lead)")
    q.add_argument("name")
    q.add_argument("--pubkey", action="append", required=True, metavar="FILE.pub", help="a public key (repeat)")
    q.add_argument(
        "--role",
        action="append",
        choices=["operator", "lead"],
        default=None,
        help="operator (default) and/or lead; a new lead needs a second lead once there are two",
    )
    q.add_argument("--valid-from", default=None, metavar="YYYY-MM-DD")
    q.add_argument("--valid-until", default=None, metavar="YYYY-MM-DD")
    q.add_argument("--reason", default="")
    q.set_defaults(func=cmd_add)
    q = command(osub, "add-key", "add a public key to an operator (signed by a lead)")
    q.add_argument("name")
    q.add_argument("--pubkey", action="append", required=True, metavar="FILE.pub")
    q.add_argument("--valid-until", default=None, metavar="YYYY-MM-DD")
    q.set_defaults(func=cmd_add_key)
    q = command(osub, "revoke", "revoke an operator's key (signed by a lead): it signs nothing from now on")
    q.add_argument("name")
    q.add_argument("--fingerprint", default=None, help="which key (SHA256:...); needed when it has several")
    q.add_argument("--reason", required=True)
    q.set_defaults(func=cmd_revoke)
    q = command(osub, "remove", "remove an operator (signed by a lead)")
    q.add_argument("name")
    q.add_argument("--reason", required=True)
    q.set_defaults(func=cmd_remove)
    q = command(osub, "roles", "set an operator's roles (signed by a lead; making a lead needs two leads)")
    q.add_argument("name")
    q.add_argument("--role", action="append", required=True, choices=["operator", "lead"])
    q.add_argument("--reason", default="")
    q.set_defaults(func=cmd_roles)
    q = command(osub, "confirm", "confirm, as a second lead, a change that makes someone a lead")
    q.add_argument("hash", help="the pending change's hash (or its first characters), from `operators list`")
    q.set_defaults(func=cmd_confirm)


def _day(text: str | None, end: bool = False) -> int:
    if not text:
        return 0
    try:
        t = time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise TradeopsError(f"{text!r}: dates are YYYY-MM-DD") from None
    return (calendar.timegm(t) + (86_400 if end else 0)) * 1_000_000_000


def _keys(files: list[str]) -> list[Any]:
    from gates import signing

    return [signing.read_public_key(f) for f in files]


def _done(ev: Any, waits: bool, what: str, ctx: Context | None = None) -> int:
    if waits:
        print(f"{what}: waits for a second lead: `tradeops operators confirm {ev.hash[:16]}` (by another lead)")
    else:
        print(f"{what} (signed by {ev.by}, {ev.signer})")
    if ctx is not None:
        from console.cli.gate import _anchor

        _anchor(ctx)
    return 0


def cmd_init(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators, signing

    if not ctx.settings.signing_key:
        raise TradeopsError(
            "init needs --key FILE.pub (a key in ssh-agent) or a private key file: the first "
            "lead's own key, which signs the registry's first entry"
        )
    signer = signing.signer_for(ctx.settings.signing_key)
    name = args.name or ctx.settings.resolved_operator()
    operators.change(
        ctx.redis,
        signer,
        "init",
        name,
        roles=["operator", "lead"],
        keys=[signer.public],
        reason="control plane initialised",
    )
    print(f"registry initialised: {name} is the first lead, key {signer.fingerprint}")
    from console.cli.gate import _anchor

    ctx.signer = signer  # the first checkpoint is signed by the key that initialised the registry
    _anchor(ctx)
    return 0


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators
    from gates.operators import when

    reg = operators.load(ctx.redis)
    now = time.time_ns()
    rows = []
    for name, op in reg.operators.items():
        for fp in op.keys:
            k = reg.keys[fp]
            rows.append(
                {
                    "name": name,
                    "roles": list(op.roles_at(now)) if not op.removed_ns else [],
                    "removed": when(op.removed_ns) if op.removed_ns else "",
                    "kind": k.key.kind,
                    "fingerprint": fp,
                    "status": k.status(now),
                    "added": when(k.added_ns),
                }
            )
    pending = [
        {"hash": h, "kind": ev.kind, "name": ev.name, "roles": ev.roles, "by": ev.by} for h, ev in reg.pending.items()
    ]
    if args.json:
        ctx.print_json(
            {
                "operators": rows,
                "pending": pending,
                "root": reg.root,
                "problems": [
                    {"entry": eid, "kind": ev.kind, "name": ev.name, "why": p} for eid, ev, p in reg.entries if p
                ],
            }
        )
        return 0
    if not rows:
        print("no operators: the registry is not initialised (`tradeops operators init --key FILE.pub`)")
        return 0
    show(
        ["OPERATOR", "ROLES", "KEY", "FINGERPRINT", "STATUS", "ADDED"],
        [
            [
                r["name"],
                ",".join(r["roles"]) or f"removed {r['removed']}",
                r["kind"],
                r["fingerprint"],
                r["status"],
                r["added"],
            ]
            for r in rows
        ],
    )
    for p in pending:
        print(
            f"pending (needs a second lead): {p['kind']} {p['name']} roles {','.join(p['roles'])} by {p['by']}: "
            f"`tradeops operators confirm {p['hash'][:16]}`"
        )
    if reg.chain_problem:
        print(f"REGISTRY CHAIN BROKEN: {reg.chain_problem}")
    return 0


def cmd_add(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    ev, waits = operators.change(
        ctx.redis,
        ctx.signer,
        "add",
        args.name,
        roles=args.role or ["operator"],
        keys=_keys(args.pubkey),
        valid_after_ns=_day(args.valid_from),
        valid_before_ns=_day(args.valid_until, end=True),
        reason=args.reason,
    )
    return _done(ev, waits, f"{args.name} added with roles {','.join(args.role or ['operator'])}", ctx)


def cmd_add_key(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    ev, waits = operators.change(
        ctx.redis,
        ctx.signer,
        "add_key",
        args.name,
        keys=_keys(args.pubkey),
        valid_before_ns=_day(args.valid_until, end=True),
    )
    return _done(ev, waits, f"key(s) added to {args.name}", ctx)


def cmd_revoke(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    reg = operators.load(ctx.redis)
    op = reg.operators.get(args.name)
    fp = args.fingerprint
    if fp is None:
        live = [f for f in (op.keys if op else []) if not reg.keys[f].revoked_ns]
        if len(live) != 1:
            raise TradeopsError(f"{args.name} has {len(live)} unrevoked keys: name one with --fingerprint")
        fp = live[0]
    ev, waits = operators.change(ctx.redis, ctx.signer, "revoke_key", args.name, key=fp, reason=args.reason)
    return _done(ev, waits, f"key {fp} of {args.name} revoked", ctx)


def cmd_remove(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    ev, waits = operators.change(ctx.redis, ctx.signer, "remove", args.name, reason=args.reason)
    return _done(ev, waits, f"{args.name} removed", ctx)


def cmd_roles(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    ev, waits = operators.change(ctx.redis, ctx.signer, "roles", args.name, roles=args.role, reason=args.reason)
    return _done(ev, waits, f"{args.name} now has roles {','.join(args.role)}", ctx)


def cmd_confirm(ctx: Context, args: argparse.Namespace) -> int:
    from gates import operators

    reg = operators.load(ctx.redis)
    hits = [h for h in reg.pending if h.startswith(args.hash)]
    if len(hits) != 1:
        raise TradeopsError(f"{len(hits)} pending changes start with {args.hash!r} (`tradeops operators list`)")
    pend = reg.pending[hits[0]]
    ev, waits = operators.change(ctx.redis, ctx.signer, "confirm", pend.name, confirms=hits[0])
    return _done(ev, waits, f"{pend.kind} {pend.name} confirmed", ctx)
