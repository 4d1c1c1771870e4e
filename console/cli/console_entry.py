"""`tradeops` with no command: open the console on the running stack."""

from __future__ import annotations

from backend.errors import TradeopsError
from console.cli.context import Context


def open_console(ctx: Context) -> int:
    raise TradeopsError(
        "the console is not built yet; see `tradeops --help` for the commands"
    )
