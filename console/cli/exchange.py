"""`tradeops exchange`: run the local exchange (market-data websocket feed, REST order API), the
front door onto `python -m backend.exchange` (backend.exchange.run)."""

from __future__ import annotations

import argparse
from typing import Any

from backend.exchange import run as exchange_run
from console.cli.context import Context, command

ORDER = 20


def register(sub: Any) -> None:
    p = command(sub, "exchange", "run the local exchange: Binance-style trade feed (+ REST order API)")
    exchange_run.add_arguments(p)
    p.set_defaults(func=cmd_exchange)


def cmd_exchange(ctx: Context, args: argparse.Namespace) -> int:
    exchange_run.run_exchange(args, ctx.data_dir)
    return 0
