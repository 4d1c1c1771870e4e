"""`tradeops order submit|cancel|list|show`: paper orders through the OMS."""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import msgspec

from backend.bus import publish_sync, streams
from backend.bus.broadcast import BroadcastSync, newest_sync
from backend.bus.entries import decode_entries
from backend.errors import TradeopsError
from backend.messages import CancelRequest, Order, OrderEvent
from backend.trading.orders import invalid
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 30


def register(sub: Any) -> None:
    p = command(sub, "order", "submit, cancel and list orders")
    osub = p.add_subparsers(dest="order_cmd", metavar="ACTION", required=True)
    q = command(osub, "submit", "submit an order to orders.new")
    q.add_argument("side", choices=["buy", "sell"])
    q.add_argument("quantity", type=float)
    q.add_argument("symbol")
    q.add_argument("--limit", type=float, default=None, help="limit price (default: a market order)")
    q.add_argument("--tif", choices=["GTC", "IOC", "FOK", "DAY"], default="GTC")
    q.add_argument("--account", default="paper-1")
    q.add_argument("--id", default=None, help="client order id (default: a new one)")
    q.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a final state")
    q.set_defaults(func=cmd_submit)
    q = command(osub, "cancel", "cancel an order by client order id")
    q.add_argument("id")
    q.add_argument("--reason", default="")
    q.set_defaults(func=cmd_cancel)
    q = command(osub, "list", "latest state of recent orders (from orders.events)")
    q.add_argument("--limit", type=int, default=30)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(osub, "show", "an order's event history")
    q.add_argument("id")
    q.set_defaults(func=cmd_show)


def cmd_submit(ctx: Context, args: argparse.Namespace) -> int:
    order = Order(
        client_order_id=args.id or f"cli-{uuid.uuid4().hex[:12]}",
        account=args.account,
        symbol=args.symbol.upper(),
        side=args.side,
        type="limit" if args.limit is not None else "market",
        quantity=args.quantity,
        limit_price=args.limit,
        time_in_force=args.tif,
        sent_ns=time.time_ns(),
        source=f"cli:{ctx.operator}",
    )
    why = invalid(order) or _unknown_symbol(ctx, order.symbol)
    if why:
        raise TradeopsError(f"order refused: {why}")
    publish_sync(ctx.redis, streams.ORDERS_NEW, order)
    print(
        f"submitted {order.client_order_id}: {order.side} {order.quantity:g} {order.symbol} "
        f"{'@ ' + format(order.limit_price, 'g') if order.limit_price else 'at market'}"
    )
    if args.wait > 0:
        ev = _wait_final(ctx, order.client_order_id, args.wait)
        if ev is None:
            print(f"no final state within {args.wait:g}s (see `tradeops order show {order.client_order_id}`)")
            return 1
        line = (
            f"{ev.state}"
            + (f" {ev.filled_qty:g} @ {ev.avg_price:g}" if ev.filled_qty else "")
            + (f": {ev.reason}" if ev.reason else "")
        )
        if ev.state in REFUSED:  # the order was refused: a failure, said on stderr, exit 1
            raise TradeopsError(f"{order.client_order_id} {line}")
        print(line)
    return 0


REFUSED = frozenset({"DENIED", "REJECTED"})


def _unknown_symbol(ctx: Context, symbol: str) -> str | None:
    """Why `symbol` cannot be traded (not in the instrument master: the live one refdata keeps,
    else the master file refdata would load), or None."""
    from backend.errors import ConfigError
    from backend.refdata.master import instruments, load_file

    known = set(instruments(ctx.redis, ctx.skips))
    if not known:
        try:
            known = {i.symbol for i in load_file(ctx.settings.service_section("refdata").get("file"))}
        except ConfigError:
            return None  # no master to judge by: the OMS and risk will say
    if symbol in known:
        return None
    return f"unknown symbol {symbol!r}: the instrument master lists {', '.join(sorted(known))} (`tradeops refdata`)"


def _wait_final(ctx: Context, coid: str, timeout: float) -> OrderEvent | None:
    from backend.messages import FINAL_STATES

    deadline = time.monotonic() + timeout
    events = BroadcastSync(
        ctx.redis, {streams.ORDERS_EVENTS: "0"}, count=1000, block_ms=100, decode=OrderEvent, skips=ctx.skips
    )
    while time.monotonic() < deadline:
        for _, _, ev in events.read():
            if ev.client_order_id == coid and ev.state in FINAL_STATES:
                return ev
    return None


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    from backend.messages import FINAL_STATES

    evs = [e for e in _events(ctx, 50_000) if e.client_order_id == args.id]
    if not evs:
        raise TradeopsError(f"no order {args.id!r}: nothing to cancel (`tradeops order list` shows the recent orders)")
    if evs[-1].state in FINAL_STATES:
        raise TradeopsError(f"{args.id} is {evs[-1].state}: nothing left to cancel")
    publish_sync(
        ctx.redis,
        streams.ORDERS_NEW,
        CancelRequest(
            client_order_id=args.id,
            account=evs[-1].account,  # routes it to the order's partition when the order path is split
            reason=args.reason or f"canceled by {ctx.operator}",
            sent_ns=time.time_ns(),
        ),
    )
    print(f"cancel sent for {args.id} ({evs[-1].state}); `tradeops order show {args.id}` shows when it is CANCELED")
    return 0


def _events(ctx: Context, count: int) -> list[OrderEvent]:
    got, _ = decode_entries(
        newest_sync(ctx.redis, streams.ORDERS_EVENTS, count),  # every partition's, oldest first
        OrderEvent,
        stream=streams.ORDERS_EVENTS,
        skips=ctx.skips,
    )
    return [ev for _, ev in got]


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    latest: dict[str, OrderEvent] = {}
    for ev in _events(ctx, 20_000):
        latest[ev.client_order_id] = ev
    rows = sorted(latest.values(), key=lambda e: e.ts_ns, reverse=True)[: args.limit]
    if args.json:
        ctx.print_json(msgspec.to_builtins(rows))
        return 0
    show(
        ["TIME", "CLIENT ID", "ACCOUNT", "SYMBOL", "SIDE", "QTY", "LIMIT", "STATE", "FILLED", "AVG", "REASON"],
        [
            [
                time.strftime("%H:%M:%S", time.gmtime(e.ts_ns / 1e9)),
                e.client_order_id,
                e.account,
                e.symbol,
                e.side,
                f"{e.quantity:g}",
                f"{e.limit_price:g}" if e.limit_price else "mkt",
                e.state,
                f"{e.filled_qty:g}",
                f"{e.avg_price:g}" if e.filled_qty else "",
                e.reason[:50],
            ]
            for e in rows
        ],
    )
    return 0


def cmd_show(ctx: Context, args: argparse.Namespace) -> int:
    evs = [e for e in _events(ctx, 50_000) if e.client_order_id == args.id]
    if not evs:
        raise TradeopsError(f"no events for order {args.id!r}")
    show(
        ["TIME", "SEQ", "FROM", "TO", "FILLED", "AVG", "REASON"],
        [
            [
                time.strftime("%H:%M:%S", time.gmtime(e.ts_ns / 1e9)) + f".{e.ts_ns // 1000 % 1000000:06d}",
                e.seq,
                e.prev_state or "",
                e.state,
                f"{e.filled_qty:g}",
                f"{e.avg_price:g}" if e.filled_qty else "",
                e.reason,
            ]
            for e in evs
        ],
    )
    return 0
