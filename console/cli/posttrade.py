"""`tradeops positions`, `tradeops alerts [ack KEY]`, `tradeops refdata`, `tradeops replay`."""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import msgspec

from backend.bus import publish_sync, replies, streams
from backend.bus.entries import decode_entries
from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 35


def register(sub: Any) -> None:
    p = command(sub, "positions", "positions and PnL per account and symbol (ptrc)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_positions)
    p = command(sub, "alerts", "active alerts (alerting); `alerts ack KEY` acknowledges one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alerts)
    asub = p.add_subparsers(dest="alerts_cmd", metavar="ACTION")
    q = command(asub, "ack", "acknowledge an alert by its key")
    q.add_argument("key")
    q.set_defaults(func=cmd_ack)
    p = command(sub, "refdata", "the instrument master (refdata)")
    p.set_defaults(func=cmd_refdata)
    p = command(sub, "replay", "replay stored ticks into a stream (md-replay)")
    p.add_argument("--minutes", type=float, default=5.0, help="the last N minutes of stored ticks")
    p.add_argument("--speed", type=float, default=0.0, help="1 = real time, 0 = as fast as possible")
    p.add_argument("--symbols", default="", help="comma-separated (default: all)")
    p.add_argument("--target", default=streams.MD_TICKS_REPLAY)
    p.set_defaults(func=cmd_replay)


def cmd_positions(ctx: Context, args: argparse.Namespace) -> int:
    from backend.messages import Position

    latest: dict[tuple[str, str], Position] = {}
    got, _ = decode_entries(
        replies.entries(ctx.redis.xrevrange(streams.POSITIONS, count=20_000)),
        Position,
        stream=streams.POSITIONS,
        skips=ctx.skips,
    )
    for _, p in got:
        latest.setdefault((p.account, p.symbol), p)
    rows = sorted(latest.values(), key=lambda p: (p.account, p.symbol))
    if args.json:
        ctx.print_json(msgspec.to_builtins(rows))
        return 0
    if not rows:
        print("no positions yet")
        return 0
    show(
        ["ACCOUNT", "SYMBOL", "QTY", "AVG", "MARK", "REALIZED", "UNREALIZED", "EXPOSURE"],
        [
            [
                p.account,
                p.symbol,
                f"{p.quantity:g}",
                f"{p.avg_price:,.6g}",
                f"{p.mark:,.6g}",
                f"{p.realized_pnl:,.2f}",
                f"{p.unrealized_pnl:,.2f}",
                f"{p.exposure:,.2f}",
            ]
            for p in rows
        ],
    )
    return 0


def cmd_alerts(ctx: Context, args: argparse.Namespace) -> int:
    from backend.services.alerting import active

    rows = active(ctx.redis, ctx.skips)
    if args.json:
        ctx.print_json([{"key": k, **msgspec.to_builtins(a)} for k, a in rows])
        return 0
    if not rows:
        print("no active alerts")
        return 0
    show(
        ["KEY", "SEVERITY", "SOURCE", "TIME (UTC)", "MESSAGE"],
        [[k, a.severity, a.source, time.strftime("%H:%M:%S", time.gmtime(a.ts_ns / 1e9)), a.message] for k, a in rows],
    )
    return 0


def cmd_ack(ctx: Context, args: argparse.Namespace) -> int:
    from backend.services.alerting import ack

    alert = ack(ctx.redis, args.key, ctx.operator)
    if alert is None:
        raise TradeopsError(f"no active alert with key {args.key!r} (see `tradeops alerts`)")
    print(f"acknowledged {args.key} ({ctx.operator})")
    return 0


def cmd_refdata(ctx: Context, args: argparse.Namespace) -> int:
    from backend.refdata.master import instruments

    rows = instruments(ctx.redis, ctx.skips)
    if not rows:
        print("no instruments yet (is refdata running?)")
        return 0
    show(
        ["SYMBOL", "TICK", "LOT", "CCY", "SESSION", "STATUS"],
        [[i.symbol, f"{i.tick_size:g}", f"{i.lot_size:g}", i.currency, i.session, i.status] for i in rows.values()],
    )
    return 0


def cmd_replay(ctx: Context, args: argparse.Namespace) -> int:
    from backend.messages import ReplayRequest

    if args.minutes <= 0 or args.speed < 0:
        raise TradeopsError("--minutes must be positive and --speed not negative")
    now = time.time_ns()
    req = ReplayRequest(
        id=uuid.uuid4().hex[:10],
        start_ns=now - int(args.minutes * 60e9),
        end_ns=now,
        symbols=[s.strip().upper() for s in args.symbols.split(",") if s.strip()],
        speed=args.speed,
        target=args.target,
    )
    publish_sync(ctx.redis, streams.REPLAY_REQUESTS, req)
    print(
        f"replay {req.id} requested: last {args.minutes:g} min into {args.target} at "
        f"{'max speed' if args.speed == 0 else f'{args.speed:g}x'}"
    )
    return 0
