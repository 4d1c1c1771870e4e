"""`tradeops risk kill on|off|status`: the kill switch (backend/trading/killswitch.py), every toggle
audited on ops.control."""

from __future__ import annotations

import argparse
import time
from typing import Any

from backend.errors import TradeopsError
from backend.trading.killswitch import kill_switch_status, set_kill_switch
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 31


def register(sub: Any) -> None:
    p = command(sub, "risk", "pre-trade risk controls")
    rsub = p.add_subparsers(dest="risk_cmd", metavar="ACTION", required=True)
    q = command(rsub, "kill", "the kill switch: blocks new orders at once, cancels working ones")
    q.add_argument("state", choices=["on", "off", "status"])
    q.add_argument("--reason", default="", help="why (required to change it)")
    q.set_defaults(func=cmd_kill)


def cmd_kill(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.redis
    if args.state == "status":
        st = kill_switch_status(r, skips=ctx.skips)
        print(f"kill switch: {'ON' if st.on else 'off'}")
        if st.history:
            show(
                ["TIME (UTC)", "STATE", "OPERATOR", "REASON"],
                [
                    [
                        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.ts_ns / 1e9)),
                        "ON" if c.args.get("on") else "off",
                        c.operator,
                        c.reason,
                    ]
                    for c in st.history
                ],
            )
        return 0
    if not args.reason.strip():
        raise TradeopsError("changing the kill switch needs --reason")
    from console.cli.gate import _anchor
    from gates import sealed

    who = sealed.actor(r, ctx.signer, f"kill switch {args.state}", ctx.label)
    cmd = set_kill_switch(r, args.state == "on", who, args.reason, seal=sealed.seal_control(ctx.signer))
    print(
        f"kill switch {'ON: new orders blocked, working orders being canceled' if args.state == 'on' else 'off'} "
        f"({who}, {cmd.signer}: {args.reason})"
    )
    _anchor(ctx)  # the toggle is under the signed checkpoint (gates/anchor.py)
    return 0
