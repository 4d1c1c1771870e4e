"""One symbol's order book: price levels of resting orders, best first, each level a FIFO queue
(price-time priority). Prices are ints in ticks, quantities ints in steps (see
`backend.exchange.filters`).

Every change to a level moves the book's update id on by one and marks the level changed, so
the depth diff streams can send the levels changed between two update ids and the REST depth
snapshot carries the update id it was taken at (`lastUpdateId`), as Binance's do.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

BUY, SELL = "BUY", "SELL"


@dataclass(eq=False)
class Resting:
    """An order's place in the book: its id, owner, side, limit price (ticks) and what is left
    of it (steps)."""

    order_id: int
    account: str
    side: str
    price: int
    leaves: int
    ref: object = None  # the engine's order record


@dataclass
class Side:
    """One side of a book: prices kept sorted ascending, a FIFO queue and total per price."""

    descending: bool
    prices: list[int] = field(default_factory=list)
    queues: dict[int, deque[Resting]] = field(default_factory=dict)
    totals: dict[int, int] = field(default_factory=dict)

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.descending else self.prices[0]

    def levels(self) -> Iterator[int]:
        """Prices best first."""
        return reversed(self.prices) if self.descending else iter(self.prices)

    def add(self, r: Resting) -> None:
        q = self.queues.get(r.price)
        if q is None:
            q = self.queues[r.price] = deque()
            bisect.insort(self.prices, r.price)
            self.totals[r.price] = 0
        q.append(r)
        self.totals[r.price] += r.leaves

    def drop_level_if_empty(self, price: int) -> None:
        if not self.queues.get(price):
            self.queues.pop(price, None)
            self.totals.pop(price, None)
            i = bisect.bisect_left(self.prices, price)
            if i < len(self.prices) and self.prices[i] == price:
                del self.prices[i]


class Book:
    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = Side(descending=True)
        self.asks = Side(descending=False)
        self.update_id = 1
        self.changed: dict[tuple[str, int], None] = {}  # (side, price) changed since the last take

    def side(self, side: str) -> Side:
        return self.bids if side == BUY else self.asks

    def opposite(self, side: str) -> Side:
        return self.asks if side == BUY else self.bids

    def _touch(self, side: str, price: int) -> None:
        self.update_id += 1
        self.changed[(side, price)] = None

    def add(self, r: Resting) -> None:
        self.side(r.side).add(r)
        self._touch(r.side, r.price)

    def remove(self, r: Resting) -> None:
        s = self.side(r.side)
        q = s.queues.get(r.price)
        if q is None:
            return
        try:
            q.remove(r)
        except ValueError:
            return
        s.totals[r.price] -= r.leaves
        s.drop_level_if_empty(r.price)
        self._touch(r.side, r.price)

    def reduce(self, r: Resting, qty: int) -> None:
        """`qty` of a resting order traded: it leaves the book when nothing is left."""
        s = self.side(r.side)
        r.leaves -= qty
        s.totals[r.price] -= qty
        if r.leaves <= 0:
            q = s.queues[r.price]
            if q and q[0] is r:
                q.popleft()
            else:
                q.remove(r)
            s.drop_level_if_empty(r.price)
        self._touch(r.side, r.price)

    def crossing(self, side: str, limit: int | None) -> Iterator[tuple[int, deque[Resting]]]:
        """The opposite side's levels an order of `side` at `limit` (None: any price) can take,
        best first."""
        opp = self.opposite(side)
        for price in list(opp.levels()):
            if limit is not None and (price > limit if side == BUY else price < limit):
                return
            q = opp.queues.get(price)
            if q:
                yield price, q

    def best_bid(self) -> tuple[int, int] | None:
        p = self.bids.best()
        return None if p is None else (p, self.bids.totals[p])

    def best_ask(self) -> tuple[int, int] | None:
        p = self.asks.best()
        return None if p is None else (p, self.asks.totals[p])

    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks): up to `limit` (price, total) levels a side, best first."""

        def take(s: Side) -> list[tuple[int, int]]:
            out = []
            for p in s.levels():
                out.append((p, s.totals[p]))
                if len(out) >= limit:
                    break
            return out

        return take(self.bids), take(self.asks)

    def take_changes(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The levels changed since the last call, with their totals now (0: gone)."""
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        for side, price in self.changed:
            s = self.side(side)
            (bids if side == BUY else asks).append((price, s.totals.get(price, 0)))
        self.changed.clear()
        return sorted(bids, reverse=True), sorted(asks)
