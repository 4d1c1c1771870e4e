"""`tradeops risk kill on|off|status`: the kill switch, every toggle audited on ops.control."""

from __future__ import annotations

import argparse
import time
from typing import Any

from backend.bus import codec, publish_sync, streams
from backend.bus.durable import wait_durable
from backend.errors import TradeopsError
from backend.messages import ControlCommand
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 31
KILL_KEY = "risk:kill_switch"


def register(sub: Any) -> None:
    p = command(sub, "risk", "pre-trade risk controls")
    rsub = p.add_subparsers(dest="risk_cmd", metavar="ACTION", required=True)
    q = command(rsub, "kill", "the kill switch: blocks new orders at once, cancels working ones")
    q.add_argument("state", choices=["on", "off", "status"])
    q.add_argument("--reason", default="", help="why (required to change it)")
    q.set_defaults(func=cmd_kill)


def set_kill_switch(r: Any, on: bool, operator: str, reason: str) -> None:
    cmd = ControlCommand(target="risk", command="kill_switch", args={"on": on}, operator=operator,
                         reason=reason, ts_ns=time.time_ns())
    pipe = r.pipeline(transaction=True)
    pipe.set(KILL_KEY, "1" if on else "0")
    pipe.xadd(streams.OPS_CONTROL, codec.fields(cmd))
    pipe.execute()
    wait_durable(r)  # on disk before the operator is told: the switch survives a Redis crash


def kill_history(r: Any, count: int = 20) -> list[ControlCommand]:
    out = []
    for _, f in r.xrevrange(streams.OPS_CONTROL, count=500):
        c = codec.decode(codec.payload(f), ControlCommand)
        if c.command == "kill_switch":
            out.append(c)
    return out[:count]


def cmd_kill(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.redis
    if args.state == "status":
        on = r.get(KILL_KEY) == b"1"
        print(f"kill switch: {'ON' if on else 'off'}")
        hist = kill_history(r)
        if hist:
            show(["TIME (UTC)", "STATE", "OPERATOR", "REASON"],
                 [[time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.ts_ns / 1e9)),
                   "ON" if c.args.get("on") else "off", c.operator, c.reason] for c in hist])
        return 0
    if not args.reason.strip():
        raise TradeopsError("changing the kill switch needs --reason")
    set_kill_switch(r, args.state == "on", ctx.operator, args.reason)
    print(f"kill switch {'ON: new orders blocked, working orders being canceled' if args.state == 'on' else 'off'} "
          f"({ctx.operator}: {args.reason})")
    return 0
