"""`tradeops market list|subscribe|targets|unsubscribe`: the marketplace's catalog and subscriptions."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from backend.catalog import store
from backend.errors import TradeopsError
from console.cli._table import show
from console.cli.context import Context, command

ORDER = 62


def register(sub: Any) -> None:
    p = command(sub, "market", "marketplace: strategies, datasets, models and subscriptions")
    msub = p.add_subparsers(dest="market_cmd", metavar="ACTION", required=True)
    q = command(msub, "list", "the catalog with owners and subscribers")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = command(msub, "subscribe", "give an account an item's signals (as paper orders)")
    q.add_argument("item", help="catalog id, e.g. strategy:alpha-momentum")
    q.add_argument("--account", required=True)
    q.add_argument("--quantity", type=float, default=0.01, help="position size per signal")
    q.set_defaults(func=cmd_subscribe)
    q = command(msub, "targets", "the positions an account's subscriptions want (filled or in flight)")
    q.add_argument("account")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_targets)
    q = command(msub, "unsubscribe", "stop an account's subscription")
    q.add_argument("item")
    q.add_argument("--account", required=True)
    q.set_defaults(func=cmd_unsubscribe)


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    r = ctx.redis
    items = store.items(r)
    subs = {i.id: store.subscriptions(r, i.id) for i in items}
    if args.json:
        ctx.print_json([{**msgspec.to_builtins(i), "subscribers": [s.account for s in subs[i.id]]} for i in items])
        return 0
    if not items:
        print("catalog is empty (is marketplace running?)")
        return 0
    show(
        ["ID", "KIND", "OWNER", "SIGNALS", "SUBSCRIBERS", "DESCRIPTION"],
        [
            [i.id, i.kind, i.owner, i.signals or "-", ",".join(s.account for s in subs[i.id]) or "-", i.description]
            for i in items
        ],
    )
    return 0


def cmd_subscribe(ctx: Context, args: argparse.Namespace) -> int:
    sub = store.subscribe(ctx.redis, args.account, args.item, args.quantity, ctx.operator)
    print(f"{sub.account} subscribed to {sub.item} (quantity {sub.quantity:g})")
    return 0


def cmd_unsubscribe(ctx: Context, args: argparse.Namespace) -> int:
    if not store.unsubscribe(ctx.redis, args.account, args.item):
        raise TradeopsError(f"{args.account} has no subscription to {args.item!r}")
    print(f"{args.account} unsubscribed from {args.item}")
    return 0


def cmd_targets(ctx: Context, args: argparse.Namespace) -> int:
    rows = sorted(store.targets(ctx.redis, args.account).items())
    if args.json:
        ctx.print_json([{"item": i, "symbol": s, "target": q} for (i, s), q in rows])
        return 0
    if not rows:
        print(f"{args.account} has no subscription positions yet")
        return 0
    show(["ITEM", "SYMBOL", "TARGET"], [[i, s, f"{q:g}"] for (i, s), q in rows])
    return 0
