"""`tradeops`: the command line.

Each module in this package that defines `register(sub, common)` adds its command group, so
command groups live in modules named for what they hold (core, exchange, orders, migrate, gate ...)
and nobody edits a central list. `ORDER` (an int) in a module sorts it in `--help`.
Errors that an operator can act on (`TradeopsError`) print one line and exit 1; wrong arguments
print the usage and exit 2; never a traceback. Entries a command could not decode are skipped and
counted in `ctx.skips` (backend/bus/entries.py); each stream's count is one line on stderr at the
end ("tradeops: skipped 1 undecodable entry on orders.events").
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from redis.exceptions import NoPermissionError

from backend.errors import TradeopsError
from console.cli.context import Context, add_common


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tradeops",
        description="tradeops: the trading platform's services, migration control plane and console. "
        "With no command, opens the console on the running stack.",
    )
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "context":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            modules.append(mod)
    for mod in sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__)):
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args)
    handler = getattr(args, "func", None)
    try:
        if handler is None:
            from console.cli.console_entry import open_console

            return int(open_console(ctx) or 0)
        try:
            return int(handler(ctx, args) or 0)
        finally:
            for line in ctx.skips.notes():
                print(f"tradeops: {line}", file=sys.stderr)
    except TradeopsError as exc:
        print(f"tradeops: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except NoPermissionError as exc:
        from backend.bus.connection import OPERATOR, user_of

        print(
            f"tradeops: error: Redis refused a command to the user {user_of(OPERATOR)!r} (NOPERM: {exc}); "
            "see what it may do with `tradeops redis acl --user USER`",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("tradeops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run() -> None:
    sys.exit(main())
