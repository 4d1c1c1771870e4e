"""What the headless entry points (`python -m backend.services`, `backend.exchange`,
`backend.runtime.supervise`) share with `tradeops`: the settings options, and the rule that an
error an operator can act on (TradeopsError) is one line on stderr and its exit code, never a
traceback (wrong arguments: the usage and exit 2, as argparse does)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from backend.errors import TradeopsError
from backend.settings import Settings, load_settings

PROG = "tradeops"


def add_settings_options(p: argparse.ArgumentParser) -> None:
    """--config, --data-dir, --redis-url (each also from its TRADEOPS_* variable, as in `tradeops`)."""
    p.add_argument("--config", default=None, metavar="FILE", help="config file (env TRADEOPS_CONFIG)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="data dir (env TRADEOPS_DATA_DIR)")
    p.add_argument("--redis-url", default=None, metavar="URL", help="the bus (env TRADEOPS_REDIS_URL)")


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings the options of `add_settings_options` (and the environment) give."""
    return load_settings(args.config, redis_url=args.redis_url, data_dir=args.data_dir)


def run(body: Callable[[], int | None]) -> int:
    """`body()`'s exit code; a TradeopsError is one line on stderr, Ctrl-C exits 130."""
    try:
        return int(body() or 0)
    except TradeopsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
