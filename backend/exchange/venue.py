"""The local exchange's trading side: the matching engine on the feed's symbols and filters,
the accounts behind the API keys (with their starting balances), the market maker that keeps the
books quoted around the random walk, and where the engine's results go: its trades onto the
feed (trade stream and history, one id sequence with the walk's), its executions and balance
changes onto the user data streams."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from backend.exchange import render
from backend.exchange.accounts import Accounts
from backend.exchange.engine import Engine, Execution
from backend.exchange.marketmaker import MakerConfig, MarketMaker
from backend.exchange.ratelimit import Limits
from backend.exchange.userstream import UserStreams

ACCOUNT = "local"


@dataclass
class VenueConfig:
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """API key -> (secret, account). No default key: the exchange process (backend/exchange/server.py)
    puts in the pair of its start (backend/exchange/keys.py)."""
    quote_balance: float = 1_000_000.0
    """Each account starts with this much of each quote asset and this much worth of each base asset."""
    limits: Limits = field(default_factory=Limits)
    maker: MakerConfig = field(default_factory=MakerConfig)


class LocalVenue:
    def __init__(self, feed: Any, config: VenueConfig | None = None) -> None:
        self.feed = feed
        self.config = c = config or VenueConfig()
        self.engine = Engine(
            dict(feed.filters), Accounts(), trade_ids=feed.take_trade_id, first_order_id=time.time_ns() // 1000
        )  # order ids continue across restarts
        self.maker = MarketMaker(self.engine, c.maker)
        self.users = UserStreams()
        accounts = {acc for _, acc in c.keys.values()}
        for acc in sorted(accounts):
            start: dict[str, Decimal] = {}
            for sym, f in self.engine.filters.items():
                start.setdefault(f.quote, Decimal(repr(c.quote_balance)))
                px = feed.last_price(sym)
                start.setdefault(f.base, (Decimal(repr(c.quote_balance / px)) // f.step) * f.step)
            self.engine.accounts.open(acc, start)
        self.uids = {acc: 1000 + i for i, acc in enumerate(sorted(accounts))}
        for sym in self.engine.filters:
            self.maker.refresh(sym, feed.last_price(sym), force=True)
        feed.listeners.append(self.on_prices)

    def account_of(self, api_key: str) -> tuple[str, str] | None:
        """(secret, account) of an API key."""
        return self.config.keys.get(api_key)

    def on_prices(self, latest: dict[str, float]) -> None:
        execs: list[Execution] = []
        for sym, px in latest.items():
            execs += self.maker.refresh(sym, px)
        self.dispatch(execs)

    def requote(self, symbol: str) -> None:
        """Bring `symbol`'s quotes to the walk's price now (before an order meets them)."""
        self.dispatch(self.maker.refresh(symbol, self.feed.last_price(symbol), now=True))

    def dispatch(self, execs: list[Execution]) -> None:
        """The engine's trades onto the feed, the executions and balances onto the user streams."""
        filters = self.engine.filters
        for p in self.engine.take_prints():
            f = filters[p.symbol]
            self.feed.emit(p.symbol, p.trade_id, f.price_str(p.price), f.qty_str(p.qty), p.time_ms, p.buyer_maker)
        by_account: dict[str, list[dict[str, Any]]] = {}
        now = time.time_ns() // 1_000_000
        for e in execs:
            acc = e.order.account
            if acc in self.engine.accounts.unlimited:
                continue
            by_account.setdefault(acc, []).append(render.execution_report(e, filters[e.order.symbol], now))
        accounts = self.engine.accounts
        for acc in list(accounts.touched):
            assets = accounts.take_touched(acc)
            if assets:
                by_account.setdefault(acc, []).append(render.account_position(accounts, acc, assets, now))
        for acc, events in by_account.items():
            self.users.send(acc, events)
