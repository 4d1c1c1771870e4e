"""`tradeops` with no command opens the console on the running stack; `tradeops demo` starts the
embedded stack with paper orders flowing and opens the console, stopping everything on quit."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from backend.errors import TradeopsError
from console.cli.context import Context, command

ORDER = 5


def register(sub: Any) -> None:
    p = command(sub, "demo", "start the embedded stack (Redis, exchange, services, paper orders) and open the console")
    p.add_argument("--read-only", action="store_true", help="no action that changes anything")
    p.add_argument("--rate", type=float, default=2000.0, help="local exchange trades per second")
    p.add_argument("--orders-per-s", type=float, default=2.0, help="paper orders per second")
    p.set_defaults(func=cmd_demo)
    p = command(sub, "console", "open the console on the running stack (same as plain `tradeops`)")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--replay", action="store_true", help="show the recorded replay data instead")
    p.set_defaults(func=lambda ctx, args: open_console(ctx, args.read_only, args.replay))


def open_console(ctx: Context, read_only: bool = False, replay: bool = False) -> int:
    from console.app import TradeopsApp

    if replay:
        from console.actions import ReplayActions
        from console.data.replay import ReplaySource

        replay_src = ReplaySource()
        TradeopsApp(  # None: a recording opens read-only (TradeopsApp), its changing keys hidden
            replay_src, ReplayActions(replay_src.current), read_only=None, live=False, keymap=ctx.settings.keymap
        ).run()
        return 0
    from backend.bus import connection

    url = connection.resolve_url(ctx.settings.redis_url, ctx.data_dir)
    if url is None:
        raise TradeopsError(
            f"no running stack for {ctx.data_dir}: start one with `tradeops up` "
            "(or `tradeops demo` for everything at once)"
        )
    connection.connect(url, auth=connection.operator_login(ctx.settings, url)).close()
    from console.actions import LiveActions
    from console.data.live import LiveSource

    src = LiveSource(url, ctx.settings, ctx.operator)
    try:
        TradeopsApp(
            src,
            LiveActions(url, ctx.settings, ctx.operator),
            read_only=read_only or ctx.settings.read_only,
            keymap=ctx.settings.keymap,
            theme=ctx.settings.theme,
        ).run()
    finally:
        src.close()
    return 0


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.paperflow import PaperFlow
    from backend.runtime.stack import Stack

    stack = Stack(ctx.settings, exchange_rate=args.rate)
    print(f"starting the demo stack in {ctx.data_dir} ...", flush=True)
    url = stack.up(detach=False)
    from backend.bus import connection

    flow = PaperFlow(url, args.orders_per_s, auth=connection.operator_login(ctx.settings))
    t = threading.Thread(target=flow.run, daemon=True)
    t.start()
    try:
        ctx.settings.redis_url = url
        open_console(ctx, args.read_only)
    finally:
        flow.stop()
        t.join(5)
        print("stopping the demo stack ...", flush=True)
        t0 = time.monotonic()
        stack.down()
        print(f"stopped in {time.monotonic() - t0:.1f}s")
    return 0
