"""Running the local exchange in the foreground until SIGTERM: `python -m backend.exchange` (what
the supervisor and the benchmarks start, see backend.runtime.commands) and `tradeops exchange`
(the operator's front door) both come here. Its first line on stdout says where it listens, its
last one (after SIGTERM) what it sent."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from backend import aio, entry, logs
from backend.errors import TradeopsError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The exchange's options."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="websocket port (default: a free one)")
    p.add_argument("--rest-port", type=int, default=0, help="REST order API port (default: a free one)")
    p.add_argument("--symbols", default=None, help="comma-separated symbols (default: the 10 majors)")
    p.add_argument("--rate", type=float, default=1000.0, help="trades per second, all symbols (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="random walk seed")
    p.add_argument("--news-every", type=float, default=2.0, help="seconds between news items")
    p.add_argument(
        "--history",
        type=int,
        default=100_000,
        help="trades kept per symbol for the REST trade history (default 100000)",
    )


def run_exchange(args: argparse.Namespace, data_dir: Path) -> None:
    """Run the exchange the options in `args` describe, its info file in `data_dir`, until SIGTERM."""
    from backend.exchange.feed import FeedConfig
    from backend.exchange.server import Exchange, run_forever

    if args.rate <= 0:
        raise TradeopsError(f"--rate must be positive, not {args.rate:g}")
    if args.host not in LOOPBACK:
        raise TradeopsError(f"--host must be a loopback address, not {args.host!r}")
    if args.history < 1:
        raise TradeopsError(f"--history must be at least 1, not {args.history}")
    config = FeedConfig(rate=args.rate, seed=args.seed, news_every_s=args.news_every, history=args.history)
    if args.symbols:
        config.symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
        if not config.symbols:
            raise TradeopsError("--symbols is empty")
    logs.setup("INFO", service="exchange")
    exchange = Exchange(config, args.host, args.port, args.rest_port, data_dir)
    aio.run(run_forever(exchange, announce=lambda m: print(m, flush=True)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m backend.exchange",
        description="run the local exchange: Binance-style trade feed (+ REST order API)",
    )
    add_arguments(p)
    entry.add_settings_options(p)
    args = p.parse_args(argv)
    return entry.run(lambda: run_exchange(args, entry.settings_of(args).resolved_data_dir()))
